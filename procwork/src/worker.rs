//! One worker process: how it is started, and the task that drives it.
//!
//! [`start`] spawns the program through the [shim](crate::shim) with
//! spawn-core: its own process group, the parent-death signal SIGKILL, the
//! listening sockets placed at descriptors 3.. (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`), its notify socket (`NOTIFY_SOCKET`, and pre-connected
//! after the sockets), `PROCWORK_SLOT` and `PROCWORK_WORKER`, stdin from
//! `/dev/null` and its output piped to cluster-core's forwarders.
//!
//! The driver task ([`drive`]) owns the [`Child`]: it alone signals and
//! reaps it, so no reused pid is ever signalled. It reports readiness
//! (`READY=1` from the worker's own pid, or `--ready-after`), a missed
//! `--ready-timeout`, notices (`STATUS=`, `STOPPING=1`), a missed watchdog
//! (then SIGKILLs the group), and the exit; it carries out the stop
//! (the stop signal to the process, then SIGKILL to its group after the
//! grace). When the process has exited, the rest of its group is SIGKILLed,
//! so nothing it started in its group outlives it.

use std::time::Duration;

use cluster_core::output::{Stream, forward_worker_output};
use cluster_core::{WorkerId, WorkerOutput};
use spawn_core::{Child, Close, Command, Signal, Stdio};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::Error;
use crate::listen::ListenSocket;
use crate::notify::{NOTIFY_FD_ENV, Notice, NotifySocket, parse};
use crate::shim::SHIM_ARG;

/// How long the end of a worker waits for the rest of its process group
/// to be gone after SIGKILL.
const GROUP_GONE_WAIT: Duration = Duration::from_secs(1);

/// What a worker is started with.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The program and its arguments.
    pub command: Vec<std::ffi::OsString>,
    /// `--ready-after`.
    pub ready_after: Option<Duration>,
    /// `--ready-timeout`.
    pub ready_timeout: Duration,
    /// `--watchdog`.
    pub watchdog: Option<Duration>,
    /// How its output is forwarded.
    pub output: WorkerOutput,
}

/// An order to a worker's driver.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    /// Send `signal` to the process, SIGKILL its group after `grace`.
    Stop {
        /// The stop signal.
        signal: Signal,
        /// The grace.
        grace: Duration,
    },
    /// SIGKILL the group now.
    Kill,
}

/// What a worker's driver reports.
#[derive(Debug)]
pub enum Report {
    /// It is ready (`READY=1`, or `--ready-after` elapsed).
    Ready {
        /// The worker.
        worker: u64,
        /// Whether it said so (`READY=1`) rather than by the delay.
        notified: bool,
    },
    /// It was not ready at `--ready-timeout`.
    NotReady {
        /// The worker.
        worker: u64,
    },
    /// It sent a notice (`STATUS=`, `STOPPING=1`...).
    Notice {
        /// The worker.
        worker: u64,
        /// What it said.
        notice: Notice,
    },
    /// It fed the watchdog once and then missed it (or sent
    /// `WATCHDOG=trigger`): its group was SIGKILLed.
    Hung {
        /// The worker.
        worker: u64,
    },
    /// Its process ended and was reaped.
    Exited {
        /// The worker.
        worker: u64,
        /// How.
        close: Close,
    },
}

