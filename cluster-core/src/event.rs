//! What the primary reports: [`Event`], and the small value types it carries
//! ([`WorkerId`], [`SlotId`], [`Close`], [`Message`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use cluster_ipc::Credit;

use crate::Error;

mod log;
#[cfg(test)]
mod tests;

pub use log::EventLog;

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
        /// Its process id.
        pid: u32,
    },
    /// The worker listens on an address.
    Listening {
        /// The worker.
        worker: WorkerId,
        /// Its process id.
        pid: u32,
        /// Where it listens.
        addr: SocketAddr,
    },
    /// The worker listens on a Unix-domain socket or a UDP address through
    /// the primary (TCP is [`Event::Listening`]).
    ListeningOn {
        /// The worker.
        worker: WorkerId,
        /// Its process id.
        pid: u32,
        /// What it listens on.
        endpoint: crate::Endpoint,
    },
    /// The worker sent a message.
    Message(Message<M>),
    /// The worker's channel closed (it disconnected or died).
    Disconnect {
        /// The worker.
        worker: WorkerId,
        /// Its process id.
        pid: u32,
    },
    /// The worker's process ended and was reaped.
    Exit {
        /// The worker.
        worker: WorkerId,
        /// Its process id (reaped: it may be reused from now on).
        pid: u32,
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
        /// Its process id.
        pid: u32,
    },
    /// The worker's channel failed (a malformed frame, an OS error, a wrong
    /// handshake): its channel is closed and the worker killed.
    ChannelError {
        /// The worker.
        worker: WorkerId,
        /// Its process id.
        pid: u32,
        /// What went wrong.
        error: Error,
    },
    /// The worker sent a message that does not decode as `M` (`error` is
    /// [`Error::Ipc`] with `cluster-ipc`'s `MalformedPayload`). That message
    /// is dropped; the channel and the worker go on.
    MessageError {
        /// The worker.
        worker: WorkerId,
        /// Its process id.
        pid: u32,
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
        /// Its process id.
        pid: u32,
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
    /// Every slot's worker is ready, but a listening socket this primary
    /// holds (inherited from systemd's socket activation or an upgrade, or
    /// given to [`Cluster::inherit_socket`](crate::Cluster::inherit_socket))
    /// is not listened on by any worker: its clients would wait for ever. The
    /// primary does not report itself ready (`READY=1`, the pid file, an
    /// upgrade's ready message) while one is unused, and
    /// [`Cluster::run`](crate::Cluster::run) ends with
    /// [`Error::UnusedSocket`](crate::Error::UnusedSocket).
    UnusedSocket {
        /// The socket's local address (`127.0.0.1:3402`, `unix:<path>`),
        /// or `a socket` when the OS tells none.
        addr: String,
        /// Its name in `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`).
        name: Option<String>,
    },
}

impl<M> Event<M> {
    /// The worker the event is about, if one.
    pub fn worker(&self) -> Option<WorkerId> {
        match self {
            Event::Fork { worker, .. }
            | Event::Online { worker, .. }
            | Event::Listening { worker, .. }
            | Event::ListeningOn { worker, .. }
            | Event::Disconnect { worker, .. }
            | Event::Exit { worker, .. }
            | Event::Unresponsive { worker, .. }
            | Event::ChannelError { worker, .. }
            | Event::MessageError { worker, .. }
            | Event::Recycling { worker, .. } => Some(*worker),
            Event::Message(m) => Some(m.worker()),
            Event::SlotRemoved { worker, .. } => *worker,
            _ => None,
        }
    }

