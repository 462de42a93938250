//! Which role this process plays: [`role()`], [`is_primary()`], [`is_worker()`].
//!
//! A primary starts each worker with [`WORKER_ENV`] set to
//! `<worker id>:<slot>:<channel fd>:<heartbeat ms>`. The first call to any
//! function of this module reads the variable once and removes it from the
//! environment, so a program the worker spawns in turn does not believe it is
//! a worker too (Node's `NODE_UNIQUE_ID` works the same way).
//!
//! # Caveats
//! Removing an environment variable is only sound while no other thread reads
//! the environment. Call [`role()`] first thing in `main`, before starting a
//! runtime or threads; the later calls only read the cached answer.

#[cfg(test)]
mod tests;

use std::sync::OnceLock;
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
    pub(crate) fd: i32,
    pub(crate) heartbeat: Option<Duration>,
}

impl WorkerEnv {
    pub(crate) fn encode(&self) -> String {
        let hb = self.heartbeat.map_or(0, |d| d.as_millis().max(1));
        format!("{}:{}:{}:{}", self.id.0, self.slot.0, self.fd, hb)
    }

    pub(crate) fn parse(value: &str) -> Result<WorkerEnv> {
        let bad = || Error::BadEnvironment { name: WORKER_ENV };
        let mut parts = value.split(':');
        let mut next = || parts.next().ok_or_else(bad);
        let id: u64 = next()?.parse().map_err(|_| bad())?;
        let slot: usize = next()?.parse().map_err(|_| bad())?;
        let fd: i32 = next()?.parse().map_err(|_| bad())?;
        let hb: u64 = next()?.parse().map_err(|_| bad())?;
        if parts.next().is_some() || id == 0 || fd < 0 {
            return Err(bad());
        }
        Ok(WorkerEnv {
            id: WorkerId(id),
            slot: SlotId(slot),
            fd,
            heartbeat: (hb > 0).then(|| Duration::from_millis(hb)),
        })
    }
}

static ROLE: OnceLock<Result<Option<WorkerEnv>, &'static str>> = OnceLock::new();

/// Read [`WORKER_ENV`] once, remove it, and cache what it said.
pub(crate) fn worker_env() -> Result<Option<WorkerEnv>> {
    let cached = ROLE.get_or_init(|| {
        let Some(value) = std::env::var_os(WORKER_ENV) else {
            return Ok(None);
        };
        // SAFETY: the variable is removed once, on the first call of this
        // module; the module docs require that call to happen before other
        // threads exist, so no concurrent reader of the environment can race.
        unsafe { std::env::remove_var(WORKER_ENV) };
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
