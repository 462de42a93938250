//! Which role this process plays: [`role()`], [`is_primary()`], [`is_worker()`].
//!
//! A primary starts each worker with [`WORKER_ENV`] set to
//! `<worker id>:<slot>:<heartbeat ms>:<primary pid>:<token>`, and the
//! channel's descriptor named in `cluster-ipc`'s
//! [`CHANNEL_FD_ENV`](cluster_ipc::CHANNEL_FD_ENV). The first call to any
//! function of this module reads both variables once, without changing the
//! environment, and caches the answer: this process is a worker when the
//! variable is there and names its parent
//! ([`parent_id`](std::os::unix::process::parent_id)) as the primary. Then
//! it ties its life to the primary's and adopts the channel descriptor
//! (close-on-exec from then on).
//!
//! The tie: the worker sets its own parent-death signal, SIGKILL
//! (`PR_SET_PDEATHSIG`, from a thread that lives as long as the process:
//! the main thread, or one of its own that never exits, since the kernel
//! keeps the setting per thread), then checks that its parent is still the
//! primary, and SIGKILLs itself if not (the primary died in between). The
//! primary spawns its workers with `posix_spawn` (no copy of its image)
//! from `spawn-core`'s spawner thread, which lives as long as it, so the
//! signal fires when the primary process dies.
//!
//! Until that check, a worker is not tied: if its primary dies first, the
//! worker has another parent by then. It then still holds the channel at
//! the number its variable names, and that socket's `SO_PEERCRED` names
//! the process that created it, the primary of the variable, whose end is
//! closed, or closes within a moment (another worker the primary was
//! starting may hold a copy until its `exec`; the wait is bounded by
//! `ORPHAN_CHECK_WAIT`): the worker SIGKILLs itself, as the parent-death
//! signal would have killed it. A program a worker started has the worker
//! as its parent; it holds the channel only if started before the worker
//! adopted it, and then the primary's end stays open: after that wait, it
//! is a primary.
//!
//! A program the worker starts in turn inherits the variables (they stay
//! set: removing one is unsound once threads run), but its parent is the
//! worker, not the primary the variable names: it is a primary. Nor does it
//! get the channel, once the worker adopted it. The token, drawn by the primary for each launch,
//! is checked in the channel's handshake both ways, so a process that holds
//! a channel it was not launched for cannot pass as the worker.
//!
//! Every function here is safe to call at any time, from any thread, also
//! inside `#[tokio::main]`.
//!
//! # Caveats
//! - The role is decided by the first call and never changes. Ask for it
//!   first thing in `main`: until then the worker is not tied to its
//!   primary (it dies at that first call if the primary is gone by then).
//! - A primary written by hand (the variables and the channel set by the
//!   program itself, as the tests do) spawns its workers from a thread that
//!   lives as long as it (`spawn_core::Command::lasting_parent_thread`):
//!   the worker's parent-death signal fires when the thread that spawned
//!   it exits.
//! - The worker must be the primary's own child: a [`Settings::program`]
//!   that runs the worker under a wrapper which forks (rather than `exec`s)
//!   gives a worker whose parent is the wrapper, which is then a primary.
//! - Until the worker adopts the channel (its first call of this module),
//!   the descriptor is inheritable: a program it starts before that holds
//!   the channel open too (it still is a primary). Ask for the role before
//!   starting programs.
//!
//! [`Settings::program`]: crate::Settings::program

#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::os::fd::OwnedFd;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::event::{SlotId, WorkerId};

/// The variable through which a primary tells a worker who it is.
pub const WORKER_ENV: &str = "PROCWORK_CLUSTER_WORKER";

/// The role of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not started by a primary: this process is (or can become) a primary.
    Primary,
    /// Started by a primary as the worker with this id.
    Worker(WorkerId),
}

/// What the primary told a worker, parsed from [`WORKER_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerEnv {
    pub(crate) id: WorkerId,
    pub(crate) slot: SlotId,
    pub(crate) heartbeat: Option<Duration>,
    /// The primary's process id: the worker's parent.
    pub(crate) primary: u32,
    /// Drawn by the primary for this launch; both ends send it in the
    /// handshake and check the other's.
    pub(crate) token: u64,
}

impl WorkerEnv {
    pub(crate) fn encode(&self) -> String {
        let hb = self.heartbeat.map_or(0, |d| d.as_millis().max(1));
        format!(
            "{}:{}:{}:{}:{:x}",
            self.id.0,
            self.slot.get(),
            hb,
            self.primary,
            self.token
        )
    }

    pub(crate) fn parse(value: &str) -> Result<WorkerEnv> {
        let bad = || Error::BadEnvironment { name: WORKER_ENV };
        let mut parts = value.split(':');
        let mut next = || parts.next().ok_or_else(bad);
        let id: u64 = next()?.parse().map_err(|_| bad())?;
        let slot: u32 = next()?.parse().map_err(|_| bad())?;
        let hb: u64 = next()?.parse().map_err(|_| bad())?;
        let primary: u32 = next()?.parse().map_err(|_| bad())?;
        let token = u64::from_str_radix(next()?, 16).map_err(|_| bad())?;
        if parts.next().is_some() || id == 0 || primary == 0 {
            return Err(bad());
        }
        Ok(WorkerEnv {
            id: WorkerId(id),
            slot: SlotId::new(slot),
            heartbeat: (hb > 0).then(|| Duration::from_millis(hb)),
            primary,
            token,
        })
    }
}

