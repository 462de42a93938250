//! What a worker listens on besides a TCP address: [`UnixAddr`] (a
//! Unix-domain socket's path or abstract name), [`ListenTarget`] (what a
//! `ListenOn` request asks for, named in [`Error::ListenOn`](crate::Error))
//! and [`Endpoint`] (what [`Event::ListeningOn`](crate::Event) reports).

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The address of a Unix-domain stream socket.
///
/// Converts from a path (`&str`, `&Path`, `PathBuf`): a filesystem path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum UnixAddr {
    /// A socket file at this path (at most 107 bytes: `sun_path`).
    Path(PathBuf),
    /// A name in Linux's abstract namespace, without the leading NUL (at
    /// most 107 bytes): no file, no permissions, gone when the last socket
    /// bound to it closes.
    Abstract(Vec<u8>),
}

impl UnixAddr {
    /// A name in the abstract namespace (Linux).
    pub fn abstract_name(name: impl Into<Vec<u8>>) -> Self {
        UnixAddr::Abstract(name.into())
    }

    /// The filesystem path, if it is one.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(p) => Some(p),
            UnixAddr::Abstract(_) => None,
        }
    }

    pub(crate) fn to_wire(&self) -> cluster_ipc::UnixAddr {
        match self {
            UnixAddr::Path(p) => cluster_ipc::UnixAddr::Path(p.as_os_str().as_bytes().to_vec()),
            UnixAddr::Abstract(n) => cluster_ipc::UnixAddr::Abstract(n.clone()),
        }
    }

    pub(crate) fn from_wire(addr: cluster_ipc::UnixAddr) -> Self {
        match addr {
            cluster_ipc::UnixAddr::Path(p) => UnixAddr::Path(OsStr::from_bytes(&p).into()),
            cluster_ipc::UnixAddr::Abstract(n) => UnixAddr::Abstract(n),
        }
    }
}

impl From<&str> for UnixAddr {
    fn from(path: &str) -> Self {
        UnixAddr::Path(path.into())
    }
}

impl From<&Path> for UnixAddr {
    fn from(path: &Path) -> Self {
        UnixAddr::Path(path.into())
    }
}

impl From<PathBuf> for UnixAddr {
    fn from(path: PathBuf) -> Self {
        UnixAddr::Path(path)
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

/// What a worker asked the primary to listen on, besides a TCP address
/// (which [`Cluster::inherited_fd`](crate::Cluster::inherited_fd) also
/// takes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ListenTarget {
    /// A TCP address (`Worker::listen`; its errors are
    /// [`Error::Listen`](crate::Error::Listen)).
    Tcp(SocketAddr),
    /// A Unix-domain stream socket (`Worker::listen_unix`).
    Unix(UnixAddr),
    /// A UDP address (`Worker::bind_udp`).
    Udp(SocketAddr),
    /// A descriptor number in the primary (`Worker::listen_fd`).
    Fd(i32),
}

impl fmt::Display for ListenTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenTarget::Tcp(a) => write!(f, "tcp:{a}"),
            ListenTarget::Unix(a) => write!(f, "unix:{a}"),
            ListenTarget::Udp(a) => write!(f, "udp:{a}"),
            ListenTarget::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

/// What a worker listens on besides a TCP address (a TCP listener, even one
/// reached through a descriptor, is reported by `Event::Listening`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Endpoint {
    /// A Unix-domain stream socket.
    Unix(UnixAddr),
    /// A UDP socket (a requested port 0 resolved).
    Udp(SocketAddr),
}

/// `unix:/run/app.sock`, `unix:@name`, `udp:127.0.0.1:5000`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(a) => write!(f, "unix:{a}"),
            Endpoint::Udp(a) => write!(f, "udp:{a}"),
        }
    }
}
