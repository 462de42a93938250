//! systemd's notify protocol, both ways.
//!
//! - **From the workers**: each worker gets a datagram socket of its own
//!   that procwork binds ([`NotifySocket`]), named by `NOTIFY_SOCKET`, and
//!   the same socket pre-connected at a descriptor named by
//!   [`NOTIFY_FD_ENV`] (for runtimes that cannot send a datagram to a
//!   Unix-domain address, as Node.js cannot: `fs.writeSync(fd, "READY=1")`).
//!   The socket has `SO_PASSCRED`, so each datagram carries the sender's
//!   pid as the kernel saw it: only the worker's own process is heard
//!   (systemd's `NotifyAccess=main`), not a child it started that inherited
//!   the variable. [`parse`] reads `READY=1`, `STOPPING=1`, `RELOADING=1`,
//!   `WATCHDOG=1`, `WATCHDOG=trigger` and `STATUS=`.
//! - **To procwork's own service manager** ([`ServiceNotifier`]):
//!   `READY=1`, `RELOADING=1` with `MONOTONIC_USEC`, `STOPPING=1`,
//!   `STATUS=` and `WATCHDOG=1`, best effort and never blocking.

#[cfg(test)]
mod tests;

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixDatagram as StdUnixDatagram};

use cluster_core::sd_notify::{monotonic_usec, notify_addr, watchdog_interval};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use crate::error::Error;

/// The variable naming the pre-connected notify descriptor.
pub const NOTIFY_FD_ENV: &str = "PROCWORK_NOTIFY_FD";

/// What one notify datagram says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notice {
    /// `READY=1`.
    pub ready: bool,
    /// `STOPPING=1`.
    pub stopping: bool,
    /// `RELOADING=1`.
    pub reloading: bool,
    /// `WATCHDOG=1`.
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: the program asks to be treated as hung.
    pub watchdog_trigger: bool,
    /// `STATUS=...`.
    pub status: Option<String>,
}

/// Parses one datagram: newline-separated `KEY=VALUE` assignments; unknown
/// keys and malformed lines are ignored (as systemd does).
pub fn parse(datagram: &[u8]) -> Notice {
    let mut notice = Notice::default();
    for line in String::from_utf8_lossy(datagram).lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => notice.ready = true,
            Some(("STOPPING", "1")) => notice.stopping = true,
            Some(("RELOADING", "1")) => notice.reloading = true,
            Some(("WATCHDOG", "1")) => notice.watchdog = true,
            Some(("WATCHDOG", "trigger")) => notice.watchdog_trigger = true,
            Some(("STATUS", status)) => notice.status = Some(status.to_owned()),
            _ => {}
        }
    }
    notice
}

/// A worker's notify socket: bound at a path, removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    /// Binds a datagram socket at `path` (replacing a leftover file) with
    /// `SO_PASSCRED`. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Notify`], [`Error::PathTooLong`].
    pub fn bind(path: &Path) -> Result<Self, Error> {
        if path.as_os_str().len() >= 108 {
            return Err(Error::PathTooLong {
                path: path.to_owned(),
            });
        }
        let err = |source: io::Error| Error::Notify {
            path: path.to_owned(),
            source,
        };
        let _ = std::fs::remove_file(path);
        let std = StdUnixDatagram::bind(path).map_err(err)?;
        setsockopt(&std, sockopt::PassCred, &true).map_err(|e| err(e.into()))?;
        std.set_nonblocking(true).map_err(err)?;
        let socket = UnixDatagram::from_std(std).map_err(err)?;
        Ok(NotifySocket {
            path: path.to_owned(),
            socket,
        })
    }

    /// Its path (the worker's `NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new datagram socket connected to this one, for the worker to
    /// inherit ([`NOTIFY_FD_ENV`]).
    ///
    /// # Errors
    /// The OS error of `socket` or `connect`.
    pub fn connected_client(&self) -> io::Result<OwnedFd> {
        let client = StdUnixDatagram::unbound()?;
        client.connect(&self.path)?;
        Ok(OwnedFd::from(client))
    }

    /// The next datagram and the pid of its sender (`None` if the kernel
    /// gave no credentials).
    ///
    /// # Errors
    /// The OS error of `recvmsg`.
    pub async fn recv(&self) -> io::Result<(Option<u32>, Vec<u8>)> {
        self.socket
            .async_io(Interest::READABLE, || {
                let mut buf = [0u8; 4096];
                let mut space = nix::cmsg_space!(UnixCredentials);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let (n, pid) = {
                    let msg = recvmsg::<()>(
                        self.socket.as_raw_fd(),
                        &mut iov,
                        Some(&mut space),
                        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                    )
                    .map_err(io::Error::from)?;
                    let mut pid = None;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmCredentials(cred) = c {
                                pid = u32::try_from(cred.pid()).ok();
                            }
                        }
                    }
                    (msg.bytes, pid)
                };
                Ok((pid, buf[..n].to_vec()))
            })
            .await
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// procwork's link to its own service manager, from `NOTIFY_SOCKET` and
/// `WATCHDOG_USEC` (read once, never changed). Every send is one
/// non-blocking datagram; a manager that is gone or slow loses it.
#[derive(Debug)]
pub struct ServiceNotifier {
    socket: Option<(StdUnixDatagram, UnixSocketAddr)>,
    watchdog: Option<Duration>,
}

impl ServiceNotifier {
    /// From the environment.
    pub fn from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .as_deref()
            .and_then(notify_addr)
            .and_then(|addr| {
                let sock = StdUnixDatagram::unbound().ok()?;
                sock.set_nonblocking(true).ok()?;
                Some((sock, addr))
            });
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        ServiceNotifier { socket, watchdog }
    }

    /// Sends one message (best effort).
    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.socket {
            let _ = sock.send_to_addr(msg.as_bytes(), addr);
        }
    }

    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), if the
    /// service manager watches procwork.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (systemd's `Type=notify-reload`).
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ));
    }
}
