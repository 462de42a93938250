//! [`Accept`]: a worker's listener of any kind, as the HTTP integrations
//! serve it. The one [`Listener`] (generic over its stream: TCP, also the
//! listener of an inherited or socket-activated TCP socket, and
//! Unix-domain, [`UnixListener`](crate::UnixListener)) implements it once
//! for every stream kind, so the hand-off, deadline and drain accounting
//! behind `serve` are the listener's own; [`FdListener`], whatever
//! [`Worker::listen_fd`](crate::Worker::listen_fd) gave, goes through the
//! same `Listener` of its kind.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::worker::{Connection, DrainSignal, FdListener, ListenStream, Listener, UnixConnection};

/// A worker's listener, whatever it listens on: the stream of its accepted
/// connections and the drain of its worker. `cluster_core::hyper::serve`
/// and `cluster_core::axum::serve` take any of them, with the same drain
/// rules.
pub trait Accept: Send + 'static {
    /// An accepted connection.
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection; `None` once the worker drains (after the
    /// connections already handed over). Cancel-safe.
    fn next_connection(&mut self) -> impl Future<Output = Option<Self::Conn>> + Send;

    /// The drain of this listener's worker.
    fn drain_signal(&self) -> DrainSignal;
}

/// Every stream kind of the one listener: [`Listener::accept`] without the
/// peer's address.
impl<S: ListenStream> Accept for Listener<S> {
    type Conn = Connection<S>;

    async fn next_connection(&mut self) -> Option<Connection<S>> {
        Some(self.accept().await?.0)
    }

    fn drain_signal(&self) -> DrainSignal {
        Listener::drain_signal(self)
    }
}

/// A connection of an [`FdListener`]: the [`Connection`] of its listener's
/// kind.
#[derive(Debug)]
#[non_exhaustive]
pub enum FdConnection {
    /// From a TCP listener.
    Tcp(Connection),
    /// From a Unix-domain listener.
    Unix(UnixConnection),
}

/// A TCP or Unix-domain stream listener, through its [`Listener`]; a UDP
/// socket has no connection to accept: `next_connection` returns `None` at
/// once.
impl Accept for FdListener {
    type Conn = FdConnection;

    async fn next_connection(&mut self) -> Option<FdConnection> {
        match self {
            FdListener::Tcp(l) => Some(FdConnection::Tcp(l.next_connection().await?)),
            FdListener::Unix(l) => Some(FdConnection::Unix(l.next_connection().await?)),
            _ => None,
        }
    }

    fn drain_signal(&self) -> DrainSignal {
        match self {
            FdListener::Tcp(l) => l.drain_signal(),
            FdListener::Unix(l) => l.drain_signal(),
            FdListener::Udp(_) => DrainSignal::already_drained(),
        }
    }
}

macro_rules! either {
    ($self:ident, $c:ident => $e:expr) => {
        match $self.get_mut() {
            FdConnection::Tcp($c) => {
                let $c = std::pin::Pin::new($c);
                $e
            }
            FdConnection::Unix($c) => {
                let $c = std::pin::Pin::new($c);
                $e
            }
        }
    };
}

impl AsyncRead for FdConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        either!(self, c => c.poll_read(cx, buf))
    }
}

impl AsyncWrite for FdConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        either!(self, c => c.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        either!(self, c => c.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            FdConnection::Tcp(c) => c.is_write_vectored(),
            FdConnection::Unix(c) => c.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        either!(self, c => c.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        either!(self, c => c.poll_shutdown(cx))
    }
}
