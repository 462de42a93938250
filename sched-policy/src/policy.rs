//! The [`Policy`] trait and the [`Connection`] it decides about.

use std::fmt;
use std::net::SocketAddr;

use crate::{Eligible, SlotId};

/// Which of the primary's listening sockets accepted a connection.
///
/// Chosen by the cluster (one per distinct listen address); policies may use
/// it to keep separate state per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ListenerId(pub u32);

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a policy knows about a new connection.
///
/// Non-exhaustive so that more may be told later (the local address, say):
/// build it with [`Connection::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Connection {
    /// The client's address, as `accept` returned it.
    pub peer: SocketAddr,
    /// The listener that accepted it.
    pub listener: ListenerId,
}

impl Connection {
    /// A connection from `peer` on `listener`.
    pub fn new(peer: SocketAddr, listener: ListenerId) -> Self {
        Self { peer, listener }
    }
}

/// Chooses the worker of each new connection.
///
/// The cluster calls [`pick`](Policy::pick) once per accepted connection with
/// the [`Eligible`] workers of its [`WorkerTable`](crate::WorkerTable) (ready,
/// below their cap, not excluded) and hands the connection to the returned
/// slot. `None` means that no worker can take it (none eligible); the cluster
/// then closes the connection. If the hand-off fails (the worker died or
/// refused before acknowledging), the cluster calls `pick` again with that
/// slot excluded ([`WorkerTable::eligible_except`](crate::WorkerTable::eligible_except)).
///
/// A policy must return a slot of the view it was given, or `None` when the
/// view is empty; it must not allocate or block (it runs once per connection
/// on the primary's accept path). The counters live in the table, so most
/// policies need no hook; the hooks are for policies that keep their own
/// state. They default to doing nothing.
///
/// Implement it to plug in your own policy:
///
/// ```
/// use sched_policy::{Connection, Eligible, Policy, SlotId};
///
/// /// Always the lowest eligible slot: fills workers one after the other.
/// #[derive(Debug)]
/// struct Lowest;
///
/// impl Policy for Lowest {
///     fn name(&self) -> &'static str {
///         "lowest"
///     }
///     fn pick(&mut self, workers: Eligible<'_>, _conn: &Connection) -> Option<SlotId> {
///         workers.iter().next().map(|w| w.slot())
///     }
/// }
/// ```
pub trait Policy: fmt::Debug + Send {
    /// A short name for logs and errors, e.g. `"rr"`.
    fn name(&self) -> &'static str;

    /// The slot of the worker that gets `conn`, or `None` if `workers` is empty.
    fn pick(&mut self, workers: Eligible<'_>, conn: &Connection) -> Option<SlotId>;

    /// A worker was added in `slot` (started, or restarted after an exit).
    fn worker_added(&mut self, slot: SlotId) {
        let _ = slot;
    }

    /// The worker in `slot` was removed (it exited).
    fn worker_removed(&mut self, slot: SlotId) {
        let _ = slot;
    }

    /// `conn` was handed to the worker in `slot`.
    fn connection_handed(&mut self, slot: SlotId, conn: &Connection) {
        let _ = (slot, conn);
    }

    /// A connection of the worker in `slot` closed.
    fn connection_closed(&mut self, slot: SlotId) {
        let _ = slot;
    }
}

impl<P: Policy + ?Sized> Policy for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn pick(&mut self, workers: Eligible<'_>, conn: &Connection) -> Option<SlotId> {
        (**self).pick(workers, conn)
    }
    fn worker_added(&mut self, slot: SlotId) {
        (**self).worker_added(slot);
    }
    fn worker_removed(&mut self, slot: SlotId) {
        (**self).worker_removed(slot);
    }
    fn connection_handed(&mut self, slot: SlotId, conn: &Connection) {
        (**self).connection_handed(slot, conn);
    }
    fn connection_closed(&mut self, slot: SlotId) {
        (**self).connection_closed(slot);
    }
}
