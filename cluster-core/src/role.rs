//! Which role this process plays: [`role()`], [`is_primary()`], [`is_worker()`].
//!
//! A primary starts each worker with [`WORKER_ENV`] set to
//! `<worker id>:<slot>:<heartbeat ms>`, and the channel's descriptor named in
//! `cluster-ipc`'s [`CHANNEL_FD_ENV`](cluster_ipc::CHANNEL_FD_ENV). The first
//! call to any function of this module reads both variables once, removes
//! them from the environment (so a program the worker spawns in turn does not
//! believe it is a worker too; Node's `NODE_UNIQUE_ID` works the same way),
//! and adopts the channel descriptor.
//!
//! # Caveats
//! Removing an environment variable is only sound while no other thread reads
//! the environment. Call [`role()`] first thing in `main`, before starting a
//! runtime or threads; later calls only read the cached answer.

#[cfg(test)]
mod tests;

use std::os::fd::OwnedFd;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

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
}

impl WorkerEnv {
    pub(crate) fn encode(&self) -> String {
        let hb = self.heartbeat.map_or(0, |d| d.as_millis().max(1));
        format!("{}:{}:{}", self.id.0, self.slot.0, hb)
    }

    pub(crate) fn parse(value: &str) -> Result<WorkerEnv> {
        let bad = || Error::BadEnvironment { name: WORKER_ENV };
        let mut parts = value.split(':');
        let mut next = || parts.next().ok_or_else(bad);
        let id: u64 = next()?.parse().map_err(|_| bad())?;
        let slot: usize = next()?.parse().map_err(|_| bad())?;
        let hb: u64 = next()?.parse().map_err(|_| bad())?;
        if parts.next().is_some() || id == 0 {
            return Err(bad());
        }
        Ok(WorkerEnv {
            id: WorkerId(id),
            slot: SlotId(slot),
            heartbeat: (hb > 0).then(|| Duration::from_millis(hb)),
        })
    }
}

static ROLE: OnceLock<Result<Option<WorkerEnv>, &'static str>> = OnceLock::new();

/// The adopted channel descriptor, until `Worker::connect` takes it.
static CHANNEL: Mutex<Option<std::result::Result<OwnedFd, cluster_ipc::Error>>> = Mutex::new(None);

/// Read [`WORKER_ENV`] and the channel variable once, remove them, and cache
/// what they said.
pub(crate) fn worker_env() -> Result<Option<WorkerEnv>> {
    let cached = ROLE.get_or_init(|| {
        let Some(value) = std::env::var_os(WORKER_ENV) else {
            return Ok(None);
        };
        // SAFETY: both variables are removed once, on the first call of this
        // module; the module docs require that call to happen before other
        // threads exist, so no concurrent reader of the environment can race.
        // The channel descriptor is adopted only here (`from_env` wraps it
        // once per process).
        let channel = unsafe {
            std::env::remove_var(WORKER_ENV);
            cluster_ipc::from_env()
        };
        let channel = match channel {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => return Err(cluster_ipc::CHANNEL_FD_ENV),
            Err(e) => Err(e),
        };
        *CHANNEL.lock().unwrap_or_else(|p| p.into_inner()) = Some(channel);
        value
            .to_str()
            .ok_or(WORKER_ENV)
            .and_then(|v| WorkerEnv::parse(v).map_err(|_| WORKER_ENV))
            .map(Some)
    });
    match cached {
        Ok(env) => Ok(*env),
        Err(name) => Err(Error::BadEnvironment { name }),
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
/// `Worker::connect` reports the error).
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
