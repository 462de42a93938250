//! The crate's errors: [`ValueError`] for a value given on the command line,
//! [`Error`] for everything a running procwork or a subcommand can meet.

use std::io;
use std::path::PathBuf;

/// A command-line value that does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A duration (`300ms`, `5s`, `2m`, `1h`).
    #[error("invalid duration `{text}`: {why}")]
    Duration {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A byte size (`512M`, `1G`).
    #[error("invalid size `{text}`: {why}")]
    Size {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A listening address (`tcp://HOST:PORT`, `unix:PATH`).
    #[error("invalid listen address `{text}`: {why}")]
    Listen {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A signal name (`SIGTERM`, `TERM`, `15`).
    #[error("unknown signal `{text}`")]
    Signal {
        /// The text given.
        text: String,
    },
    /// A file mode (`0660`).
    #[error("invalid mode `{text}`: write it in octal, as in 0660")]
    Mode {
        /// The text given.
        text: String,
    },
    /// A name (`--name`): letters, digits, `-`, `_` and `.`.
    #[error("invalid name `{text}`: use letters, digits, `-`, `_` and `.`")]
    Name {
        /// The text given.
        text: String,
    },
}

/// Everything that can go wrong in procwork.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listening socket could not be opened.
    #[error("could not listen on {addr}")]
    Listen {
        /// The address, as given.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A Unix-domain socket path is taken by a socket that accepts
    /// connections (another server runs there).
    #[error("{} is in use by another server", path.display())]
    SocketInUse {
        /// The path.
        path: PathBuf,
    },
    /// A socket path does not fit in a `sockaddr_un` (108 bytes).
    #[error("socket path {} is too long for a Unix-domain socket", path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// The directory of the control socket, pid file and notify sockets is
    /// not safe to use (owned by another user, or writable by others).
    #[error("runtime directory {} is unsafe: {why}", path.display())]
    UnsafeRuntimeDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// A file or directory of procwork's own could not be made or read.
    #[error("{what} {}", path.display())]
    File {
        /// What was being done (`could not create`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another procwork already serves this control socket.
    #[error("procwork is already running here (control socket {}); give another --name", path.display())]
    AlreadyRunning {
        /// The control socket.
        path: PathBuf,
    },
    /// No procwork answers on the control socket.
    #[error("no procwork is running for this directory or name (control socket {})", path.display())]
    NotRunning {
        /// The control socket.
        path: PathBuf,
        /// The OS error of the connect.
        #[source]
        source: io::Error,
    },
    /// The control connection failed, or its peer sent what is not the
    /// protocol.
    #[error("control connection to {} failed: {why}", path.display())]
    Control {
        /// The control socket.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The running procwork refused a request.
    #[error("procwork refused the request: {reason}")]
    Refused {
        /// Its reason.
        reason: String,
    },
    /// The program to run cannot be found or is not executable.
    #[error("program `{program}` not found (or not executable) on PATH")]
    ProgramNotFound {
        /// The program, as given.
        program: String,
    },
    /// A worker's notify socket could not be made.
    #[error("could not create the notify socket {}", path.display())]
    Notify {
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("could not install the signal handlers")]
    Signals(#[source] io::Error),
    /// A worker could not be started.
    #[error("could not start worker {worker} of slot {slot}")]
    Spawn {
        /// The worker's id.
        worker: u64,
        /// Its slot.
        slot: u64,
        /// What spawn-core reported (it names the program and the OS error).
        #[source]
        source: spawn_core::Error,
    },
    /// A listening socket could not be duplicated for a worker.
    #[error("could not duplicate a listening socket for worker {worker}")]
    Descriptor {
        /// The worker's id.
        worker: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// procwork's own upgrade could not start the new procwork.
    #[error("upgrade failed: {why}")]
    Upgrade {
        /// Why.
        why: String,
    },
    /// A reload did not complete: a new worker failed to become ready, and
    /// the slots not yet replaced keep their old workers.
    #[error("reload failed: {reason}")]
    ReloadFailed {
        /// What failed.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
