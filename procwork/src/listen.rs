//! The listening sockets procwork owns for its whole life and passes to
//! every worker: `--listen tcp://HOST:PORT` and `--listen unix:PATH`
//! (optionally `NAME=` before either, the name given in `LISTEN_FDNAMES`),
//! and the sockets procwork itself was given by socket activation.
//!
//! procwork binds each socket once and never accepts on it: the workers
//! do, all on the same socket, so a connection queued in its backlog when a
//! worker exits is accepted by another, and a client connecting while every
//! worker restarts waits in the backlog instead of being refused. A socket
//! file procwork created is removed when procwork exits (if it is still the
//! same file); an inherited one belongs to whoever made it.

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr, bind,
    getsockname, listen, setsockopt, socket, sockopt,
};

use crate::error::{Error, ValueError};

/// The backlog of each listening socket (the kernel caps it at
/// `net.core.somaxconn`). A worker that calls `listen()` again on the
/// shared socket (Node does) changes it for all.
pub const BACKLOG: i32 = 1024;

/// The name a socket gets in `LISTEN_FDNAMES` when none was given (what
/// `sd_listen_fds_with_names` reports for an unnamed socket).
pub const DEFAULT_NAME: &str = "unknown";

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address (`tcp://127.0.0.1:3000`, `tcp://[::1]:3000`,
    /// `tcp://localhost:3000`, resolved once).
    Tcp(SocketAddr),
    /// A Unix-domain stream socket at a path.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One `--listen` value: an optional name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The name passed in `LISTEN_FDNAMES` (`None`: [`DEFAULT_NAME`]).
    pub name: Option<String>,
    /// The address.
    pub addr: ListenAddr,
}

impl FromStr for ListenSpec {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let bad = |why: &'static str| ValueError::Listen {
            text: text.to_owned(),
            why,
        };
        let (name, rest) = match text.split_once('=') {
            Some((name, rest)) if !name.contains(':') && !name.contains('/') => {
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    return Err(bad("a name is letters, digits, `-`, `_` or `.`"));
                }
                (Some(name.to_owned()), rest)
            }
            _ => (None, text),
        };
        let addr = if let Some(hostport) = rest.strip_prefix("tcp://") {
            let (host, port) = hostport
                .rsplit_once(':')
                .ok_or_else(|| bad("expected tcp://HOST:PORT"))?;
            let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(bad("expected tcp://HOST:PORT"));
            }
            let addr = (host, port)
                .to_socket_addrs()
                .map_err(|_| bad("the host does not resolve"))?
                .next()
                .ok_or_else(|| bad("the host does not resolve"))?;
            ListenAddr::Tcp(addr)
        } else if let Some(path) = rest.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("expected unix:PATH"));
            }
            ListenAddr::Unix(PathBuf::from(path))
        } else {
            return Err(bad("expected tcp://HOST:PORT or unix:PATH"));
        };
        Ok(ListenSpec { name, addr })
    }
}

/// A listening socket procwork holds, and what to clean up at its end.
#[derive(Debug)]
pub struct ListenSocket {
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// What it listens on (the resolved port for `tcp://HOST:0`).
    pub addr: ListenAddr,
    /// The socket (close-on-exec; workers get duplicates).
    pub fd: OwnedFd,
    /// The socket file to remove at exit, and its inode, when procwork
    /// created it (or took it over from the procwork it upgraded).
    created: Option<(PathBuf, u64)>,
    /// Set once the socket was handed to a new procwork: its file stays.
    keep_file: AtomicBool,
}

impl ListenSocket {
    /// Bind and listen on `spec` (a Unix-domain socket file is given `mode`).
    ///
    /// # Errors
    /// [`Error::Listen`], [`Error::SocketInUse`], [`Error::PathTooLong`].
    pub fn open(spec: &ListenSpec, mode: u32) -> Result<Self, Error> {
        let name = spec.name.clone().unwrap_or_else(|| DEFAULT_NAME.to_owned());
        match &spec.addr {
            ListenAddr::Tcp(addr) => {
                let fd = bind_tcp(*addr).map_err(|source| Error::Listen {
                    addr: spec.addr.to_string(),
                    source,
                })?;
                let local = local_tcp_addr(&fd).unwrap_or(*addr);
                Ok(ListenSocket {
                    name,
                    addr: ListenAddr::Tcp(local),
                    fd,
                    created: None,
                    keep_file: AtomicBool::new(false),
                })
            }
            ListenAddr::Unix(path) => {
                let (fd, ino) = bind_unix(path, mode)?;
                Ok(ListenSocket {
                    name,
                    addr: spec.addr.clone(),
                    fd,
                    created: Some((path.clone(), ino)),
                    keep_file: AtomicBool::new(false),
                })
            }
        }
    }

