//! Starting one worker process (the seam to the spawning layer).
//!
//! The worker is the program re-executed (never a bare `fork()` of the running,
//! multi-threaded primary), with:
//! - the child end of a fresh socketpair at descriptor [`CHANNEL_FD`], named
//!   in [`WORKER_ENV`](crate::role::WORKER_ENV) with the worker's id;
//! - its own process group, so a terminal's Ctrl-C reaches only the primary
//!   (which then shuts down gracefully, or dies and takes the workers along);
//! - the parent-death signal SIGKILL (Linux), so it dies with the primary even
//!   if the primary is SIGKILLed. The worker also exits when its channel closes:
//!   the second line of defence, and the only one on other systems.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use crate::role::{WORKER_ENV, WorkerEnv};
use crate::settings::{Settings, WorkerStdio};

/// The descriptor number of the channel in the worker.
pub(crate) const CHANNEL_FD: i32 = 3;

/// A started worker process.
pub(crate) struct Launched {
    pub(crate) child: tokio::process::Child,
    pub(crate) channel: tokio::net::UnixStream,
    pub(crate) pid: u32,
}

/// Start `program` as the worker described by `env`.
pub(crate) fn launch(
    settings: &Settings,
    program: &Path,
    env: WorkerEnv,
    extra_env: &[(OsString, OsString)],
) -> std::io::Result<Launched> {
    let (parent_end, child_end) = std::os::unix::net::UnixStream::pair()?;
    parent_end.set_nonblocking(true)?;
    let channel = tokio::net::UnixStream::from_std(parent_end)?;
    let child_end = OwnedFd::from(child_end);

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&settings.args)
        .envs(settings.env.iter().map(|(k, v)| (k, v)))
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .env(WORKER_ENV, env.encode())
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(dir) = &settings.cwd {
        cmd.current_dir(dir);
    }
    if settings.stdio == WorkerStdio::Piped {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let raw = child_end.as_raw_fd();
    let parent_pid = std::process::id();
    // SAFETY: the hook runs between fork and exec and only makes
    // async-signal-safe system calls (dup2, fcntl, prctl, getppid, _exit) on
    // integers prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if raw == CHANNEL_FD {
                if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, CHANNEL_FD) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent_pid {
                    libc::_exit(1);
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(child_end);
    let pid = child.id().unwrap_or(0);
    Ok(Launched {
        child,
        channel,
        pid,
    })
}
