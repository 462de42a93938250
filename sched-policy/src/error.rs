//! The error type of the crate: a bad policy name, or a table update that
//! names a slot in the wrong state.

use crate::SlotId;

/// What can go wrong when naming a policy or updating a [`WorkerTable`](crate::WorkerTable).
///
/// Every variant carries its context as fields; none of them is ever produced
/// by [`Policy::pick`](crate::Policy::pick), which answers `None` instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The string does not name a scheduling policy.
    #[error(
        "unknown scheduling policy {input:?} (expected one of rr, none, sticky, least-conn, p2c)"
    )]
    UnknownPolicy {
        /// The string as given.
        input: String,
    },
    /// A worker was added to a slot that already holds one.
    #[error("slot {slot} already holds a worker")]
    SlotTaken {
        /// The occupied slot.
        slot: SlotId,
    },
    /// An update named a slot that holds no worker.
    #[error("no worker in slot {slot}")]
    UnknownSlot {
        /// The empty slot.
        slot: SlotId,
    },
    /// A connection was reported closed on a worker with none open.
    #[error("worker in slot {slot} has no open connection to close")]
    NoOpenConnection {
        /// The worker's slot.
        slot: SlotId,
    },
    /// A hand-off was reported answered (or failed) on a worker with none
    /// pending.
    #[error("worker in slot {slot} has no pending hand-off")]
    NoPendingConnection {
        /// The worker's slot.
        slot: SlotId,
    },
}
