//! What the primary reports: [`Event`], and the small value types it carries
//! ([`WorkerId`], [`SlotId`], [`Close`], [`Message`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use cluster_ipc::Credit;

use crate::Error;

/// A worker's id: counts up from 1 in the primary, never reused (a restarted
/// worker gets a new id; its [`SlotId`] stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A place in the cluster that the guard keeps filled: one per `fork()`. A
/// restarted or reloaded worker takes over its predecessor's slot. The same
/// type as `sched-policy`'s (the schedulers key their rows by it), re-exported.
pub use sched_policy::SlotId;

/// How a worker ended: exactly one of an exit code or a signal — the same
/// type as `spawn-core`'s, re-exported.
pub use spawn_core::Close;

/// A typed message from a worker. While it is alive it holds its room in
/// the worker's channel window ([`Settings::message_window`](crate::Settings::message_window)):
/// a primary that does not consume messages makes the worker's `send` wait
/// (backpressure), instead of buffering without bound. Only messages wait:
/// the worker's connection acknowledgements, heartbeats and disconnect are
/// read and handled whatever the program does with its events.
#[derive(Debug)]
pub struct Message<M> {
    worker: WorkerId,
    value: M,
    /// Given back to the worker when the message is dropped or its value
    /// taken.
    _credit: Credit,
}

impl<M> Message<M> {
    pub(crate) fn new(worker: WorkerId, value: M, credit: Credit) -> Self {
        Self {
            worker,
            value,
            _credit: credit,
        }
    }

    /// The sender.
    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// The value.
    pub fn value(&self) -> &M {
        &self.value
    }

    /// The value; gives the message's room back to the worker.
    pub fn into_value(self) -> M {
        self.value
    }
}

