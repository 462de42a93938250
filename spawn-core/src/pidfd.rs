//! [`Process`]: a child started on the `posix_spawn` path (`posix.rs`),
//! awaited through its pidfd, which the reactor reports readable once the
//! child has ended. tokio's `Child` cannot adopt a pid it did not spawn, so
//! this is that `Child`'s counterpart for our own spawns: the same `wait`,
//! `try_wait`, `id` (ending at the reap) and `kill_on_drop`, and a dropped
//! handle's child reaped by the reaper thread (`reaper.rs`).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

use crate::{posix, reaper};

#[derive(Debug)]
pub(crate) struct Process {
    pid: u32,
    state: State,
    kill_on_drop: bool,
}

#[derive(Debug)]
enum State {
    /// The child's pidfd, registered with the reactor.
    Running(AsyncFd<OwnedFd>),
    Reaped(ExitStatus),
}

impl Process {
    /// Adopts `pid`, a child of ours not yet reaped, and its pidfd.
    /// Registers the pidfd with the current runtime's reactor: outside a
    /// runtime, or in one without its I/O driver, tokio panics (the caller
    /// catches it); gives the pidfd back on an error.
    pub(crate) fn new(
        pid: u32,
        pidfd: OwnedFd,
        kill_on_drop: bool,
    ) -> Result<Self, (io::Error, OwnedFd)> {
        let pidfd = posix::register(pidfd)?;
        Ok(Process {
            pid,
            state: State::Running(pidfd),
            kill_on_drop,
        })
    }

    /// Sends SIGKILL unless the child was reaped.
    pub(crate) fn start_kill(&mut self) {
        if let State::Running(_) = self.state {
            posix::kill(self.pid, libc::SIGKILL);
        }
    }

    /// The pid until the child is reaped.
    pub(crate) fn id(&self) -> Option<u32> {
        matches!(self.state, State::Running(_)).then_some(self.pid)
    }

    /// The status if the child has ended (and reaps it); never blocks.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.state {
            State::Reaped(status) => Ok(Some(status)),
            State::Running(_) => {
                let status = posix::try_reap(self.pid)?;
                if let Some(status) = status {
                    self.state = State::Reaped(status);
                }
                Ok(status)
            }
        }
    }

    /// Waits for the child to end and reaps it. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        loop {
            let pidfd = match &self.state {
                State::Reaped(status) => return Ok(*status),
                State::Running(pidfd) => pidfd,
            };
            let mut ready = pidfd.readable().await?;
            match posix::try_reap(self.pid)? {
                Some(status) => {
                    drop(ready);
                    self.state = State::Reaped(status);
                    return Ok(status);
                }
                // A readiness from before the child ended.
                None => ready.clear_ready(),
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let State::Running(_) = self.state {
            if self.kill_on_drop {
                posix::kill(self.pid, libc::SIGKILL);
            }
            let placeholder = State::Reaped(ExitStatus::from_raw(0));
            if let State::Running(pidfd) = std::mem::replace(&mut self.state, placeholder) {
                reaper::adopt(self.pid, pidfd.into_inner());
            }
        }
    }
}