/// A launch token: unpredictable enough that no process hits it by chance
/// (std's randomly keyed SipHash of the worker id and the time).
pub(crate) fn new_token(id: WorkerId) -> u64 {
    RandomState::new().hash_one((id.0, std::process::id(), SystemTime::now()))
}

static ROLE: OnceLock<Result<Option<WorkerEnv>, &'static str>> = OnceLock::new();

/// How long a worker whose primary died before its role check waits for
/// the primary's end of its channel to close. The primary's own copy is
/// gone once the worker has another parent, but a worker the primary was
/// starting at its death may hold one more copy for a moment (between
/// `posix_spawn`'s clone and its `exec`, which closes it): seen open once,
/// it closes within milliseconds. Only a process whose primary still holds
/// that end, a program a worker started before adopting the channel, waits
/// this long, and then runs as a primary.
const ORPHAN_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The adopted channel descriptor, until `Worker::connect` takes it.
static CHANNEL: Mutex<Option<std::result::Result<OwnedFd, cluster_ipc::Error>>> = Mutex::new(None);

/// Read [`WORKER_ENV`] and the channel variable once (never changing the
/// environment), adopt the channel if this process is the worker they were
/// set for, and cache what they said.
pub(crate) fn worker_env() -> Result<Option<WorkerEnv>> {
    let cached = ROLE.get_or_init(|| {
        let Some(value) = std::env::var_os(WORKER_ENV) else {
            return Ok(None);
        };
        let env = value
            .to_str()
            .ok_or(WORKER_ENV)
            .and_then(|v| WorkerEnv::parse(v).map_err(|_| WORKER_ENV))?;
        if env.primary != std::os::unix::process::parent_id() {
            // Inherited from an ancestor: a program a worker started (a
            // primary), or a worker whose primary died before this check.
            // That one still holds the channel its primary created, whose
            // other end is closed (or closes in a moment: see
            // `ORPHAN_CHECK_WAIT`): it dies, as the parent-death signal
            // would have killed it.
            if let Some(peer) = cluster_ipc::inherited_peer()
                && peer.pid == env.primary
                && peer.closes_within(ORPHAN_CHECK_WAIT)
            {
                die_with_primary();
            }
            return Ok(None);
        }
        tie_to_primary(env.primary);
        // SAFETY: `from_env` requires that the descriptor was handed to this
        // process for the channel and is owned by nothing else. The variable
        // names our parent as the primary that launched us with it: a program
        // a worker starts has the worker as its parent, and never gets here.
        // This is the only call in the crate, inside a `OnceLock`
        // initialiser, so it runs once per process (and `from_env` itself
        // adopts once).
        let channel = unsafe { cluster_ipc::from_env() };
        let channel = match channel {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => return Err(cluster_ipc::CHANNEL_FD_ENV),
            Err(e) => Err(e),
        };
        *CHANNEL.lock().unwrap_or_else(|p| p.into_inner()) = Some(channel);
        Ok(Some(env))
    });
    match cached {
        Ok(env) => Ok(*env),
        Err(name) => Err(Error::BadEnvironment { name }),
    }
}

/// Ties this worker's life to its primary's: the parent-death signal
/// SIGKILL, then a check that the parent is still `primary` (it may have
/// died before the signal was set, and then the signal never comes).
fn tie_to_primary(primary: u32) {
    set_parent_death_signal();
    if std::os::unix::process::parent_id() != primary {
        die_with_primary();
    }
}

/// Sets SIGKILL as the parent-death signal of this process. The kernel
/// keeps the setting per thread and forgets it when that thread exits, so
/// it is set on the main thread, or else on a thread of its own that never
/// exits (a small stack, parked for good).
fn set_parent_death_signal() {
    use nix::sys::prctl::set_pdeathsig;
    use nix::sys::signal::Signal;

    if nix::unistd::gettid() == nix::unistd::getpid() {
        // Fails only for an invalid signal.
        let _ = set_pdeathsig(Signal::SIGKILL);
        return;
    }
    let (set_tx, set_rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("cluster-core-parent-death".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = set_pdeathsig(Signal::SIGKILL);
            let _ = set_tx.send(());
            loop {
                std::thread::park();
            }
        });
    match spawned {
        Ok(_) => {
            // The thread only ends with the process.
            let _ = set_rx.recv();
        }
        // No thread to be had: this one is better than none.
        Err(_) => {
            let _ = set_pdeathsig(Signal::SIGKILL);
        }
    }
}

/// Ends this process as its parent-death signal would have: its primary
/// is gone.
fn die_with_primary() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be blocked or caught: the process ends before `raise`
    // returns. Never go on as the worker of a primary that is gone.
    loop {
        std::thread::park();
    }
}

/// Take the adopted channel descriptor (once).
pub(crate) fn take_channel() -> Result<OwnedFd> {
    match CHANNEL.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(Ok(fd)) => Ok(fd),
        Some(Err(e)) => Err(Error::Ipc(e)),
        None => Err(Error::AlreadyConnected),
    }
}

/// This process's role. A malformed variable counts as a primary (and
/// `Worker::connect` reports the error). Safe to call from any thread, at
/// any time (see the [module docs](self) for how it is decided).
pub fn role() -> Role {
    match worker_env() {
        Ok(Some(env)) => Role::Worker(env.id),
        _ => Role::Primary,
    }
}

/// Whether this process is a primary (not started by one).
pub fn is_primary() -> bool {
    role() == Role::Primary
}

/// Whether this process was started by a primary as a worker.
pub fn is_worker() -> bool {
    !is_primary()
}
