//! [`Child`]: the handle of a running child: its pid, its pipes, waiting,
//! signals (to it or its whole group), graceful stop, timeout and capture.

use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::{Close, Error, Output, Stream};

/// How long [`Child::wait_timeout`] lets the child react to its stop signal
/// before sending SIGKILL.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// A spawned child. Dropping it without waiting is allowed: the child is
/// reaped in the background and never left a zombie (and is sent SIGKILL
/// first if [`Command::kill_on_drop`](crate::Command::kill_on_drop) was set).
#[derive(Debug)]
pub struct Child {
    inner: tokio::process::Child,
    pid: u32,
    program: OsString,
    group_leader: bool,
    close: Option<Close>,
}

enum ReadFailure {
    Io(Stream, std::io::Error),
    Cap(Stream),
}

impl Child {
    pub(crate) fn new(inner: tokio::process::Child, program: OsString, group_leader: bool) -> Self {
        // A child that was just spawned and not yet waited for has a pid.
        let pid = inner.id().unwrap_or_default();
        Child {
            inner,
            pid,
            program,
            group_leader,
            close: None,
        }
    }

    /// The child's process id (still returned after the child was reaped,
    /// when the number may already belong to another process).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program as given to the [`Command`](crate::Command).
    pub fn program(&self) -> &std::ffi::OsStr {
        &self.program
    }

    /// Takes the writing end of a piped stdin (`None` unless
    /// [`Stdio::Piped`](crate::Stdio::Piped), or already taken).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.inner.stdin.take()
    }

    /// Takes the reading end of a piped stdout.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.inner.stdout.take()
    }

    /// Takes the reading end of a piped stderr.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.inner.stderr.take()
    }

    /// Waits for the child to close and reaps it. Cancel-safe; once it
    /// returned, later calls return the same close at once. Closes a piped
    /// stdin that was not taken first, so a child reading it sees EOF.
    ///
    /// # Errors
    /// [`Error::Wait`] if the OS refuses the wait.
    pub async fn wait(&mut self) -> Result<Close, Error> {
        if let Some(close) = self.close {
            return Ok(close);
        }
        let status = self.inner.wait().await.map_err(|source| Error::Wait {
            program: self.program.clone(),
            pid: self.pid,
            source,
        })?;
        let close = Close::from_status(status);
        self.close = Some(close);
        Ok(close)
    }

    /// The close, if the child has closed; never blocks.
    ///
    /// # Errors
    /// [`Error::Wait`] if the OS refuses the wait.
    pub fn try_wait(&mut self) -> Result<Option<Close>, Error> {
        if let Some(close) = self.close {
            return Ok(Some(close));
        }
        let status = self.inner.try_wait().map_err(|source| Error::Wait {
            program: self.program.clone(),
            pid: self.pid,
            source,
        })?;
        self.close = status.map(Close::from_status);
        Ok(self.close)
    }

    /// Sends `signal` to the child. Does nothing once the child has been
    /// reaped, so it can never reach a process that reused the pid.
    ///
    /// # Errors
    /// [`Error::Kill`] if the OS refuses.
    pub fn kill(&mut self, signal: Signal) -> Result<(), Error> {
        if self.inner.id().is_none() {
            return Ok(());
        }
        signal::kill(self.nix_pid(), signal).map_err(|source| self.kill_error(signal, source))
    }

    /// Sends `signal` to the child's whole process group, grandchildren
    /// included. The child must lead its group
    /// ([`Command::process_group`](crate::Command::process_group) or
    /// [`Command::new_session`](crate::Command::new_session)); an empty
    /// group is not an error.
    ///
    /// # Errors
    /// [`Error::NotGroupLeader`], or [`Error::Kill`] if the OS refuses.
    pub fn kill_group(&mut self, signal: Signal) -> Result<(), Error> {
        if !self.group_leader {
            return Err(Error::NotGroupLeader {
                program: self.program.clone(),
                pid: self.pid,
            });
        }
        match signal::killpg(self.nix_pid(), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(self.kill_error(signal, source)),
        }
    }

    /// Graceful stop: sends `signal`, waits up to `grace`, then sends
    /// SIGKILL, and returns the close.
    ///
    /// # Errors
    /// [`Error::Kill`] or [`Error::Wait`].
    pub async fn stop(&mut self, signal: Signal, grace: Duration) -> Result<Close, Error> {
        if let Some(close) = self.try_wait()? {
            return Ok(close);
        }
        self.kill(signal)?;
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(result) => result,
            Err(_elapsed) => {
                self.kill(Signal::SIGKILL)?;
                self.wait().await
            }
        }
    }

    /// Waits at most `timeout`. If the child is still running then, it is
    /// stopped with `signal` (and SIGKILL after [`TIMEOUT_GRACE`]), and
    /// [`Error::TimedOut`] reports the timeout with the resulting close.
    ///
    /// # Errors
    /// [`Error::TimedOut`], [`Error::Kill`] or [`Error::Wait`].
    pub async fn wait_timeout(
        &mut self,
        timeout: Duration,
        signal: Signal,
    ) -> Result<Close, Error> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(result) => result,
            Err(_elapsed) => {
                let close = self.stop(signal, TIMEOUT_GRACE).await?;
                Err(Error::TimedOut {
                    program: self.program.clone(),
                    pid: self.pid,
                    timeout,
                    signal,
                    close,
                })
            }
        }
    }

    /// Reads the piped stdout and stderr concurrently to their end, each up
    /// to `cap` bytes, then waits. A piped stdin that was not taken is closed
    /// first, so a child that reads it to its end goes on. A stream that is
    /// not piped reads as empty. Past the cap the child is killed with
    /// SIGKILL and [`Error::OutputTooLarge`] is returned.
    ///
    /// # Errors
    /// [`Error::OutputTooLarge`], [`Error::Read`], [`Error::Kill`] or
    /// [`Error::Wait`].
    pub async fn output(mut self, cap: usize) -> Result<Output, Error> {
        // `wait` would close it, but only after the reads: a child waiting
        // for the end of its stdin before it writes or exits would hang both.
        drop(self.take_stdin());
        let stdout = read_capped(self.take_stdout(), cap, Stream::Stdout);
        let stderr = read_capped(self.take_stderr(), cap, Stream::Stderr);
        match tokio::try_join!(stdout, stderr) {
            Ok((stdout, stderr)) => {
                let close = self.wait().await?;
                Ok(Output {
                    close,
                    stdout,
                    stderr,
                })
            }
            Err(ReadFailure::Cap(stream)) => {
                self.kill(Signal::SIGKILL)?;
                let close = self.wait().await?;
                Err(Error::OutputTooLarge {
                    program: self.program.clone(),
                    pid: self.pid,
                    stream,
                    cap,
                    close,
                })
            }
            Err(ReadFailure::Io(stream, source)) => {
                self.kill(Signal::SIGKILL)?;
                self.wait().await?;
                Err(Error::Read {
                    program: self.program.clone(),
                    pid: self.pid,
                    stream,
                    source,
                })
            }
        }
    }

    fn nix_pid(&self) -> Pid {
        // Pids fit in pid_t; a spawned child always has one.
        Pid::from_raw(self.pid as libc::pid_t)
    }

    fn kill_error(&self, signal: Signal, source: nix::Error) -> Error {
        Error::Kill {
            program: self.program.clone(),
            pid: self.pid,
            signal,
            source,
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    stream: Stream,
) -> Result<Vec<u8>, ReadFailure> {
    let Some(reader) = reader else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| ReadFailure::Io(stream, e))?;
    if buf.len() > cap {
        return Err(ReadFailure::Cap(stream));
    }
    Ok(buf)
}
