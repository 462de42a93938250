//! Telling the service manager what the primary does: systemd's notify
//! protocol (`NOTIFY_SOCKET`), the pid file, and the ready message of an
//! upgrade.
//!
//! Read once from the environment when the cluster is made, never changed:
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace),
//! `WATCHDOG_USEC` (used when `WATCHDOG_PID` is unset or this process).
//! Each state is one datagram, sent best effort (a service manager that is
//! gone must not stop the cluster):
//! - `READY=1` and `STATUS=` once every slot's worker listens and no
//!   inherited socket is unused (the first time; again at the end of each
//!   reload); while one is unused, `STATUS=` names it instead;
//! - `STATUS=<ready>/<total> workers ready; <last event>` on each worker
//!   event;
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts
//!   (`Type=notify-reload`);
//! - `STOPPING=1` when the graceful shutdown starts, unless the service was
//!   handed to a new primary, which then reported `MAINPID=`;
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC`, sent by the supervisor task
//!   itself, so a stuck supervisor stops them.
//!
//! A primary started by an upgrade tells the old one `ready` on the upgrade
//! channel once every slot's worker listens; if they do not all listen
//! within the ready timeout of its first fork, it says `not ready: …`
//! instead, and the old primary counts the upgrade as failed (it kills this
//! one and serves on).
//!
//! The protocol is a few lines of `std` (`UnixDatagram`); no crate needed.
//!
//! Nothing here blocks a thread of the runtime. The datagrams go through a
//! queue ([`NOTIFY_QUEUE`] deep) to a thread of their own, which sends them
//! in order and may wait as long as a slow or stuck service manager makes
//! it (its socket's queue holds a few datagrams: ten by default); when the
//! queue is full, new ones are dropped. The pid file is written on tokio's
//! blocking pool, and the supervisor waits for it (at most
//! [`PID_FILE_WAIT`]) before it reports readiness or the hand-over, so a
//! reader of the pid file who saw the event finds the new pid. The upgrade
//! channel is non-blocking: its one line goes into a socket nothing else
//! writes to.

#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixStream};

use crate::sd_notify::{monotonic_usec, notify_addr, watchdog_interval};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// How many datagrams may wait for the sender thread; more are dropped.
pub(crate) const NOTIFY_QUEUE: usize = 256;

/// How long the supervisor waits for the pid file to be written before it
/// reports what the pid file says (it is written anyway, later).
pub(crate) const PID_FILE_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    ready: bool,
    handed_over: bool,
    /// Set in a primary started by an upgrade: told "ready" (or "not
    /// ready") once.
    upgrade: Option<UnixStream>,
    /// The ready timeout's timer runs (armed at the first worker event).
    deadline_armed: bool,
    /// The last count: workers listening, of the slots.
    listening: (usize, usize),
}

/// The primary's link to its service manager. See the module docs.
pub(crate) struct Service {
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    pid_file: Option<Arc<PidFile>>,
    /// How long a primary started by an upgrade gives its workers to
    /// listen (the settings' ready timeout).
    ready_timeout: Duration,
    state: Arc<Mutex<State>>,
    /// Turns true when the graceful shutdown starts: an upgrade still
    /// waiting for its new primary stops it.
    stopping: watch::Sender<bool>,
}

impl Service {
    /// From the environment (read, never changed).
    pub(crate) fn from_env(
        pid_file: Option<PathBuf>,
        upgrade: Option<UnixStream>,
        ready_timeout: Duration,
    ) -> Self {
        let notify = std::env::var("NOTIFY_SOCKET")
            .ok()
            .as_deref()
            .and_then(notify_addr);
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Self::new(notify, watchdog, pid_file, upgrade, ready_timeout)
    }

    /// Notifying `notify` (its sender thread started now), with the
    /// watchdog's interval, the pid file, the upgrade's channel and the
    /// ready timeout.
    pub(crate) fn new(
        notify: Option<UnixAddr>,
        watchdog: Option<Duration>,
        pid_file: Option<PathBuf>,
        upgrade: Option<UnixStream>,
        ready_timeout: Duration,
    ) -> Self {
        let upgrade = upgrade.filter(|up| up.set_nonblocking(true).is_ok());
        Self {
            notifier: notify.and_then(|addr| Notifier::start(addr).ok()),
            watchdog,
            pid_file: pid_file.map(|path| {
                Arc::new(PidFile {
                    path,
                    wanted: AtomicU32::new(0),
                    writing: Mutex::new(()),
                })
            }),
            ready_timeout,
            state: Arc::new(Mutex::new(State {
                upgrade,
                ..State::default()
            })),
            stopping: watch::Sender::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Resolves once the graceful shutdown has started (at once if it has).
    pub(crate) fn stopping_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Queue one notification (best effort: dropped when the queue is full).
    fn send(&self, msg: String) {
        if let Some(notifier) = &self.notifier {
            let _ = notifier.queue.try_send(msg);
        }
    }

    /// Write `pid` to the pid file, if there is one, on the blocking pool;
    /// returns once it is written, or after [`PID_FILE_WAIT`].
    async fn write_pid_file(&self, pid: u32) {
        let Some(file) = &self.pid_file else {
            return;
        };
        file.wanted.store(pid, Ordering::SeqCst);
        let file = Arc::clone(file);
        let write = tokio::task::spawn_blocking(move || {
            // Writes one at a time, each the latest pid wanted: the last
            // one to run leaves the latest pid, whatever their order.
            let _one = file.writing.lock().unwrap_or_else(|p| p.into_inner());
            let _ = write_pid_file(&file.path, file.wanted.load(Ordering::SeqCst));
        });
        let _ = tokio::time::timeout(PID_FILE_WAIT, write).await;
    }

    /// How often the supervisor should send `WATCHDOG=1`.
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `WATCHDOG=1`.
    pub(crate) fn watchdog(&self) {
        self.send("WATCHDOG=1".to_owned());
    }

    /// Whether readiness was reported.
    pub(crate) fn is_ready(&self) -> bool {
        self.lock().ready
    }

    /// A worker event: the summary, and readiness the first time every slot
    /// listens and no inherited socket is `unused` (pid file, the upgrade's
    /// ready message, `READY=1`), which returns once the pid file is written
    /// (bounded).
    pub(crate) async fn progress(
        &self,
        ready: usize,
        total: usize,
        last: &str,
        unused: Option<&str>,
    ) {
        let mut status = format!("STATUS={ready}/{total} workers ready; {last}");
        let first_ready = {
            let mut st = self.lock();
            st.listening = (ready, total);
            if st.upgrade.is_some() && !st.deadline_armed {
                st.deadline_armed = true;
                let (state, timeout) = (Arc::clone(&self.state), self.ready_timeout);
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let mut st = lock(&state);
                    let (ready, total) = st.listening;
                    if let Some(mut up) = st.upgrade.take() {
                        let line = format!(
                            "not ready: {ready}/{total} workers listening after {timeout:?}\n"
                        );
                        let _ = up.write_all(line.as_bytes());
                    }
                });
            }
            let first = !st.ready && total > 0 && ready >= total && unused.is_none();
            st.ready |= first;
            first
        };
        if !first_ready {
            if let Some(addr) = unused.filter(|_| ready == total) {
                status.push_str(&format!(
                    "; not ready: no worker listens on the inherited socket {addr}"
                ));
            }
            self.send(status);
            return;
        }
        self.write_pid_file(std::process::id()).await;
        // Taken now: the ready timeout may have said "not ready" meanwhile.
        if let Some(mut up) = self.lock().upgrade.take() {
            let _ = up.write_all(b"ready\n");
        }
        self.send(format!("READY=1\n{status}"));
    }

    /// A reload starts.
    pub(crate) fn reloading(&self) {
        self.send(format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ));
    }

    /// A reload ended (done or failed, the cluster serves either way).
    pub(crate) fn reloaded(&self, outcome: &str) {
        self.send(format!("READY=1\nSTATUS=reload {outcome}"));
    }

    /// The graceful shutdown starts.
    pub(crate) fn stopping(&self) {
        self.stopping.send_replace(true);
        if !self.lock().handed_over {
            self.send("STOPPING=1\nSTATUS=draining".to_owned());
        }
    }

    /// An upgrade handed the service to the primary `pid`: the pid file
    /// names it (returns once it is written, bounded), then `MAINPID=`.
    pub(crate) async fn handed_over(&self, pid: u32) {
        self.lock().handed_over = true;
        self.write_pid_file(pid).await;
        self.send(format!(
            "MAINPID={pid}\nSTATUS=handed over to the new primary (pid {pid}); draining"
        ));
    }

    /// An upgrade failed: say why.
    pub(crate) fn upgrade_failed(&self, reason: &str) {
        self.send(format!("STATUS=upgrade failed: {reason}"));
    }
}

/// The notify socket's sender thread, fed in order through a bounded queue;
/// it ends when the [`Service`] is dropped and the queue is empty.
struct Notifier {
    queue: SyncSender<String>,
}

impl Notifier {
    fn start(addr: UnixAddr) -> std::io::Result<Notifier> {
        // Blocking: the thread waits for room in the manager's queue, so
        // nothing is lost to a manager that is only slow.
        let socket = UnixDatagram::unbound()?;
        let (queue, rx) = sync_channel::<String>(NOTIFY_QUEUE);
        std::thread::Builder::new()
            .name("cluster-notify".into())
            .spawn(move || {
                for msg in rx {
                    let _ = socket.send_to_addr(msg.as_bytes(), &addr);
                }
            })?;
        Ok(Notifier { queue })
    }
}

/// The pid file: where, the pid it should name, and one write at a time.
struct PidFile {
    path: PathBuf,
    wanted: AtomicU32,
    writing: Mutex<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Write `pid` to `path` atomically (a temporary file renamed over it).
pub(crate) fn write_pid_file(path: &Path, pid: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}
