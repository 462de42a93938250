//! Node's `cluster`, for Rust: one primary re-executes its own program as N
//! supervised worker processes and talks to them with typed messages.
//!
//! - [`role()`] / [`is_primary()`] / [`is_worker()`]: a worker learns its role
//!   from a variable the primary injects ([`WORKER_ENV`], like Node's
//!   `NODE_UNIQUE_ID`), read once and removed from the environment.
//! - [`Cluster`] is the primary, built from [`Settings`] (Node's
//!   `setupPrimary`): [`Cluster::fork`] / [`Cluster::start`] return a
//!   [`WorkerHandle`] (id, pid, `send`, `kill`, `disconnect`, [`WorkerState`]),
//!   [`Cluster::next_event`] yields [`Event`]s (fork, online, listening,
//!   message, disconnect, exit, restart scheduled, gave up), and
//!   [`Cluster::broadcast`], [`Cluster::shutdown`], [`Cluster::reload`] act on
//!   all workers.
//! - [`Worker`] is the worker side: [`Worker::connect`], `send`, `recv`,
//!   `listen`, `disconnect`.
//! - Listening goes through the primary, like Node's `server.listen` in a
//!   worker: [`Worker::listen`] gives a [`Listener`] whose `accept` yields
//!   [`Connection`]s (a `tokio::net::TcpStream` that tells the primary when
//!   it closes; hyper's `TokioIo` takes it as is). The primary binds each
//!   distinct address once (port 0 once, shared), and either accepts and
//!   hands each connection to the worker its scheduling policy picks
//!   (round-robin by default, sticky, least-connections, power of two
//!   choices, or your own [`Policy`], from [`sched_policy`]), re-routing a
//!   connection whose worker dies or refuses before acknowledging it; or,
//!   under [`PolicyKind::None`], passes the listening socket to each worker.
//!   The policy comes from [`Settings::scheduling_policy`] or the
//!   `CLUSTER_SCHED_POLICY` variable; per-worker counters from
//!   [`Cluster::connection_stats`].
//! - Guarding is built in ([`restart`]): a [`RestartPolicy`], exponential
//!   [`Backoff`] reset after a minimum uptime, a [`CrashLoopLimit`] after which
//!   the slot is given up, an optional heartbeat timeout, a graceful shutdown
//!   with a deadline, and a rolling reload.
//! - No orphans: every worker gets the parent-death signal SIGKILL (Linux)
//!   and exits by itself when the primary's channel closes.
//! - Runs as a service (see `docs/deploy.md`): the primary adopts sockets
//!   passed by systemd's socket activation (`LISTEN_FDS`), reports to its
//!   service manager (`NOTIFY_SOCKET`: ready, status, reloading, stopping,
//!   watchdog, main pid) and a [pid file](Settings::pid_file), and upgrades
//!   itself with no downtime ([`Cluster::upgrade`], or SIGUSR2 with
//!   [`Settings::upgrade_on_signal`]): the program now on disk takes over
//!   the listening sockets, and this primary drains once it is ready.
//!
//! ```no_run
//! use cluster_core::{Cluster, Event, Settings, Worker};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Decide the role first, before any thread exists.
//!     let worker = cluster_core::is_worker();
//!     let rt = tokio::runtime::Runtime::new()?;
//!     rt.block_on(async {
//!         if worker {
//!             // The same program, re-executed by the primary.
//!             let mut w = Worker::<String>::connect().await?;
//!             while let Some(msg) = w.recv().await {
//!                 w.send(&format!("worker {} got {msg}", w.id())).await?;
//!             }
//!             return Ok::<_, cluster_core::Error>(()); // asked to disconnect
//!         }
//!         let mut settings = Settings::new();
//!         settings.n_workers(2);
//!         let mut cluster = Cluster::<String>::new(settings)?;
//!         cluster.start()?;
//!         let mut replies = 0;
//!         while let Some(event) = cluster.next_event().await {
//!             match event {
//!                 Event::Online { worker } => {
//!                     cluster.worker(worker).unwrap().send(&"hello".into()).await?;
//!                 }
//!                 Event::Message(m) => {
//!                     println!("{}", m.value());
//!                     replies += 1;
//!                     if replies == 2 {
//!                         cluster.shutdown().await?;
//!                     }
//!                 }
//!                 _ => {}
//!             }
//!         }
//!         Ok(())
//!     })?;
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]

mod error;
mod event;
mod launch;
mod primary;
pub mod restart;
mod role;
mod settings;
mod state;
mod worker;

pub use error::ListenErrorKind;
pub use error::{Error, Result};
pub use event::{Event, Exit, Message, SlotId, WorkerId};
pub use primary::{Cluster, ConnectionStats, WorkerHandle};
pub use restart::{Backoff, CrashLoopLimit, RestartPolicy};
pub use role::{Role, WORKER_ENV, is_primary, is_worker, role};
pub use sched_policy::{self, Policy, PolicyKind};
pub use settings::{Heartbeat, Settings, WorkerStdio};
pub use spawn_core::Signal;
pub use state::WorkerState;
pub use worker::{Connection, DrainSignal, Listener, Worker};

/// A message type of a cluster: serialisable both ways and sendable between
/// tasks. Implemented for every such type.
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Payload for T {}
