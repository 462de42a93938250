//! [`Child`]: the handle of a running child: its pid, its pipes, waiting,
//! signals (to it or its whole group), graceful stop, timeout and capture.

use std::ffi::OsString;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::{Close, Error, Output, Signal, Stream};

/// How long [`Child::wait_timeout`] lets the child react to its stop signal
/// before sending SIGKILL.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// A spawned child. Dropping it without waiting is allowed: the child is
/// reaped in the background and never left a zombie (and is sent SIGKILL
/// first if [`Command::kill_on_drop`](crate::Command::kill_on_drop) was set).
///
/// Its methods follow tokio's `Child` where the two overlap: [`id`](Child::id),
/// [`wait`](Child::wait), [`try_wait`](Child::try_wait),
/// [`start_kill`](Child::start_kill), [`kill`](Child::kill),
/// [`wait_with_output`](Child::wait_with_output); beyond them,
/// [`signal`](Child::signal) sends any signal, [`signal_group`](Child::signal_group)
/// reaches grandchildren, [`stop`](Child::stop) escalates and
/// [`wait_timeout`](Child::wait_timeout) bounds the wait.
#[derive(Debug)]
pub struct Child {
    process: Process,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    pid: u32,
    program: OsString,
    group_leader: bool,
    close: Option<Close>,
}

/// Who waits for the process: tokio (std's spawns), or its pidfd (our own
/// `posix_spawn`'s).
#[derive(Debug)]
enum Process {
    Tokio(tokio::process::Child),
    #[cfg(target_os = "linux")]
    Pidfd(crate::pidfd::Process),
}

impl Process {
    fn id(&self) -> Option<u32> {
        match self {
            Process::Tokio(child) => child.id(),
            #[cfg(target_os = "linux")]
            Process::Pidfd(process) => process.id(),
        }
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Process::Tokio(child) => child.wait().await,
            #[cfg(target_os = "linux")]
            Process::Pidfd(process) => process.wait().await,
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            Process::Tokio(child) => child.try_wait(),
            #[cfg(target_os = "linux")]
            Process::Pidfd(process) => process.try_wait(),
        }
    }
}

enum ReadFailure {
    Io(Stream, std::io::Error),
    Cap(Stream, usize),
}

impl Child {
    pub(crate) fn from_tokio(
        mut inner: tokio::process::Child,
        program: OsString,
        group_leader: bool,
    ) -> Self {
        // A child that was just spawned and not yet waited for has a pid.
        let pid = inner.id().unwrap_or_default();
        Child {
            stdin: inner.stdin.take(),
            stdout: inner.stdout.take(),
            stderr: inner.stderr.take(),
            process: Process::Tokio(inner),
            pid,
            program,
            group_leader,
            close: None,
        }
    }

    /// A child of our own `posix_spawn`, with the parent's ends of its
    /// pipes. If a pipe cannot be registered with the runtime, the child is
    /// sent SIGKILL (and reaped in the background) and the error returned.
    #[cfg(target_os = "linux")]
    pub(crate) fn from_posix(
        mut process: crate::pidfd::Process,
        ends: crate::command::ParentEnds,
        program: OsString,
        group_leader: bool,
    ) -> io::Result<Self> {
        let pipes = (|| {
            io::Result::Ok((
                ends.stdin
                    .map(|fd| ChildStdin::from_std(std::process::ChildStdin::from(fd)))
                    .transpose()?,
                ends.stdout
                    .map(|fd| ChildStdout::from_std(std::process::ChildStdout::from(fd)))
                    .transpose()?,
                ends.stderr
                    .map(|fd| ChildStderr::from_std(std::process::ChildStderr::from(fd)))
                    .transpose()?,
            ))
        })();
        let (stdin, stdout, stderr) = match pipes {
            Ok(pipes) => pipes,
            Err(error) => {
                process.start_kill();
                return Err(error);
            }
        };
        Ok(Child {
            pid: process.id().unwrap_or_default(),
            process: Process::Pidfd(process),
            stdin,
            stdout,
            stderr,
            program,
            group_leader,
            close: None,
        })
    }

    /// The child's process id while it may be signalled: `None` once the
    /// child was reaped (by [`wait`](Child::wait) or
    /// [`try_wait`](Child::try_wait)), when the number may already belong
    /// to another process (tokio's meaning). Errors keep the number, for
    /// logs.
    pub fn id(&self) -> Option<u32> {
        self.process.id()
    }

    /// The program as given to the [`Command`](crate::Command).
    pub fn program(&self) -> &std::ffi::OsStr {
        &self.program
    }

