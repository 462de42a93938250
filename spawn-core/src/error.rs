//! The one error type of the crate: every way a spawn, a wait, a signal or a
//! capture can fail, with the program it concerns kept as a field.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Close, Signal};

/// Which standard stream of a child an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stream {
    /// The child's standard input.
    Stdin,
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// Everything that can go wrong while spawning, waiting for, signalling or
/// capturing a child. The Rust form of Node's `'error'` event: it names the
/// program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program does not exist (or is not on `PATH`).
    #[error("program not found: {program:?}")]
    NotFound {
        /// The program as given to [`Command::new`](crate::Command::new).
        program: OsString,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program exists but may not be executed.
    #[error("permission denied to run {program:?}")]
    PermissionDenied {
        /// The program.
        program: OsString,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The working directory does not exist or is not a directory.
    #[error("bad working directory {cwd:?} for {program:?}")]
    BadCwd {
        /// The program.
        program: OsString,
        /// The working directory asked for.
        cwd: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other failure of the spawn itself (resource limits, a failing
    /// `setsid`, `prctl` or `dup2` in the child, ...).
    #[error("could not spawn {program:?}")]
    Spawn {
        /// The program.
        program: OsString,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A descriptor target given to [`Command::inherit_fd`](crate::Command::inherit_fd)
    /// is a stdio number (0, 1, 2), negative, or given twice.
    #[error("bad descriptor target {child_fd} for {program:?}")]
    BadFdTarget {
        /// The program.
        program: OsString,
        /// The offending target number.
        child_fd: RawFd,
    },
    /// A descriptor target given to [`Command::inherit_fd`](crate::Command::inherit_fd)
    /// is not below the process's open-file limit (`RLIMIT_NOFILE`), so no
    /// descriptor can have that number in the child. Checked in the parent,
    /// before any fork.
    #[error(
        "descriptor target {child_fd} for {program:?} is not below the open-file limit {limit}"
    )]
    FdTargetAboveLimit {
        /// The program.
        program: OsString,
        /// The offending target number.
        child_fd: RawFd,
        /// The soft `RLIMIT_NOFILE`: targets must be below it.
        limit: u64,
    },
    /// A command was spawned again without a new descriptor for a target
    /// that [`Command::inherit_fd`](crate::Command::inherit_fd) handed to an
    /// earlier spawn (the parent's copy was closed after it).
    #[error(
        "descriptor target {child_fd} for {program:?} went to an earlier spawn: give a new one"
    )]
    FdHandedOver {
        /// The program.
        program: OsString,
        /// The target number without a descriptor.
        child_fd: RawFd,
    },
    /// A command was spawned again with a stream made from another child's
    /// pipe end, which went to the earlier spawn (see [`Stdio`](crate::Stdio)).
    #[error("the {stream} of {program:?} was a pipe handed to an earlier spawn: give a new one")]
    StdioHandedOver {
        /// The program.
        program: OsString,
        /// The stream.
        stream: Stream,
    },
    /// The spawn itself panicked (tokio does, in a runtime built without its
    /// I/O driver); the other spawns of a batch went on.
    #[error("spawning {program:?} panicked: {message}")]
    SpawnPanicked {
        /// The program.
        program: OsString,
        /// The panic's message.
        message: String,
    },
    /// The async API was used outside a tokio runtime.
    #[error("no tokio runtime to spawn {program:?} in")]
    NoRuntime {
        /// The program.
        program: OsString,
    },
    /// Waiting for the child failed.
    #[error("could not wait for {program:?} (pid {pid})")]
    Wait {
        /// The program.
        program: OsString,
        /// The child's pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Sending a signal failed.
    #[error("could not send {signal} to {program:?} (pid {pid})")]
    Kill {
        /// The program.
        program: OsString,
        /// The child's pid.
        pid: u32,
        /// The signal.
        signal: Signal,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// [`Child::signal_group`](crate::Child::signal_group) on a child that does
    /// not lead its own process group.
    #[error("{program:?} (pid {pid}) does not lead a process group")]
    NotGroupLeader {
        /// The program.
        program: OsString,
        /// The child's pid.
        pid: u32,
    },
    /// The child outlived its timeout and was stopped.
    #[error("{program:?} (pid {pid}) timed out after {timeout:?} and was stopped with {signal}")]
    TimedOut {
        /// The program.
        program: OsString,
        /// The child's pid.
        pid: u32,
        /// The timeout that expired.
        timeout: Duration,
        /// The signal sent when it expired.
        signal: Signal,
        /// How the child closed after being stopped.
        close: Close,
    },
    /// The child wrote more than the capture cap to one stream and was
    /// killed (Node's `maxBuffer`).
    #[error("{program:?} (pid {pid}) wrote more than {cap} bytes to {stream} and was killed")]
    OutputTooLarge {
        /// The program.
        program: OsString,
        /// The child's pid.
        pid: u32,
        /// The stream that went past the cap.
        stream: Stream,
        /// The cap, in bytes.
        cap: usize,
        /// How the child closed after being killed.
        close: Close,
    },
    /// Reading a captured stream failed.
    #[error("could not read the {stream} of {program:?} (pid {pid})")]
    Read {
        /// The program.
        program: OsString,
        /// The child's pid.
        pid: u32,
        /// The stream.
        stream: Stream,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Maps the OS error of a failed spawn to the variant that names its cause.
    pub(crate) fn from_spawn(program: OsString, cwd: Option<&PathBuf>, source: io::Error) -> Self {
        if let Some(cwd) = cwd {
            // posix_spawn reports a failed chdir as ENOENT, like a missing
            // program: tell the two apart by looking at the directory.
            if let Err(source) = check_dir(cwd) {
                return Error::BadCwd {
                    program,
                    cwd: cwd.clone(),
                    source,
                };
            }
        }
        match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound { program, source },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { program, source },
            _ => Error::Spawn { program, source },
        }
    }
}

/// `Ok` when `path` is a directory.
pub(crate) fn check_dir(path: &PathBuf) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::ENOTDIR))
    }
}