/// What happens in a cluster, in order per worker: `Fork`, `Online`,
/// (`Listening`, `Message`, `MessageError`…), `Disconnect`, `Exit`, then for
/// its slot perhaps `RestartScheduled` or `GaveUp`. `Exit` comes after every
/// message the worker sent, however late the events are read. When every
/// slot gave up, `AllSlotsGaveUp` is the last event.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<M> {
    /// A worker process was started.
    Fork {
        /// The new worker.
        worker: WorkerId,
        /// Its slot.
        slot: SlotId,
        /// Its process id.
        pid: u32,
    },
    /// The worker connected its channel and is running.
    Online {
        /// The worker.
        worker: WorkerId,
    },
    /// The worker listens on an address.
    Listening {
        /// The worker.
        worker: WorkerId,
        /// Where it listens.
        addr: SocketAddr,
    },
    /// The worker listens on a Unix-domain socket or a UDP address through
    /// the primary (TCP is [`Event::Listening`]).
    ListeningOn {
        /// The worker.
        worker: WorkerId,
        /// What it listens on.
        endpoint: crate::Endpoint,
    },
    /// The worker sent a message.
    Message(Message<M>),
    /// The worker's channel closed (it disconnected or died).
    Disconnect {
        /// The worker.
        worker: WorkerId,
    },
    /// The worker's process ended and was reaped.
    Exit {
        /// The worker.
        worker: WorkerId,
        /// Its slot.
        slot: SlotId,
        /// Exactly one of a code or a signal.
        exit: Close,
        /// Whether it ended after `disconnect()` (from either side), so it was
        /// an intended end and will not be restarted.
        exited_after_disconnect: bool,
    },
    /// The worker stayed silent past the heartbeat timeout (or did not come
    /// online within the ready timeout) and was killed; the connections
    /// it had not acknowledged went to other workers at once.
    Unresponsive {
        /// The worker.
        worker: WorkerId,
    },
    /// The worker's channel failed (a malformed frame, an OS error, a wrong
    /// handshake): its channel is closed and the worker killed.
    ChannelError {
        /// The worker.
        worker: WorkerId,
        /// What went wrong.
        error: Error,
    },
    /// The worker sent a message that does not decode as `M` (`error` is
    /// [`Error::Ipc`] with `cluster-ipc`'s `MalformedPayload`). That message
    /// is dropped; the channel and the worker go on.
    MessageError {
        /// The worker.
        worker: WorkerId,
        /// What went wrong.
        error: Error,
    },
    /// A replacement for the slot could not be started; it counts as a failed
    /// run (exit code 127) for the slot's backoff and crash-loop limit.
    ForkError {
        /// The slot.
        slot: SlotId,
        /// Why.
        error: Error,
    },
    /// A replacement for the slot starts after `delay`.
    RestartScheduled {
        /// The slot.
        slot: SlotId,
        /// The backoff delay.
        delay: Duration,
    },
    /// A rolling reload started on SIGHUP ([`Settings::reload_on_hangup`]).
    ///
    /// [`Settings::reload_on_hangup`]: crate::Settings::reload_on_hangup
    ReloadStarted,
    /// The rolling reload started on SIGHUP ended: every worker was
    /// replaced (`error` is `None`), or it stopped with `error` (what
    /// [`Cluster::reload`](crate::Cluster::reload) would have returned) and
    /// the old workers left keep running.
    ReloadFinished {
        /// Why it stopped early, if it did.
        error: Option<Error>,
    },
    /// The slot's workers failed to start too often within the window (see
    /// `CrashLoopLimit`); it stays empty.
    GaveUp {
        /// The slot.
        slot: SlotId,
        /// How its last worker ended.
        last_exit: Close,
    },
    /// Every slot gave up: the cluster cannot run. Its listeners are closed
    /// (clients are refused), no worker is started any more, and this is
    /// the last event (`next_event` then returns `None`). A program should
    /// exit with a failure; `Cluster::has_given_up` tells it too.
    AllSlotsGaveUp,
    /// A zero-downtime upgrade handed the service to a new primary, which
    /// is ready: this one now drains its workers and its event stream ends.
    Upgraded {
        /// The new primary's process id.
        pid: u32,
    },
    /// A worker reached a recycling limit ([`Settings::max_requests`],
    /// [`max_memory`](crate::Settings::max_memory),
    /// [`max_age`](crate::Settings::max_age)): a successor is started in
    /// its slot and, once it is ready, this worker drains (the rolling
    /// reload's path, so no request fails).
    ///
    /// [`Settings::max_requests`]: crate::Settings::max_requests
    Recycling {
        /// The worker being replaced.
        worker: WorkerId,
        /// Its slot.
        slot: SlotId,
        /// The limit it reached.
        reason: RecycleReason,
    },
    /// [`Cluster::scale_to`](crate::Cluster::scale_to) removed a slot: its
    /// worker (if any) is told to disconnect and drains; the slot is not
    /// refilled.
    SlotRemoved {
        /// The slot removed.
        slot: SlotId,
        /// Its worker, draining now.
        worker: Option<WorkerId>,
    },
    /// A zero-downtime upgrade failed; this primary keeps serving.
    UpgradeFailed {
        /// Why.
        reason: String,
    },
}

/// Why a worker is recycled ([`Event::Recycling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecycleReason {
    /// It took over `handed` connections, at or past its `limit`
    /// (`max_requests` plus its jitter).
    Requests {
        /// Connections handed to it.
        handed: u64,
        /// Its limit.
        limit: u64,
    },
    /// Its resident memory is past the limit.
    Memory {
        /// Its resident set, bytes.
        rss: u64,
        /// The limit, bytes.
        limit: u64,
    },
    /// It is older than the limit.
    Age {
        /// Its age.
        age: Duration,
        /// The limit.
        limit: Duration,
    },
}

impl RecycleReason {
    /// A short name: `requests`, `memory` or `age`.
    pub fn name(&self) -> &'static str {
        match self {
            RecycleReason::Requests { .. } => "requests",
            RecycleReason::Memory { .. } => "memory",
            RecycleReason::Age { .. } => "age",
        }
    }
}

impl fmt::Display for RecycleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecycleReason::Requests { handed, limit } => {
                write!(f, "{handed} connections handed (limit {limit})")
            }
            RecycleReason::Memory { rss, limit } => {
                write!(f, "resident memory {rss} bytes (limit {limit})")
            }
            RecycleReason::Age { age, limit } => {
                write!(
                    f,
                    "age {} ms (limit {} ms)",
                    age.as_millis(),
                    limit.as_millis()
                )
            }
        }
    }
}
