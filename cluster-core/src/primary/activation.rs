//! Socket activation: the listening sockets a service manager (systemd's
//! `LISTEN_FDS` protocol) or an upgrading primary handed to this process.
//!
//! When `LISTEN_PID` is this process's pid, descriptors `3 ..
//! 3 + LISTEN_FDS` are ours (named by `LISTEN_FDNAMES`, colon-separated).
//! They are adopted once per process, at the first [`Cluster::new`]
//! (`crate::Cluster`): each is duplicated close-on-exec and the original
//! closed, so a worker never inherits one by accident, and each is owned by
//! exactly one [`Activated`] until a listener takes it. Each is recognised
//! by what it is (`SO_TYPE` and its address): a TCP listener, a Unix-domain
//! stream listener or a UDP socket, found by its address (a request for
//! port 0 takes one on the same IP address) or by its descriptor number
//! here; anything else is only handed on by an upgrade. The environment is
//! only read, never changed (the primary is multi-threaded by then); the
//! variables are removed from the environment of every child instead
//! ([`CHILD_ENV_REMOVE`]), so no worker ever sees a `LISTEN_PID` naming it.
//!
//! The descriptor that follows the sockets, when [`UPGRADE_FD_ENV`] names
//! it, is the channel of a zero-downtime upgrade (`upgrade.rs`): this
//! primary tells the one that started it that it is ready there.

#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::sys::socket::{SockType, getsockopt, sockopt};

use super::balancer::{Held, InheritedSocket, ListenKey};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// Names the upgrade channel's descriptor in a new primary.
pub(crate) const UPGRADE_FD_ENV: &str = "PROCWORK_UPGRADE_FD";

/// Variables no worker (or other child) may inherit.
pub(crate) const CHILD_ENV_REMOVE: &[&str] = &[
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    UPGRADE_FD_ENV,
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// One inherited socket no listener took yet.
#[derive(Debug)]
enum Activated {
    /// A TCP, Unix-domain or UDP socket, found by its keys.
    Known {
        name: Option<String>,
        keys: Vec<ListenKey>,
        socket: InheritedSocket,
    },
    /// Something else: only handed on by an upgrade.
    Other { name: Option<String>, fd: OwnedFd },
}

impl Activated {
    fn name(&self) -> Option<&String> {
        match self {
            Activated::Known { name, .. } | Activated::Other { name, .. } => name.as_ref(),
        }
    }

    fn answers(&self, key: &ListenKey) -> bool {
        matches!(self, Activated::Known { keys, .. } if keys.iter().any(|k| k.answers(key)))
    }
}

/// What an inherited descriptor is: a TCP or a Unix-domain stream
/// listener, or a UDP socket.
fn recognise(fd: OwnedFd) -> Result<InheritedSocket, OwnedFd> {
    let stream = match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => true,
        Ok(SockType::Datagram) => false,
        _ => return Err(fd),
    };
    let Ok(dup) = fd.try_clone() else {
        return Err(fd);
    };
    if !stream {
        let udp = std::net::UdpSocket::from(dup);
        return match udp.local_addr() {
            Ok(_) => Ok(InheritedSocket::Udp(udp)),
            Err(_) => Err(fd),
        };
    }
    // `local_addr` checks the address family.
    let tcp = std::net::TcpListener::from(dup);
    if tcp.local_addr().is_ok() {
        return Ok(InheritedSocket::Tcp(tcp));
    }
    let unix = std::os::unix::net::UnixListener::from(OwnedFd::from(tcp));
    match unix.local_addr() {
        Ok(_) => Ok(InheritedSocket::Unix(unix)),
        Err(_) => Err(fd),
    }
}

/// What this process inherited.
#[derive(Debug, Default)]
struct Adopted {
    sockets: Vec<Activated>,
    upgrade: Option<UnixStream>,
}

static ADOPTED: OnceLock<Mutex<Adopted>> = OnceLock::new();

