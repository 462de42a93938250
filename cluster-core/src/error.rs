//! The crate's error type, [`Error`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use cluster_ipc::ListenErrorKind;

use crate::event::{SlotId, WorkerId};

/// Everything that can go wrong in a primary or a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `setup()` was called after the first fork.
    #[error("settings can no longer change after the first fork")]
    SettingsFrozen,
    /// The default program, the current executable, could not be found.
    #[error("could not find the current executable")]
    CurrentExe(#[source] io::Error),
    /// The channel socketpair could not be created.
    #[error("could not create the channel of worker {worker}")]
    Channel {
        /// The worker that was being started.
        worker: WorkerId,
        /// What cluster-ipc reported.
        #[source]
        source: cluster_ipc::Error,
    },
    /// The worker process could not be started.
    #[error("could not start worker {worker} ({program})")]
    Spawn {
        /// The worker that was being started.
        worker: WorkerId,
        /// The program.
        program: PathBuf,
        /// What spawn-core reported (it names the OS error).
        #[source]
        source: spawn_core::Error,
    },
    /// The worker is dead or its channel is closed.
    #[error("worker {worker} is gone")]
    WorkerGone {
        /// The worker.
        worker: WorkerId,
    },
    /// The worker was disconnected (by `WorkerHandle::disconnect`, the
    /// worker's own `disconnect`, a shutdown or a reload): its channel takes
    /// no more messages (Node's `ERR_IPC_CHANNEL_CLOSED`).
    #[error("the channel of worker {worker} is closed (disconnected)")]
    ChannelClosed {
        /// The worker.
        worker: WorkerId,
    },
    /// The primary's channel is closed (seen from a worker).
    #[error("the channel to the primary is closed")]
    PrimaryGone,
    /// The channel failed (a message that cannot be encoded or decoded, a
    /// malformed frame, an OS error); `cluster-ipc` says which.
    #[error("channel error")]
    Ipc(#[source] cluster_ipc::Error),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("could not install the signal handlers")]
    Signals(#[source] io::Error),
    /// The peer at the other end of a worker's channel announced another
    /// worker id, or another launch token, in its handshake.
    #[error("the channel of worker {worker} answered with another worker id or token")]
    WrongWorker {
        /// The worker whose channel it is.
        worker: WorkerId,
    },
    /// This process was not started as a worker by a primary.
    #[error("this process is not a cluster worker")]
    NotAWorker,
    /// The worker's channel was already taken by an earlier `connect()`.
    #[error("the worker channel was already connected")]
    AlreadyConnected,
    /// The variable the primary injects is malformed.
    #[error("malformed cluster environment variable {name}")]
    BadEnvironment {
        /// The variable's name.
        name: &'static str,
    },
    /// The primary's supervisor has stopped (after shutdown).
    #[error("the cluster has stopped")]
    Stopped,
    /// Every slot number (`u32`) was used: no new slot can be opened.
    #[error("no slot number is left for a new worker")]
    TooManySlots,
    /// A rolling reload stopped: the replacement of `slot` did not become
    /// ready. The old workers were kept.
    #[error("reload stopped at slot {slot}: replacement worker {replacement} did not become ready")]
    ReloadFailed {
        /// The slot being replaced.
        slot: SlotId,
        /// The replacement that failed (it was killed).
        replacement: WorkerId,
    },
    /// The primary could not listen on the address a worker asked for (seen
    /// from the worker). `source().kind()` is the OS error's kind
    /// (`AddrInUse`, `AddrNotAvailable`, `PermissionDenied`, …).
    #[error("could not listen on {addr} ({kind:?})")]
    Listen {
        /// The address as requested.
        addr: SocketAddr,
        /// The class of failure, as the primary reported it.
        kind: ListenErrorKind,
        /// The OS error the primary's bind reported.
        #[source]
        source: io::Error,
    },
    /// The primary could not listen on the Unix-domain socket, UDP address
    /// or descriptor a worker asked for (seen from the worker). `kind` tells
    /// the typed cases: `AddrInUse` (a live server owns the path),
    /// `NotFound` (a directory of the path does not exist),
    /// `PermissionDenied`, `PathTooLong` (longer than `sun_path`),
    /// `UnknownDescriptor` (the primary holds no socket under that number).
    #[error("could not listen on {target} ({kind:?})")]
    ListenOn {
        /// What was asked for.
        target: crate::endpoint::ListenTarget,
        /// The class of failure, as the primary reported it.
        kind: ListenErrorKind,
        /// The OS error, or a description when the OS reported none.
        #[source]
        source: io::Error,
    },
    /// A zero-downtime upgrade of the primary failed; the old primary keeps
    /// serving. `reason` says why (the new primary exited, closed its
    /// channel, was not ready in time, or could not be started).
    #[error("upgrade failed: {reason}")]
    Upgrade {
        /// Why, in words (the new primary's pid and exit when known).
        reason: String,
    },
    /// An upgrade is already running in this process.
    #[error("an upgrade is already in progress")]
    UpgradeInProgress,
    /// The scheduling policy named in an environment variable is unknown.
    #[error("unknown scheduling policy in {name}")]
    SchedulingPolicy {
        /// The variable (`CLUSTER_SCHED_POLICY`).
        name: &'static str,
        /// What sched-policy reported (it names the value).
        #[source]
        source: sched_policy::Error,
    },
    /// A rolling reload failed for a reason reported in full elsewhere (to
    /// the caller of [`Cluster::reload`](crate::Cluster::reload)); the
    /// reload's [`Event::ReloadFinished`](crate::Event::ReloadFinished)
    /// carries it in words.
    #[error("reload failed: {reason}")]
    Reload {
        /// Why, in words (the error and its causes).
        reason: String,
    },
    /// An operator's variable ([`Settings::from_env`]) holds something it
    /// cannot mean.
    ///
    /// [`Settings::from_env`]: crate::Settings::from_env
    #[error("{name}={value:?}: expected {expected}")]
    EnvVar {
        /// The variable.
        name: &'static str,
        /// What it holds.
        value: String,
        /// What it may hold.
        expected: &'static str,
    },
    /// A setting needs a cargo feature of cluster-core this build lacks
    /// ([`Settings::metrics`]: `prometheus`; [`Settings::logs`]: `logs`).
    ///
    /// [`Settings::metrics`]: crate::Settings::metrics
    /// [`Settings::logs`]: crate::Settings::logs
    #[error("the {setting} setting needs cluster-core's `{feature}` feature")]
    FeatureDisabled {
        /// The setting.
        setting: &'static str,
        /// The feature.
        feature: &'static str,
    },
    /// The metrics endpoint ([`Settings::metrics`]) could not listen.
    ///
    /// [`Settings::metrics`]: crate::Settings::metrics
    #[error("could not serve the metrics on {addr}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The filter of [`Settings::logs`] does not parse.
    ///
    /// [`Settings::logs`]: crate::Settings::logs
    #[error("not a tracing filter: {filter:?}")]
    LogFilter {
        /// The filter.
        filter: String,
    },
    /// Every slot gave up (the crash-loop limit): no worker could be kept
    /// running ([`Event::AllSlotsGaveUp`](crate::Event::AllSlotsGaveUp)).
    #[error("every slot gave up: no worker could be kept running")]
    AllSlotsGaveUp,
    /// A listening socket this primary holds (inherited from socket
    /// activation or an upgrade, or given to
    /// [`Cluster::inherit_socket`](crate::Cluster::inherit_socket)) is not
    /// listened on by any worker
    /// ([`Event::UnusedSocket`](crate::Event::UnusedSocket)).
    #[error("inherited socket {addr} is not listened on by any worker")]
    UnusedSocket {
        /// Its local address (`127.0.0.1:3402`, `unix:<path>`), or `a socket`.
        addr: String,
    },
    /// The address given to `Worker::listen` could not be resolved, or
    /// resolved to nothing.
    #[error("could not resolve the listening address")]
    Resolve(#[source] io::Error),
}

impl Error {
    /// This error again, for a second report (an event beside a returned
    /// error): the same variant where it holds only plain data, otherwise
    /// [`Error::Reload`] with the error and its causes in words.
    pub(crate) fn for_report(&self) -> Error {
        match self {
            Error::ReloadFailed { slot, replacement } => Error::ReloadFailed {
                slot: *slot,
                replacement: *replacement,
            },
            Error::Stopped => Error::Stopped,
            Error::TooManySlots => Error::TooManySlots,
            Error::WorkerGone { worker } => Error::WorkerGone { worker: *worker },
            other => {
                let mut reason = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(cause) = source {
                    reason.push_str(": ");
                    reason.push_str(&cause.to_string());
                    source = cause.source();
                }
                Error::Reload { reason }
            }
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
