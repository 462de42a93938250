//! Zero-downtime upgrade of the primary itself (nginx's `USR2`, Pingora,
//! tableflip, einhorn): [`Cluster::upgrade`](crate::Cluster::upgrade), or
//! SIGUSR2 with [`Settings::upgrade_on_signal`](crate::Settings::upgrade_on_signal).
//!
//! 1. The old primary starts the program now on disk (the path of its own
//!    executable, remembered when the cluster was made, so a binary renamed
//!    over it is the one started) with its own arguments, handing it a
//!    duplicate of every listener of every kind — TCP, Unix-domain (its
//!    file too, named `procwork-owned` when the cluster owns it), UDP, the
//!    sockets given to `Cluster::inherit_socket` and those inherited at
//!    start that no worker took (`Balancer::listening_fds`) — through the
//!    socket-activation variables (`LISTEN_FDS`, `LISTEN_FDNAMES`,
//!    `LISTEN_PID`; the child's own pid is only known after the fork, so
//!    `/bin/sh` sets it and `exec`s the program, keeping that pid) and one
//!    end of a socketpair, named by `PROCWORK_UPGRADE_FD`.
//! 2. The new primary adopts the sockets (`activation.rs`): its workers'
//!    requests find them by address (no unlink, no second bind), and
//!    accept on the same sockets alongside the old ones; once every slot's
//!    worker listens it writes `ready` on the socketpair (`notify.rs`), or
//!    `not ready: …` when they do not all listen within its ready timeout.
//! 3. The old primary reports `MAINPID=` (and the pid file) and stops
//!    accepting: it closes its copies of the listening sockets (the kernel
//!    keeps them open for the new primary, so no connection is refused; a
//!    socket file is the new primary's now and stays). It waits for its
//!    accept loops to end (one in the middle of a round of accepts ends
//!    after it) and for every connection it accepted to be taken by one of
//!    its workers, taking back and re-routing a hand-off that expires
//!    (`Balancer::handed_over`, bounded); then it begins its graceful
//!    shutdown: its workers finish what they hold and exit, and its event
//!    stream ends.
//!
//! If the new primary exits, closes the socketpair, says it is not ready,
//! or is not ready within
//! [`Settings::upgrade_timeout`](crate::Settings::upgrade_timeout), it is
//! SIGKILLed (its workers die with it) and the old primary goes on serving;
//! the error says why. So is it when the old primary's graceful shutdown
//! starts meanwhile (SIGTERM, SIGINT, `Cluster::shutdown`): nobody is left
//! half started. One upgrade at a time per process.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use spawn_core::Command;
use tokio::io::AsyncBufReadExt as _;

use crate::Payload;
use crate::error::{Error, Result};
use crate::primary::Shared;
use crate::primary::activation::{LISTEN_FDS_START, UPGRADE_FD_ENV, untaken};
use crate::primary::driver::Notice;

/// Sets `LISTEN_PID` (and `WATCHDOG_PID` when there is a watchdog) to the
/// shell's own pid, which the `exec`ed program keeps.
const EXEC_SCRIPT: &str = "LISTEN_PID=$$; export LISTEN_PID; \
     if [ -n \"${WATCHDOG_USEC:-}\" ]; then WATCHDOG_PID=$$; export WATCHDOG_PID; fi; \
     exec \"$0\" \"$@\"";

/// The primary's own executable, as it was when the first cluster was made.
static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// How long a new primary that closed its channel is given to exit, so its
/// exit status can be reported.
const CLOSED_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the old primary heard first from the new one.
enum Heard {
    Ready,
    Said(String),
    Closed,
    Exited(Result<spawn_core::Close, spawn_core::Error>),
    /// Not from the new primary: this one's graceful shutdown started.
    Stopping,
}

/// Set while an upgrade runs.
static UPGRADING: AtomicBool = AtomicBool::new(false);

/// Remember the executable's path now, before a deploy renames another
/// binary over it (`/proc/self/exe` would then name a deleted file).
pub(crate) fn remember_exe() {
    EXE.get_or_init(|| std::env::current_exe().ok());
}

fn exe() -> Result<PathBuf> {
    match EXE.get_or_init(|| std::env::current_exe().ok()) {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().map_err(Error::CurrentExe),
    }
}

/// Clears [`UPGRADING`] when the upgrade ends, however it ends.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        UPGRADING.store(false, Ordering::SeqCst);
    }
}

fn failed(reason: impl Into<String>) -> Error {
    Error::Upgrade {
        reason: reason.into(),
    }
}

/// Run one upgrade; the new primary's pid once it is ready. On success the
/// supervisor is told (it reports `MAINPID=` and begins the shutdown); on
/// failure too (it reports why).
pub(crate) async fn upgrade<M: Payload>(shared: &Arc<Shared<M>>) -> Result<u32> {
    let result = run(shared).await;
    let _ = shared.notices.send(Notice::Upgrade(match &result {
        Ok(pid) => Ok(*pid),
        Err(e) => Err(upgrade_reason(e)),
    }));
    result
}

