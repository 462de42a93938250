//! Starting one worker process, with `spawn-core`.
//!
//! The worker is the program re-executed (never a bare `fork()` of the running,
//! multi-threaded primary), with:
//! - the child end of a fresh `cluster-ipc` socketpair at descriptor
//!   [`CHANNEL_FD`], named in `cluster-ipc`'s variable, and the worker's id in
//!   [`WORKER_ENV`](crate::role::WORKER_ENV);
//! - its own process group, so a terminal's Ctrl-C reaches only the primary
//!   (which then shuts down gracefully, or dies and takes the workers along),
//!   and a straggler's descendants can be killed with it;
//! - a parent that lives as long as the primary: the worker sets its own
//!   parent-death signal, SIGKILL, at its role check (`role.rs`), so it dies
//!   with the primary even if the primary is SIGKILLed, and the kernel fires
//!   that signal when the *thread* that spawned it exits. `spawn-core`
//!   spawns it from its process-wide spawner thread, which never exits
//!   ([`Command::lasting_parent_thread`]): a spawn from tokio's blocking
//!   pool (whose idle threads retire) would otherwise kill the worker early.
//!   The worker also drains when its channel closes (its `recv` and
//!   `accept` end, so a program that ends its main loop then exits): the
//!   second line of defence.
//!
//! No option needs code between `fork` and `exec`, so `spawn-core` starts
//! the worker with `posix_spawn`: the primary's image is never copied.
//!
//! The worker's variable names this process's pid and a token drawn for
//! this launch: the worker checks the pid against its parent (a program it
//! starts in turn is not a worker) and both ends check the token in the
//! handshake.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::Path;

use spawn_core::{Child, Command, Stdio};

use crate::role::{WORKER_ENV, WorkerEnv};
use crate::settings::{Settings, WorkerStdio};

/// The descriptor number of the channel in the worker.
pub(crate) const CHANNEL_FD: i32 = cluster_ipc::DEFAULT_CHILD_FD;

/// A started worker process.
pub(crate) struct Launched {
    pub(crate) child: Child,
    pub(crate) channel: OwnedFd,
}

/// The command that starts `program` as the worker described by `env`,
/// and the primary's end of its channel; [`spawn_core::spawn_all`] starts
/// it (with others: one trip to spawn-core's spawner thread for them all).
pub(crate) fn command(
    settings: &Settings,
    program: &Path,
    env: WorkerEnv,
    extra_env: &[(OsString, OsString)],
) -> Result<(Command, OwnedFd), cluster_ipc::Error> {
    let (channel, child_end) = cluster_ipc::channel_pair()?;

    let mut cmd = Command::new(program);
    cmd.args(&settings.args);
    for (k, v) in settings.env.iter().chain(extra_env) {
        cmd.env(k, v);
    }
    cmd.env(WORKER_ENV, env.encode())
        .env(cluster_ipc::CHANNEL_FD_ENV, CHANNEL_FD.to_string())
        .stdin(Stdio::null())
        .process_group(0)
        .inherit_fd(CHANNEL_FD, child_end)
        .lasting_parent_thread();
    if let Some(dir) = &settings.cwd {
        cmd.current_dir(dir);
    }
    if settings.stdio == WorkerStdio::Piped {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    // Socket activation and notify are the primary's: no worker sees them.
    for key in crate::primary::CHILD_ENV_REMOVE {
        cmd.env_remove(key);
    }
    Ok((cmd, channel))
}
