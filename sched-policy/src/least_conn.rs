//! Least-connections: the eligible worker with the fewest open connections.

use crate::{Connection, Eligible, Policy, Slot, WorkerInfo};

/// Picks the eligible worker with the fewest open connections; among equals,
/// the next one in rotation order, so that ties are shared fairly (with
/// short-lived connections it behaves like [`RoundRobin`](crate::RoundRobin)).
///
/// One pass over the workers per pick.
#[derive(Debug, Clone, Default)]
pub struct LeastConnections {
    next: Slot,
}

impl LeastConnections {
    /// A policy whose tie-breaking rotation starts at slot 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for LeastConnections {
    fn name(&self) -> &'static str {
        "least-conn"
    }

    fn pick(&mut self, workers: Eligible<'_>, _conn: &Connection) -> Option<Slot> {
        let next = self.next;
        // Fewest open first; among equals, slots at or after the cursor
        // before the wrapped-around ones, then by slot. Packed into one u64
        // (open: 31 bits kept, wrapped: 1 bit, slot: 32 bits) so the scan is
        // one compare per worker.
        let key = |w: &WorkerInfo| {
            let open = u64::from(w.open().min(u32::MAX >> 1));
            let wrapped = u64::from(w.slot() < next);
            (open << 33) | (wrapped << 32) | u64::from(w.slot().get())
        };
        let slot = workers.iter().min_by_key(|w| key(w))?.slot();
        self.next = slot.next();
        Some(slot)
    }
}
