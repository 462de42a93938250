//! Pure connection scheduling for a process cluster: which worker gets the
//! next connection.
//!
//! This crate does no IO, starts no thread and reads no clock: it holds the
//! cluster's view of its workers and makes decisions, so every decision is
//! deterministic and testable. `cluster-core` does the accepting and the
//! hand-off on top of it.
//!
//! - [`WorkerTable`]: the workers by [`SlotId`] (a stable place, inherited by a
//!   replacement process), with their [`Availability`], counters (open,
//!   handed, pending: handed and not yet acknowledged), optional connection
//!   cap and hand-off window, and whether a hand-off to them expired
//!   (stalled). The cluster keeps it up to date.
//! - [`Policy`]: the pluggable choice, `pick(Eligible, &Connection) ->
//!   Option<SlotId>`, over the [`Eligible`] view (ready, below cap, with room
//!   in the window, not stalled, not excluded). Built-ins: [`RoundRobin`], [`LeastConnections`],
//!   [`PowerOfTwoChoices`], [`Sticky`] (rendezvous hashing by client IP).
//! - [`SchedulingPolicy`]: the mode, `None` (share the listener, the kernel
//!   picks) or `Distributed(policy)`, parsed from the names of
//!   [`PolicyKind`] (`rr`, `none`, `sticky`, `least-conn`, `p2c`), the values
//!   of `CLUSTER_SCHED_POLICY`.
//! - [`Scheduler`]: a table and a policy kept in step, with re-routing of a
//!   connection whose hand-off failed.
//!
//! Picking never allocates, and never returns a draining, not-ready, capped,
//! full (at its window), stalled or excluded worker; `None` means no worker can take the connection.
//!
//! ```
//! use std::net::SocketAddr;
//! use sched_policy::{Connection, ListenerId, SchedulingPolicy, SlotId, Availability, WorkerTable};
//!
//! let mut mode: SchedulingPolicy = "sticky".parse()?;
//! let mut table = WorkerTable::new();
//! for n in 0..4 {
//!     table.add(SlotId::new(n))?;
//!     table.set_state(SlotId::new(n), Availability::Ready)?;
//! }
//! let policy = mode.policy_mut().expect("sticky distributes connections");
//! let client: SocketAddr = "127.0.0.2:40000".parse()?;
//! let first = policy.pick(table.eligible(), &Connection::new(client, ListenerId(0)));
//! // Another connection from the same address, another port: same worker.
//! let again: SocketAddr = "127.0.0.2:40001".parse()?;
//! assert_eq!(policy.pick(table.eligible(), &Connection::new(again, ListenerId(0))), first);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platforms
//!
//! Any: pure decisions, no OS code.
#![deny(missing_docs)]

mod error;
mod least_conn;
mod mode;
mod p2c;
mod policy;
mod round_robin;
mod scheduler;
mod sticky;
mod table;

pub use error::Error;
pub use least_conn::LeastConnections;
pub use mode::{DEFAULT_SEED, ENV_VAR, PolicyKind, SchedulingPolicy};
pub use p2c::PowerOfTwoChoices;
pub use policy::{Connection, ListenerId, Policy};
pub use round_robin::RoundRobin;
pub use scheduler::Scheduler;
pub use sticky::{Sticky, rendezvous_score};
pub use table::{Availability, Eligible, SlotId, WorkerInfo, WorkerTable};

// The Rust snippets of the README and of docs/scheduling.md are compiled and
// run as doc tests, so the documentation cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/scheduling.md")]
struct SchedulingDocDoctests;
