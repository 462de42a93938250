//! Round-robin: strict rotation over the eligible workers.

use crate::{Connection, Eligible, Policy, SlotId};

/// Hands connections to the eligible workers in turn, in slot order.
///
/// The rotation is kept as a slot cursor, not an index, so it survives workers
/// being added, removed or skipped: each pick takes the first eligible slot at
/// or after the cursor (wrapping) and moves the cursor past it. While the set
/// of eligible workers does not change, any run of picks gives each worker
/// the same count, give or take one. This is Node's `SCHED_RR`.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: SlotId,
}

impl RoundRobin {
    /// A rotation that starts at slot 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn pick(&mut self, workers: Eligible<'_>, _conn: &Connection) -> Option<SlotId> {
        let slot = workers.rotation_from(self.next).next()?.slot();
        self.next = slot.next();
        Some(slot)
    }
}