fn adopted() -> MutexGuard<'static, Adopted> {
    ADOPTED
        .get_or_init(|| Mutex::new(adopt_from_env()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Adopt what the environment names, once per process (later calls do
/// nothing).
pub(crate) fn adopt() {
    drop(adopted());
}

/// The descriptors named and their names, and the upgrade channel's.
pub(crate) type Parsed = (Vec<(RawFd, Option<String>)>, Option<RawFd>);

/// The environment as the protocol reads it, parsed: which descriptors are
/// ours and their names, and the upgrade channel's descriptor. `None` when
/// the variables do not name this process.
pub(crate) fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    upgrade_fd: Option<&str>,
    me: u32,
) -> Option<Parsed> {
    let pid: u32 = listen_pid?.trim().parse().ok()?;
    if pid != me {
        return None;
    }
    let n: RawFd = listen_fds.unwrap_or("0").trim().parse().ok()?;
    if !(0..=1024).contains(&n) {
        return None;
    }
    let mut names = names.map(|s| s.split(':'));
    let fds = (0..n)
        .map(|i| {
            let name = names
                .as_mut()
                .and_then(Iterator::next)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            (LISTEN_FDS_START + i, name)
        })
        .collect();
    let upgrade = upgrade_fd
        .and_then(|s| s.trim().parse::<RawFd>().ok())
        .filter(|fd| *fd >= LISTEN_FDS_START + n);
    Some((fds, upgrade))
}

fn adopt_from_env() -> Adopted {
    let var = |k: &str| std::env::var(k).ok();
    let Some((fds, upgrade)) = parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        var(UPGRADE_FD_ENV).as_deref(),
        std::process::id(),
    ) else {
        return Adopted::default();
    };
    let mut out = Adopted::default();
    for (raw, name) in fds {
        if let Some(fd) = take_cloexec(raw) {
            out.sockets.push(match recognise(fd) {
                Ok(socket) => Activated::Known {
                    name,
                    keys: socket.keys(),
                    socket,
                },
                Err(fd) => Activated::Other { name, fd },
            });
        }
    }
    out.upgrade = upgrade.and_then(take_cloexec).map(UnixStream::from);
    out
}

/// Take over descriptor `raw`: a close-on-exec duplicate, the original
/// closed. `None` if it is not open.
fn take_cloexec(raw: RawFd) -> Option<OwnedFd> {
    // SAFETY: the protocol hands descriptors `3 .. 3 + LISTEN_FDS` (and the
    // upgrade channel after them) to this process; nothing else in it owns
    // them, and this runs once per process (`OnceLock`). The borrow lasts
    // only for the duplication, which fails harmlessly (EBADF) if the
    // descriptor is not open.
    let dup = unsafe { BorrowedFd::borrow_raw(raw) }
        .try_clone_to_owned()
        .ok()?;
    // SAFETY: as above, and the duplication proved it open; owning it here
    // closes it on drop, exactly once.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
    debug_assert_ne!(dup.as_raw_fd(), raw);
    Some(dup)
}

/// The inherited socket that answers to `key`, taken (each is given out
/// once) with its keys and name; `None` if there is none.
pub(crate) fn take(key: &ListenKey) -> Option<Held> {
    let mut ad = adopted();
    let at = ad.sockets.iter().position(|s| s.answers(key))?;
    match ad.sockets.remove(at) {
        Activated::Known { name, keys, socket } => Some(Held { keys, socket, name }),
        other @ Activated::Other { .. } => {
            ad.sockets.insert(at, other);
            None
        }
    }
}

/// The descriptor number of the inherited socket that answers to `key`,
/// not taken.
pub(crate) fn held_fd(key: &ListenKey) -> Option<RawFd> {
    adopted().sockets.iter().find_map(|s| match s {
        Activated::Known { socket, .. } if s.answers(key) => Some(socket.raw_fd()),
        _ => None,
    })
}

/// Duplicates of the inherited sockets no listener took yet (an upgrade
/// hands them on too), with their names.
pub(crate) fn untaken() -> Vec<(Option<String>, OwnedFd)> {
    adopted()
        .sockets
        .iter()
        .filter_map(|s| {
            let fd = match s {
                Activated::Known { socket, .. } => socket.duplicate().ok()?,
                Activated::Other { fd, .. } => fd.try_clone().ok()?,
            };
            Some((s.name().cloned(), fd))
        })
        .collect()
}

/// The upgrade channel, if this primary was started by an upgrade (taken
/// once).
pub(crate) fn take_upgrade_channel() -> Option<UnixStream> {
    adopted().upgrade.take()
}