    /// An inherited socket (socket activation), described by its local
    /// address. Its socket file, if any, is not procwork's to remove.
    pub fn inherited(name: Option<String>, fd: OwnedFd) -> Self {
        let addr = local_tcp_addr(&fd)
            .map(ListenAddr::Tcp)
            .or_else(|| local_unix_path(&fd).map(ListenAddr::Unix))
            .unwrap_or_else(|| ListenAddr::Unix(PathBuf::from("(inherited)")));
        ListenSocket {
            name: name.unwrap_or_else(|| DEFAULT_NAME.to_owned()),
            addr,
            fd,
            created: None,
            keep_file: AtomicBool::new(false),
        }
    }

    /// Makes a socket inherited from the procwork this one upgraded
    /// procwork's own: its file (if any) is removed at exit.
    pub fn adopt_file(&mut self) {
        if let ListenAddr::Unix(path) = &self.addr
            && let Ok(meta) = std::fs::symlink_metadata(path)
        {
            self.created = Some((path.clone(), meta.ino()));
        }
    }

    /// Leaves the socket file in place at exit: a new procwork holds the
    /// socket now.
    pub fn keep_file(&self) {
        self.keep_file.store(true, Ordering::Relaxed);
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if self.keep_file.load(Ordering::Relaxed) {
            return;
        }
        if let Some((path, ino)) = &self.created {
            // Only if it is still the file we made (not a successor's).
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Opens the sockets of `specs`, taking an inherited socket for a spec of
/// the same address (for `tcp://HOST:0`, of the same host) instead of
/// binding it, then appends the inherited sockets no spec named (in their
/// order). With `adopt`, the inherited sockets' files become procwork's
/// to remove (they come from the procwork this one upgraded).
///
/// # Errors
/// The first socket that cannot be opened ([`ListenSocket::open`]).
pub fn open_all(
    specs: &[ListenSpec],
    mode: u32,
    inherited: Vec<(Option<String>, OwnedFd)>,
    adopt: bool,
) -> Result<Vec<ListenSocket>, Error> {
    let mut inherited: Vec<Option<ListenSocket>> = inherited
        .into_iter()
        .map(|(name, fd)| Some(ListenSocket::inherited(name, fd)))
        .collect();
    let mut out = Vec::with_capacity(specs.len() + inherited.len());
    for (i, spec) in specs.iter().enumerate() {
        // From an upgrade, the sockets come in the order of the same
        // `--listen`s; from socket activation, they are found by address.
        let taken = if adopt {
            inherited.get_mut(i).and_then(Option::take)
        } else {
            inherited
                .iter_mut()
                .find(|s| {
                    s.as_ref()
                        .is_some_and(|s| same_address(&spec.addr, &s.addr))
                })
                .and_then(Option::take)
        };
        match taken {
            Some(mut socket) => {
                if let Some(name) = &spec.name {
                    socket.name.clone_from(name);
                }
                if adopt && let ListenAddr::Unix(_) = spec.addr {
                    socket.addr = spec.addr.clone();
                    socket.adopt_file();
                }
                out.push(socket);
            }
            None => out.push(ListenSocket::open(spec, mode)?),
        }
    }
    out.extend(inherited.into_iter().flatten());
    Ok(out)
}

/// Whether an inherited socket at `have` serves a `--listen` of `want`.
fn same_address(want: &ListenAddr, have: &ListenAddr) -> bool {
    match (want, have) {
        (ListenAddr::Tcp(w), ListenAddr::Tcp(h)) => w == h || (w.port() == 0 && w.ip() == h.ip()),
        (w, h) => w == h,
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(fd)
}

/// Binds a Unix-domain socket at `path` with `mode`. A stale socket file
/// (nothing accepts there: a connect is refused) is replaced; a live one is
/// [`Error::SocketInUse`]. The socket is bound under a temporary name,
/// given its mode, then renamed into place, so the path never exists with
/// another mode.
fn bind_unix(path: &Path, mode: u32) -> Result<(OwnedFd, u64), Error> {
    let listen_err = |source: std::io::Error| Error::Listen {
        addr: format!("unix:{}", path.display()),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::SocketInUse {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(listen_err(e)),
        },
        Ok(_) => {
            return Err(listen_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let sun = UnixAddr::new(&tmp).map_err(|_| Error::PathTooLong {
        path: path.to_owned(),
    })?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| listen_err(e.into()))?;
    bind(fd.as_raw_fd(), &sun).map_err(|e| listen_err(e.into()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| listen(&fd, Backlog::new(BACKLOG)?).map_err(Into::into))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::symlink_metadata(path));
    match placed {
        Ok(meta) => Ok((fd, meta.ino())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(listen_err(e))
        }
    }
}

fn local_tcp_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

fn local_unix_path(fd: &OwnedFd) -> Option<PathBuf> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if addr.family() != Some(AddressFamily::Unix) {
        return None;
    }
    addr.as_unix_addr()?.path().map(Path::to_path_buf)
}