/// Starts worker `worker` of `slot`: see the module docs. Needs a runtime.
///
/// # Errors
/// [`Error::Notify`] or [`Error::Spawn`].
pub fn start(
    spec: &WorkerSpec,
    sockets: &[ListenSocket],
    notify: NotifySocket,
    worker: u64,
    slot: u64,
) -> Result<(Child, NotifySocket), Error> {
    let spawn_err = |source| Error::Spawn {
        worker,
        slot,
        source,
    };
    let notify_fd = notify.connected_client().map_err(|source| Error::Notify {
        path: notify.path().to_owned(),
        source,
    })?;
    let n = i32::try_from(sockets.len()).unwrap_or(i32::MAX);
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("procwork")
        .arg(SHIM_ARG)
        .args(&spec.command)
        .env_remove("LISTEN_PID")
        .env_remove("WATCHDOG_PID")
        .env("NOTIFY_SOCKET", notify.path())
        .env(NOTIFY_FD_ENV, (3 + n).to_string())
        .env("PROCWORK_SLOT", slot.to_string())
        .env("PROCWORK_WORKER", worker.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .parent_death_signal(Signal::SIGKILL);
    if sockets.is_empty() {
        command
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES");
    } else {
        let names: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
        command
            .env("LISTEN_FDS", sockets.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"));
    }
    match spec.watchdog {
        Some(w) => command.env("WATCHDOG_USEC", w.as_micros().to_string()),
        None => command.env_remove("WATCHDOG_USEC"),
    };
    for (i, socket) in (3..).zip(sockets) {
        let fd = socket
            .fd
            .try_clone()
            .map_err(|source| Error::Descriptor { worker, source })?;
        command.inherit_fd(i, fd);
    }
    command.inherit_fd(3 + n, notify_fd);
    let mut child = command.spawn().map_err(spawn_err)?;
    let id = WorkerId(worker);
    if let Some(out) = child.take_stdout() {
        tokio::spawn(forward_worker_output(out, id, Stream::Stdout, spec.output));
    }
    if let Some(err) = child.take_stderr() {
        tokio::spawn(forward_worker_output(err, id, Stream::Stderr, spec.output));
    }
    Ok((child, notify))
}

/// Drives one worker until its process is reaped: see the module docs.
pub async fn drive(
    worker: u64,
    mut child: Child,
    notify: NotifySocket,
    spec: WorkerSpec,
    reports: mpsc::UnboundedSender<Report>,
    mut orders: mpsc::UnboundedReceiver<Order>,
) {
    // Taken while it runs (`id` is `None` once it was reaped).
    let pid = child.id().unwrap_or(0);
    let started = Instant::now();
    let far = started + Duration::from_secs(100 * 365 * 86400);
    let mut ready = false;
    let ready_at = spec.ready_after.map_or(far, |d| started + d);
    let mut timeout_at = started + spec.ready_timeout;
    let mut watchdog_at = far;
    let mut kill_at = far;
    let mut orders_open = true;
    let mut notify_open = true;
    let send = |r: Report| {
        let _ = reports.send(r);
    };
    let close = loop {
        tokio::select! {
            close = child.wait() => break close,
            got = notify.recv(), if notify_open => {
                let Ok((sender, datagram)) = got else {
                    notify_open = false;
                    continue;
                };
                if sender != Some(pid) {
                    continue; // not the worker's own process
                }
                let notice = parse(&datagram);
                if notice.ready && !ready {
                    ready = true;
                    send(Report::Ready { worker, notified: true });
                }
                if let Some(w) = spec.watchdog {
                    if notice.watchdog {
                        watchdog_at = Instant::now() + w;
                    }
                    if notice.watchdog_trigger {
                        watchdog_at = Instant::now();
                    }
                }
                if notice.status.is_some() || notice.stopping || notice.reloading {
                    send(Report::Notice { worker, notice });
                }
            }
            () = tokio::time::sleep_until(ready_at), if !ready => {
                ready = true;
                send(Report::Ready { worker, notified: false });
            }
            () = tokio::time::sleep_until(timeout_at), if !ready => {
                timeout_at = far;
                send(Report::NotReady { worker });
            }
            () = tokio::time::sleep_until(watchdog_at), if watchdog_at < far => {
                watchdog_at = far;
                let _ = child.signal_group(Signal::SIGKILL);
                send(Report::Hung { worker });
            }
            order = orders.recv(), if orders_open => match order {
                Some(Order::Stop { signal, grace }) => {
                    let _ = child.signal(signal);
                    kill_at = kill_at.min(Instant::now() + grace);
                    timeout_at = far;
                }
                Some(Order::Kill) => {
                    let _ = child.signal_group(Signal::SIGKILL);
                }
                None => orders_open = false,
            },
            () = tokio::time::sleep_until(kill_at), if kill_at < far => {
                kill_at = far;
                let _ = child.signal_group(Signal::SIGKILL);
            }
        }
    };
    // Whatever it left in its group goes with it; the exit is reported
    // once the group is empty (bounded: members that are zombies wait for
    // their parent, or init, to reap them).
    let _ = child.signal_group(Signal::SIGKILL);
    let group = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
    let gone_by = Instant::now() + GROUP_GONE_WAIT;
    while pid != 0 && nix::sys::signal::killpg(group, None).is_ok() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(notify);
    let close = close.unwrap_or(Close::Exited(-1));
    send(Report::Exited { worker, close });
}