    /// The process id of the worker the event is about, if it names one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Event::Fork { pid, .. }
            | Event::Online { pid, .. }
            | Event::Listening { pid, .. }
            | Event::ListeningOn { pid, .. }
            | Event::Disconnect { pid, .. }
            | Event::Exit { pid, .. }
            | Event::Unresponsive { pid, .. }
            | Event::ChannelError { pid, .. }
            | Event::MessageError { pid, .. }
            | Event::Recycling { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// One line for the operator, naming the worker with its pid:
/// `worker 3 (pid 4242) listening on 127.0.0.1:3000`, `worker 3 (pid 4242)
/// killed by signal 9`, `slot 1: restart in 100 ms`, `reload done`. An error
/// is written with its causes (`: `-separated). The alternate form (`{:#}`)
/// writes a TCP listening address as an `http://` URL (what
/// [`EventLog::http`](crate::EventLog::http) prints).
impl<M> fmt::Display for Event<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = |f: &mut fmt::Formatter<'_>, worker: &WorkerId, pid: &u32| {
            write!(f, "worker {worker} (pid {pid})")
        };
        match self {
            Event::Fork { worker, slot, pid } => {
                who(f, worker, pid)?;
                write!(f, " forked in slot {slot}")
            }
            Event::Online { worker, pid } => {
                who(f, worker, pid)?;
                f.write_str(" online")
            }
            Event::Listening { worker, pid, addr } => {
                who(f, worker, pid)?;
                if f.alternate() {
                    write!(f, " listening on http://{addr}/")
                } else {
                    write!(f, " listening on {addr}")
                }
            }
            Event::ListeningOn {
                worker,
                pid,
                endpoint,
            } => {
                who(f, worker, pid)?;
                write!(f, " listening on {endpoint}")
            }
            Event::Message(m) => write!(f, "worker {} sent a message", m.worker()),
            Event::Disconnect { worker, pid } => {
                who(f, worker, pid)?;
                f.write_str(" disconnected")
            }
            Event::Exit {
                worker,
                pid,
                exit,
                exited_after_disconnect,
                ..
            } => {
                who(f, worker, pid)?;
                match exit {
                    Close::Exited(code) => write!(f, " exited with code {code}")?,
                    Close::Signaled(signo) => write!(f, " killed by signal {signo}")?,
                }
                if *exited_after_disconnect {
                    f.write_str(" after disconnecting")?;
                }
                Ok(())
            }
            Event::Unresponsive { worker, pid } => {
                who(f, worker, pid)?;
                f.write_str(" unresponsive: killed")
            }
            Event::ChannelError { worker, pid, error } => {
                who(f, worker, pid)?;
                write!(f, " channel error: {}", Chain(error))
            }
            Event::MessageError { worker, pid, error } => {
                who(f, worker, pid)?;
                write!(f, " sent a message that does not decode: {}", Chain(error))
            }
            Event::ForkError { slot, error } => {
                write!(f, "slot {slot}: fork failed: {}", Chain(error))
            }
            Event::RestartScheduled { slot, delay } => {
                write!(f, "slot {slot}: restart in {} ms", delay.as_millis())
            }
            Event::ReloadStarted => f.write_str("rolling reload started"),
            Event::ReloadFinished { error: None } => f.write_str("reload done"),
            // Already in words, "reload failed: …" included.
            Event::ReloadFinished {
                error: Some(e @ Error::Reload { .. }),
            } => write!(f, "{e}"),
            Event::ReloadFinished { error: Some(e) } => write!(f, "reload failed: {}", Chain(e)),
            Event::GaveUp { slot, last_exit } => {
                write!(f, "slot {slot}: gave up (crash loop), last {last_exit}")
            }
            Event::AllSlotsGaveUp => f.write_str("every slot gave up: stopping"),
            Event::Upgraded { pid } => {
                write!(f, "upgraded: the new primary (pid {pid}) serves; draining")
            }
            Event::Recycling {
                worker,
                pid,
                reason,
                ..
            } => {
                who(f, worker, pid)?;
                write!(f, " recycling: {reason}")
            }
            Event::SlotRemoved { slot, worker } => {
                write!(f, "slot {slot}: removed (scaled down)")?;
                match worker {
                    Some(w) => write!(f, ", worker {w} draining"),
                    None => Ok(()),
                }
            }
            Event::UpgradeFailed { reason } => write!(f, "upgrade failed: {reason}"),
            Event::UnusedSocket { addr, name } => {
                write!(f, "inherited socket {addr}")?;
                if let Some(name) = name {
                    write!(f, " ({name})")?;
                }
                f.write_str(" is not listened on by any worker: not ready")
            }
        }
    }
}

/// An error and its causes, `: `-separated.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
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
