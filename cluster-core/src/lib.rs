//! Node's `cluster`, for Rust: one primary re-executes its own program as N
//! supervised worker processes and talks to them with typed messages.
//!
//! - [`role()`] / [`is_primary()`] / [`is_worker()`]: a worker learns its role
//!   from a variable the primary injects ([`WORKER_ENV`], like Node's
//!   `NODE_UNIQUE_ID`), read once without changing the environment: safe to
//!   call from any thread, inside `#[tokio::main]` too.
//! - [`Cluster`] is the primary, built from [`Settings`] (Node's
//!   `setupPrimary`): [`Cluster::fork`] / [`Cluster::start`] return a
//!   [`WorkerHandle`] (id, pid, `send`, `kill`, `disconnect`, [`WorkerState`]),
//!   [`Cluster::next_event`] yields [`Event`]s (fork, online, listening,
//!   message, disconnect, exit, restart scheduled, gave up), and
//!   [`Cluster::broadcast`], [`Cluster::shutdown`], [`Cluster::reload`] act on
//!   all workers.
//! - [`Worker`] is the worker side: [`Worker::connect`], `send`, `recv`,
//!   `listen`, `disconnect`, `primary_gone`. The library never ends the
//!   process: a message that does not decode is an error for that message,
//!   and a worker whose primary is gone drains, then the program decides.
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
//!   The policy comes from [`Settings::scheduling_policy`] (or the
//!   `CLUSTER_SCHED_POLICY` variable, through [`Settings::from_env`]);
//!   per-worker counters from
//!   [`Cluster::connection_stats`].
//! - The other kinds of listener go through the primary too:
//!   [`Worker::listen_unix`] (a Unix-domain stream socket, handed over like
//!   TCP: [`UnixListener`], [`UnixConnection`]), [`Worker::bind_udp`] (one
//!   UDP socket shared by every worker) and [`Worker::listen_fd`] (a socket
//!   given to [`Cluster::inherit_socket`]: [`FdListener`]);
//!   [`Worker::listen_target`] takes any of them as a [`ListenTarget`]
//!   (a port or a socket path, as the operator chose).
//! - Guarding is built in ([`restart`]): a [`RestartPolicy`], exponential
//!   [`Backoff`] reset after a minimum uptime, a [`CrashLoopLimit`] on failed
//!   starts after which the slot is given up ([`Event::AllSlotsGaveUp`] when
//!   every slot did), a heartbeat timeout (on by default), a graceful
//!   shutdown with a deadline, and a rolling reload.
//! - Hung and slow workers are bounded: a hand-off window and deadline per
//!   worker ([`Settings::handoff_window`], [`Settings::handoff_deadline`]);
//!   the primary stops accepting while no worker has room, so its
//!   descriptors stay bounded (`docs/cluster.md`, "Bounds and rules").
//! - No orphans: every worker gets the parent-death signal SIGKILL (Linux),
//!   and drains when the primary's channel closes.
//! - The primary never blocks on output: piped worker output is forwarded
//!   through a bounded queue to a writer thread per stream ([`output`]), so
//!   a stalled reader of the primary's stdout pushes back to the chatty
//!   workers, never to supervision. [`output::Output`] gives the primary's
//!   own lines the same path (use it instead of `println!` in an event loop).
//! - HTTP, behind cargo features off by default: `hyper` (`hyper::serve`, a
//!   hyper service over a worker's connections) and `axum` (`axum::serve`,
//!   an app; the worker's listeners are `axum::serve::Listener`s too, and
//!   `axum` has the drain's layer). One serve for every listener kind
//!   ([`Accept`], implemented by the one [`Listener`] of every stream kind
//!   and by [`FdListener`]), HTTP/1.1 and HTTP/2; both
//!   drain without failing a request, keep-alive clients included
//!   ([`DrainSignal`]; the rules and their reasons are in
//!   `docs/cluster.md`). [`Settings::reload_on_hangup`] reloads on SIGHUP.
//! - Operations, each a setting off unless asked for (see
//!   `docs/operations.md`): [`Settings::from_env`] reads the operator's
//!   variables ([`env_vars`]; [`Cluster::new`] reads none); every [`Event`]
//!   prints itself as one line, and [`Cluster::run`] prints them through
//!   the default [`EventLog`]; [`Cluster::handle`] acts on a running
//!   cluster beside `run`; [`Settings::metrics`] serves Prometheus'
//!   format (feature `prometheus`), [`Settings::logs`] the `tracing`
//!   records (feature `logs`), [`Settings::scale_on_signals`] scales on
//!   SIGTTIN/SIGTTOU, and [`Settings::max_requests`] and its siblings
//!   recycle workers.
//! - [`main`] runs each role on its runtime, so a program need not ask for
//!   its role and build runtimes by hand.
//! - Runs as a service (see `docs/deploy.md`): the primary adopts sockets
//!   passed by systemd's socket activation (`LISTEN_FDS`; one no worker
//!   listens on is an error, never a silent `READY=1`), reports to its
//!   service manager (`NOTIFY_SOCKET`: ready, status, reloading, stopping,
//!   watchdog, main pid) and a [pid file](Settings::pid_file), and upgrades
//!   itself with no downtime ([`Cluster::upgrade`], or SIGUSR2 with
//!   [`Settings::upgrade_on_signal`]): the program now on disk takes over
//!   the listening sockets, and this primary drains once it is ready.
//!
//! ```no_run
//! use cluster_core::{Cluster, Event, Settings, Worker};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     if cluster_core::is_worker() {
//!         // The same program, re-executed by the primary.
//!         let mut w = Worker::<String>::connect().await?;
//!         while let Some(msg) = w.recv().await? {
//!             w.send(&format!("worker {} got {msg}", w.id())).await?;
//!         }
//!         return Ok(()); // asked to disconnect
//!     }
//!     let mut settings = Settings::new();
//!     settings.n_workers(2);
//!     let mut cluster = Cluster::<String>::new(settings)?;
//!     cluster.start()?;
//!     let mut replies = 0;
//!     while let Some(event) = cluster.next_event().await {
//!         match event {
//!             Event::Online { worker, .. } => {
//!                 cluster.worker(worker).unwrap().send(&"hello".into()).await?;
//!             }
//!             Event::Message(m) => {
//!                 println!("{}", m.value());
//!                 replies += 1;
//!                 if replies == 2 {
//!                     cluster.shutdown().await?;
//!                 }
//!             }
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Platforms
//!
//! Linux only (a `compile_error!` elsewhere): workers are guarded by the
//! parent-death signal (`PR_SET_PDEATHSIG`), and the channel is
//! `cluster-ipc`'s, which is Linux only too.
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "cluster-core supports Linux only (the parent-death signal, and cluster-ipc's Linux socket flags)"
);

