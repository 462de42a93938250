//! [`Stdio`]: how one standard stream of a child is connected, with std's
//! constructors and conversions, so that one child's output becomes the
//! next child's input in one call (`seq 1 1000 | wc -l`).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::process;

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

/// How one standard stream of a child is connected: the parent's
/// ([`inherit`](Stdio::inherit), the default), a new pipe to the parent
/// ([`piped`](Stdio::piped)), `/dev/null` ([`null`](Stdio::null)), or any
/// open descriptor, converted with `From`: a [`File`], an [`OwnedFd`], or
/// another child's pipe end ([`ChildStdout`], [`ChildStderr`],
/// [`ChildStdin`], tokio's or std's).
///
/// A file or descriptor given to a [`Command`](crate::Command) stays open in
/// it, and each spawn hands the child its own copy (std's rule, so a command
/// spawned again writes to the same log file); it is closed when the command
/// is dropped. Another child's pipe end is different: it is handed to the
/// next spawn only, and the parent's copy is closed right after it, as a
/// shell does, so the writer of a pipeline sees `SIGPIPE` when the reader
/// ends early however long the command lives (spawning that command again
/// without a new stream is [`Error::StdioHandedOver`](crate::Error::StdioHandedOver)).
/// A child's pipe end is put back in blocking mode first.
///
/// ```
/// use spawn_core::{Command, Stdio};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), spawn_core::Error> {
/// let mut seq = Command::new("seq").args(["1", "1000"]).stdout(Stdio::piped()).spawn()?;
/// let seq_out = seq.take_stdout().expect("piped");
/// let wc = Command::new("wc").arg("-l").stdin(seq_out).output().await?;
/// assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "1000");
/// # assert!(seq.wait().await?.success());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Stdio(Kind);

#[derive(Debug, Default)]
enum Kind {
    #[default]
    Inherit,
    Piped,
    Null,
    Fd(OwnedFd),
    Stdout(ChildStdout),
    Stderr(ChildStderr),
    Stdin(ChildStdin),
    /// A std child's pipe end.
    Pipe(OwnedFd),
    /// A child's pipe end that went to an earlier spawn.
    HandedOver,
}

/// What one spawn gives the child for a stream.
#[derive(Debug)]
pub(crate) enum Given {
    Inherit,
    Piped,
    Null,
    /// A descriptor of this spawn's own (a copy, or a pipe end handed over).
    Fd(OwnedFd),
}

impl Given {
    /// std's `Stdio` for the same stream.
    pub(crate) fn into_std(self) -> process::Stdio {
        match self {
            Given::Inherit => process::Stdio::inherit(),
            Given::Piped => process::Stdio::piped(),
            Given::Null => process::Stdio::null(),
            Given::Fd(fd) => process::Stdio::from(fd),
        }
    }
}

/// Why a stream could not be given to a spawn.
#[derive(Debug)]
pub(crate) enum ToStdError {
    /// Another child's pipe end, already handed to an earlier spawn.
    HandedOver,
    /// Duplicating or converting the descriptor failed.
    Io(io::Error),
}

impl Stdio {
    /// The child shares the parent's stream (the default).
    pub fn inherit() -> Self {
        Stdio(Kind::Inherit)
    }

    /// A new pipe to the parent for each spawn, taken with
    /// [`Child::take_stdout`](crate::Child::take_stdout) and friends.
    pub fn piped() -> Self {
        Stdio(Kind::Piped)
    }

    /// `/dev/null`.
    pub fn null() -> Self {
        Stdio(Kind::Null)
    }

    /// What one spawn gives the child. A descriptor is duplicated, so that
    /// it stays here for the next spawn; another child's pipe end is handed
    /// over (in blocking mode) and only the spawn keeps it.
    pub(crate) fn for_spawn(&mut self) -> Result<Given, ToStdError> {
        let pipe = match std::mem::take(&mut self.0) {
            Kind::Inherit => return Ok(Given::Inherit),
            Kind::Piped => {
                self.0 = Kind::Piped;
                return Ok(Given::Piped);
            }
            Kind::Null => {
                self.0 = Kind::Null;
                return Ok(Given::Null);
            }
            Kind::Fd(fd) => {
                let copy = fd.try_clone();
                self.0 = Kind::Fd(fd);
                return copy.map(Given::Fd).map_err(ToStdError::Io);
            }
            Kind::HandedOver => {
                self.0 = Kind::HandedOver;
                return Err(ToStdError::HandedOver);
            }
            Kind::Stdout(pipe) => pipe.into_owned_fd(),
            Kind::Stderr(pipe) => pipe.into_owned_fd(),
            Kind::Stdin(pipe) => pipe.into_owned_fd(),
            Kind::Pipe(pipe) => Ok(pipe),
        };
        self.0 = Kind::HandedOver;
        pipe.map(Given::Fd).map_err(ToStdError::Io)
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Self {
        Stdio(Kind::Fd(fd))
    }
}

impl From<File> for Stdio {
    fn from(file: File) -> Self {
        Stdio(Kind::Fd(file.into()))
    }
}

impl From<ChildStdout> for Stdio {
    /// Another child's stdout as this child's stream: a pipe between them.
    fn from(pipe: ChildStdout) -> Self {
        Stdio(Kind::Stdout(pipe))
    }
}

impl From<ChildStderr> for Stdio {
    fn from(pipe: ChildStderr) -> Self {
        Stdio(Kind::Stderr(pipe))
    }
}

impl From<ChildStdin> for Stdio {
    fn from(pipe: ChildStdin) -> Self {
        Stdio(Kind::Stdin(pipe))
    }
}

impl From<process::ChildStdout> for Stdio {
    fn from(pipe: process::ChildStdout) -> Self {
        Stdio(Kind::Pipe(pipe.into()))
    }
}

impl From<process::ChildStderr> for Stdio {
    fn from(pipe: process::ChildStderr) -> Self {
        Stdio(Kind::Pipe(pipe.into()))
    }
}

impl From<process::ChildStdin> for Stdio {
    fn from(pipe: process::ChildStdin) -> Self {
        Stdio(Kind::Pipe(pipe.into()))
    }
}
