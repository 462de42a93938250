//! Least-connections: the eligible worker with the fewest open connections.

use crate::{Connection, Eligible, Policy, SlotId, WorkerInfo};

/// Picks the eligible worker with the fewest open connections; among equals,
/// the next one in rotation order, so that ties are shared fairly (with
/// short-lived connections it behaves like [`RoundRobin`](crate::RoundRobin)).
///
/// At most one pass over the workers per pick, stopping early at an idle one.
#[derive(Debug, Clone, Default)]
pub struct LeastConnections {
    next: SlotId,
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

    fn pick(&mut self, workers: Eligible<'_>, _conn: &Connection) -> Option<SlotId> {
        // Walk in rotation order from the cursor and keep the first worker
        // with the fewest open connections: among equals, the next in
        // rotation wins. Nobody beats zero, so stop there (the usual case
        // under light load).
        let mut best: Option<&WorkerInfo> = None;
        for w in workers.rotation_from(self.next) {
            if best.is_none_or(|b| w.open() < b.open()) {
                best = Some(w);
                if w.open() == 0 {
                    break;
                }
            }
        }
        let slot = best?.slot();
        self.next = slot.next();
        Some(slot)
    }
}