    /// Takes the writing end of a piped stdin (`None` unless
    /// [`Stdio::piped`](crate::Stdio::piped), or already taken). Any of the
    /// three converts into another child's [`Stdio`](crate::Stdio).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Takes the reading end of a piped stdout.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Takes the reading end of a piped stderr.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
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
        // So that a child reading its stdin to the end goes on.
        drop(self.stdin.take());
        let status = self.process.wait().await.map_err(|source| Error::Wait {
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
        let status = self.process.try_wait().map_err(|source| Error::Wait {
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
    pub fn signal(&mut self, signal: Signal) -> Result<(), Error> {
        if self.process.id().is_none() {
            return Ok(());
        }
        signal::kill(self.nix_pid(), signal.to_nix())
            .map_err(|errno| self.kill_error(signal, errno))
    }

    /// Sends SIGKILL to the child without waiting for it (tokio's
    /// `start_kill`); does nothing once the child was reaped.
    ///
    /// # Errors
    /// [`Error::Kill`] if the OS refuses.
    pub fn start_kill(&mut self) -> Result<(), Error> {
        self.signal(Signal::SIGKILL)
    }

    /// Sends SIGKILL and waits for the child (tokio's `kill`); returns the
    /// close, which says SIGKILL unless the child had closed by itself.
    ///
    /// # Errors
    /// [`Error::Kill`] or [`Error::Wait`].
    pub async fn kill(&mut self) -> Result<Close, Error> {
        self.start_kill()?;
        self.wait().await
    }

    /// Sends `signal` to the child's whole process group, grandchildren
    /// included. The child must lead its group
    /// ([`Command::process_group`](crate::Command::process_group)`(0)` or
    /// [`Command::new_session`](crate::Command::new_session)); an empty
    /// group is not an error.
    ///
    /// # Errors
    /// [`Error::NotGroupLeader`], or [`Error::Kill`] if the OS refuses.
    pub fn signal_group(&mut self, signal: Signal) -> Result<(), Error> {
        if !self.group_leader {
            return Err(Error::NotGroupLeader {
                program: self.program.clone(),
                pid: self.pid,
            });
        }
        match signal::killpg(self.nix_pid(), signal.to_nix()) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(errno) => Err(self.kill_error(signal, errno)),
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
        self.signal(signal)?;
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(result) => result,
            Err(_elapsed) => self.kill().await,
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

    /// Reads all of the piped stdout and stderr concurrently to their end,
    /// then waits (tokio's `wait_with_output`). A piped stdin that was not
    /// taken is closed first, so a child that reads it to its end goes on. A
    /// stream that is not piped reads as empty.
    ///
    /// # Errors
    /// [`Error::Read`], [`Error::Kill`] or [`Error::Wait`].
    pub async fn wait_with_output(self) -> Result<Output, Error> {
        self.read_output(None).await
    }

    /// [`wait_with_output`](Child::wait_with_output), each stream capped at
    /// `cap` bytes: past it the child is killed with SIGKILL and
    /// [`Error::OutputTooLarge`] is returned (Node's `maxBuffer`).
    ///
    /// # Errors
    /// [`Error::OutputTooLarge`], [`Error::Read`], [`Error::Kill`] or
    /// [`Error::Wait`].
    pub async fn wait_with_output_capped(self, cap: usize) -> Result<Output, Error> {
        self.read_output(Some(cap)).await
    }

    async fn read_output(mut self, cap: Option<usize>) -> Result<Output, Error> {
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
            Err(ReadFailure::Cap(stream, cap)) => {
                let close = self.kill().await?;
                Err(Error::OutputTooLarge {
                    program: self.program.clone(),
                    pid: self.pid,
                    stream,
                    cap,
                    close,
                })
            }
            Err(ReadFailure::Io(stream, source)) => {
                self.kill().await?;
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

    fn kill_error(&self, signal: Signal, errno: nix::Error) -> Error {
        Error::Kill {
            program: self.program.clone(),
            pid: self.pid,
            signal,
            source: errno.into(),
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: Option<usize>,
    stream: Stream,
) -> Result<Vec<u8>, ReadFailure> {
    let Some(reader) = reader else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    let Some(cap) = cap else {
        let mut reader = reader;
        reader
            .read_to_end(&mut buf)
            .await
            .map_err(|e| ReadFailure::Io(stream, e))?;
        return Ok(buf);
    };
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| ReadFailure::Io(stream, e))?;
    if buf.len() > cap {
        return Err(ReadFailure::Cap(stream, cap));
    }
    Ok(buf)
}