fn upgrade_reason(e: &Error) -> String {
    match e {
        Error::Upgrade { reason } => reason.clone(),
        other => other.to_string(),
    }
}

async fn run<M: Payload>(shared: &Arc<Shared<M>>) -> Result<u32> {
    if UPGRADING.swap(true, Ordering::SeqCst) {
        return Err(Error::UpgradeInProgress);
    }
    let _running = Running;
    let timeout = {
        let st = shared.lock();
        if st.stopping {
            return Err(Error::Stopped);
        }
        st.settings.upgrade_timeout
    };
    let program = exe()?;
    let mut sockets: Vec<(Option<String>, OwnedFd)> = shared
        .balancer
        .listening_fds()
        .map_err(|e| failed(format!("could not duplicate a listening socket: {e}")))?;
    sockets.extend(untaken());
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| failed(format!("could not make the channel: {e}")))?;

    let n = i32::try_from(sockets.len()).map_err(|_| failed("too many listening sockets"))?;
    let names: Vec<String> = sockets
        .iter()
        .map(|(name, _)| name.clone().unwrap_or_else(|| "unknown".into()))
        .collect();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(EXEC_SCRIPT)
        .arg(&program)
        .args(args)
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env(UPGRADE_FD_ENV, (LISTEN_FDS_START + n).to_string())
        .env_remove("LISTEN_PID");
    for (i, (_, fd)) in (0..).zip(sockets) {
        cmd.inherit_fd(LISTEN_FDS_START + i, fd);
    }
    cmd.inherit_fd(LISTEN_FDS_START + n, OwnedFd::from(theirs));
    // Off the runtime's threads: the fork, and the wait for the exec.
    let could_not = |e: &dyn std::fmt::Display| {
        failed(format!(
            "could not start {}: {e}",
            program.to_string_lossy()
        ))
    };
    let mut child = tokio::task::spawn_blocking(move || cmd.spawn())
        .await
        .map_err(|e| could_not(&e))?
        .map_err(|e| could_not(&e))?;
    let pid = child.id().unwrap_or_default();

    ours.set_nonblocking(true)
        .map_err(|e| failed(format!("channel: {e}")))?;
    let ours =
        tokio::net::UnixStream::from_std(ours).map_err(|e| failed(format!("channel: {e}")))?;
    let mut lines = tokio::io::BufReader::new(ours).lines();
    let stopping = shared.service.stopping_signal();
    let first = tokio::time::timeout(timeout, async {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) if l == "ready" => Heard::Ready,
                Ok(Some(l)) => Heard::Said(l),
                Ok(None) | Err(_) => Heard::Closed,
            },
            close = child.wait() => Heard::Exited(close),
            () = stopping => Heard::Stopping,
        }
    })
    .await;
    let exited = |close: Result<spawn_core::Close, spawn_core::Error>| match close {
        Ok(close) => format!(
            "the new primary (pid {pid}) exited before it was ready ({})",
            close
        ),
        Err(e) => format!("the new primary (pid {pid}) could not be waited for: {e}"),
    };
    let outcome = match first {
        Ok(Heard::Ready) => Ok(()),
        Ok(Heard::Said(l)) => Err(format!("the new primary (pid {pid}) said {l:?}")),
        Ok(Heard::Exited(close)) => Err(exited(close)),
        Ok(Heard::Stopping) => Err(format!(
            "the cluster is shutting down: the new primary (pid {pid}) is stopped"
        )),
        // It closed the channel: most likely it is exiting.
        Ok(Heard::Closed) => match tokio::time::timeout(CLOSED_EXIT_WAIT, child.wait()).await {
            Ok(close) => Err(exited(close)),
            Err(_) => Err(format!(
                "the new primary (pid {pid}) closed its channel before it was ready"
            )),
        },
        Err(_) => Err(format!(
            "the new primary (pid {pid}) was not ready within {timeout:?}"
        )),
    };
    match outcome {
        Ok(()) => Ok(pid),
        Err(reason) => {
            // Its workers die with it (parent-death signal).
            let _ = child.start_kill();
            Err(failed(reason))
        }
    }
}

/// With [`Settings::upgrade_on_signal`](crate::Settings::upgrade_on_signal):
/// upgrade on each SIGUSR2. Holds the cluster weakly, so it never keeps it
/// alive.
pub(crate) fn on_signal<M: Payload>(shared: Weak<Shared<M>>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr2 = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            // The outcome reaches the event stream through the supervisor.
            let _ = upgrade(&shared).await;
        }
    });
    Ok(())
}
