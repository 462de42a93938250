//! procwork's own upgrade (SIGUSR2): a new procwork, the program now on
//! disk, takes over every socket with no refused connection.
//!
//! The old procwork starts the new one (through the [shim](crate::shim),
//! so its `LISTEN_PID` is its own pid) with its original arguments, in a
//! session of its own and without a parent-death signal (it outlives the
//! old one), passing by systemd's convention every listening socket, then
//! the control socket (named [`CONTROL_NAME`]) and one end of a socketpair
//! ([`HANDOVER_NAME`]). The new procwork adopts them as sockets of
//! socket activation (cluster-core's one adoption), takes the listening
//! sockets for its `--listen`s by address and owns their files, serves the
//! control socket, starts its workers on the same sockets, and once all
//! are ready writes `ready` on the socketpair and writes its pid file. The
//! old one then reports `MAINPID=` to its service manager, stops
//! answering on the control socket, and stops its workers (stop signal,
//! grace) while the new ones already accept; it leaves the socket files,
//! control socket and pid file to the new procwork. If the new one exits
//! or is not ready in time, the old one SIGKILLs it (its workers die with
//! it) and serves on.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use spawn_core::{Child, Command, Stdio};
use tokio::io::AsyncReadExt;

use crate::error::Error;
use crate::listen::ListenSocket;
use crate::shim::SHIM_ARG;

/// The `LISTEN_FDNAMES` name of the control socket handed to a new procwork.
pub const CONTROL_NAME: &str = "procwork-control";

/// The name of the new procwork's end of the handover socketpair.
pub const HANDOVER_NAME: &str = "procwork-handover";

/// What a procwork inherited, sorted out.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listening sockets (socket activation, or from the old procwork).
    pub sockets: Vec<(Option<String>, OwnedFd)>,
    /// The control socket, when started by an upgrade.
    pub control: Option<OwnedFd>,
    /// The handover channel, when started by an upgrade.
    pub handover: Option<UnixStream>,
}

/// Sorts the inherited descriptors by name.
pub fn split(all: Vec<(Option<String>, OwnedFd)>) -> Inherited {
    let mut out = Inherited::default();
    for (name, fd) in all {
        match name.as_deref() {
            Some(CONTROL_NAME) => out.control = Some(fd),
            Some(HANDOVER_NAME) => out.handover = Some(UnixStream::from(fd)),
            _ => out.sockets.push((name, fd)),
        }
    }
    out
}

/// Starts the new procwork `exe` with `args`, handing it `sockets` and
/// `control`; returns it and the old procwork's end of the handover.
///
/// # Errors
/// [`Error::Upgrade`].
pub fn start(
    exe: &Path,
    args: &[OsString],
    sockets: &[ListenSocket],
    control: &ListenSocket,
) -> Result<(Child, UnixStream), Error> {
    let err = |why: String| Error::Upgrade { why };
    let (ours, theirs) = UnixStream::pair().map_err(|e| err(e.to_string()))?;
    let mut names: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
    names.extend([CONTROL_NAME, HANDOVER_NAME]);
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("procwork")
        .arg(SHIM_ARG)
        .arg(exe)
        .args(args)
        .env("LISTEN_FDS", names.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .new_session();
    let mut fd = 3;
    for socket in sockets.iter().chain([control]) {
        let dup = socket.fd.try_clone().map_err(|e| err(e.to_string()))?;
        command.inherit_fd(fd, dup);
        fd += 1;
    }
    command.inherit_fd(fd, OwnedFd::from(theirs));
    let child = command.spawn().map_err(|e| err(e.to_string()))?;
    Ok((child, ours))
}

/// Whether the new procwork says `ready` on `handover` within `limit`.
pub async fn wait_ready(handover: UnixStream, limit: Duration) -> bool {
    let Ok(()) = handover.set_nonblocking(true) else {
        return false;
    };
    let Ok(mut stream) = tokio::net::UnixStream::from_std(handover) else {
        return false;
    };
    let mut buf = [0u8; 16];
    let mut got = Vec::new();
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.starts_with(b"ready\n") {
                        return true;
                    }
                    if got.len() > 64 {
                        return false;
                    }
                }
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or(false)
}
