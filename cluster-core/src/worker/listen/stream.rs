//! The stream types a [`Listener`](super::Listener) yields: TCP's and
//! Unix-domain's, behind one sealed trait, [`ListenStream`], so the
//! listener, its connections and their accounting are written once (as
//! hyper serves any `Listener` and tokio has one `PollEvented` for every
//! descriptor).

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::endpoint::UnixAddr;

/// A stream a worker's [`Listener`](crate::Listener) yields:
/// [`tokio::net::TcpStream`] ([`Listener`](crate::Listener),
/// [`Connection`](crate::Connection)) or [`tokio::net::UnixStream`]
/// ([`UnixListener`](crate::UnixListener),
/// [`UnixConnection`](crate::UnixConnection)). Sealed: implemented for
/// those two only.
pub trait ListenStream:
    sealed::Kind + AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + Sync + Debug + 'static
{
    /// What the listener is bound to: a [`SocketAddr`], a [`UnixAddr`].
    type Addr: Clone + Debug + Send + Sync + Unpin + 'static;
    /// A client's address, as `accept` returns it: a [`SocketAddr`], a
    /// [`tokio::net::unix::SocketAddr`] (usually unnamed).
    type Peer: Clone + Debug + Send + Sync + Unpin + 'static;
}

pub(crate) mod sealed {
    //! What only the crate calls on a [`ListenStream`](super::ListenStream).

    use super::{Context, ListenStream, OwnedFd, Poll, SocketAddr, io};

    /// The kind-specific steps of the one listener: adopting a handed-over
    /// descriptor, the shared socket under `none`, the peer's address.
    #[allow(
        unreachable_pub,
        reason = "sealed: public as `ListenStream`'s supertrait, nameable by no user"
    )]
    pub trait Kind: Sized {
        /// The listening socket a worker accepts on itself (`none`).
        type Shared: std::fmt::Debug + Send + Sync + 'static;

        /// A handed-over connection's descriptor, as a stream of this
        /// runtime.
        fn adopt(fd: OwnedFd) -> io::Result<Self>;

        /// The shared listening socket, registered with this runtime.
        fn share(fd: OwnedFd) -> io::Result<Self::Shared>;

        /// Accept on the shared socket.
        fn poll_accept(
            listener: &Self::Shared,
            cx: &mut Context<'_>,
        ) -> Poll<io::Result<(Self, <Self as ListenStream>::Peer)>>
        where
            Self: ListenStream;

        /// The peer of a handed-over connection (TCP: what the primary
        /// sent; Unix-domain: asked of the socket).
        fn handed_peer(&self, sent: Option<SocketAddr>) -> <Self as ListenStream>::Peer
        where
            Self: ListenStream;

        /// The listener's own address in the peer's type (axum's
        /// `Listener::local_addr`).
        fn local_peer(
            addr: &<Self as ListenStream>::Addr,
        ) -> io::Result<<Self as ListenStream>::Peer>
        where
            Self: ListenStream;
    }
}

impl ListenStream for TcpStream {
    type Addr = SocketAddr;
    type Peer = SocketAddr;
}

impl sealed::Kind for TcpStream {
    type Shared = tokio::net::TcpListener;

    fn adopt(fd: OwnedFd) -> io::Result<Self> {
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true)?;
        TcpStream::from_std(std)
    }

    fn share(fd: OwnedFd) -> io::Result<Self::Shared> {
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    }

    fn poll_accept(
        listener: &Self::Shared,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self, SocketAddr)>> {
        listener.poll_accept(cx)
    }

    fn handed_peer(&self, sent: Option<SocketAddr>) -> SocketAddr {
        sent.or_else(|| self.peer_addr().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn local_peer(addr: &SocketAddr) -> io::Result<SocketAddr> {
        Ok(*addr)
    }
}

impl ListenStream for UnixStream {
    type Addr = UnixAddr;
    type Peer = tokio::net::unix::SocketAddr;
}

impl sealed::Kind for UnixStream {
    type Shared = tokio::net::UnixListener;

    fn adopt(fd: OwnedFd) -> io::Result<Self> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)?;
        UnixStream::from_std(std)
    }

    fn share(fd: OwnedFd) -> io::Result<Self::Shared> {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(std)
    }

    fn poll_accept(
        listener: &Self::Shared,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self, tokio::net::unix::SocketAddr)>> {
        listener.poll_accept(cx)
    }

    fn handed_peer(&self, _sent: Option<SocketAddr>) -> tokio::net::unix::SocketAddr {
        // A client that already went away has no address left to tell:
        // unnamed, like most clients.
        self.peer_addr().unwrap_or_else(|_| unnamed())
    }

    fn local_peer(addr: &UnixAddr) -> io::Result<tokio::net::unix::SocketAddr> {
        let std = match addr {
            UnixAddr::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p)?,
            UnixAddr::Abstract(name) => abstract_addr(name)?,
        };
        Ok(std.into())
    }
}

/// An unnamed Unix-domain address (an empty path makes one).
fn unnamed() -> tokio::net::unix::SocketAddr {
    std::os::unix::net::SocketAddr::from_pathname("")
        .map(Into::into)
        .unwrap_or_else(|_| unreachable!("an empty path is the unnamed address"))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::ErrorKind::Unsupported.into())
}