mod accept;
#[cfg(feature = "axum")]
pub mod axum;
mod clock;
mod endpoint;
mod entry;
mod error;
mod event;
#[cfg(feature = "hyper")]
pub mod hyper;
mod launch;
#[cfg(feature = "logs")]
pub mod logs;
pub mod output;
mod primary;
pub mod restart;
mod role;
pub mod sd_notify;
mod settings;
mod state;
pub mod stats;
mod trace;
mod worker;

pub use accept::{Accept, FdConnection};
pub use endpoint::{Endpoint, ListenTarget, UnixAddr};
pub use entry::main;
pub use error::ListenErrorKind;
pub use error::{Error, Result};
pub use event::{Close, Event, EventLog, Message, RecycleReason, SlotId, WorkerId};
pub use primary::{
    Cluster, ClusterHandle, ConnectionStats, InheritedSocket, WorkerHandle, inherited_sockets,
};
pub use restart::{Backoff, CrashLoopLimit, RestartPolicy};
pub use role::{Role, WORKER_ENV, is_primary, is_worker, role};
pub use sched_policy::{self, Policy, PolicyKind};
pub use settings::{
    DEFAULT_HANDOFF_DEADLINE, DEFAULT_HANDOFF_WINDOW, Heartbeat, LogFormat, Recycle, Settings,
    WorkerOutput, WorkerStdio, env_vars,
};
pub use spawn_core::Signal;
pub use state::WorkerState;
pub use worker::{
    Connection, DrainSignal, FdListener, ListenStream, Listener, UnixConnection, UnixListener,
    Worker,
};

/// A message type of a cluster: serialisable both ways and sendable between
/// tasks. Implemented for every such type.
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Payload for T {}

// The Rust snippets of the README, docs/cluster.md and docs/operations.md are compiled (and run,
// unless marked `no_run`) as doc tests, so the documentation cannot drift
// from the API; `cargo xtask tidy` checks that every such file is included.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/cluster.md")]
struct ClusterDocDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/operations.md")]
struct OperationsDocDoctests;
