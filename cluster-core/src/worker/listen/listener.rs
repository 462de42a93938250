//! The one listener of a worker, over the stream type: [`Listener`] and
//! its [`Connection`]s (TCP's by default; [`UnixListener`] and
//! [`UnixConnection`] are the same types over a Unix-domain stream), and
//! [`FdListener`], whatever a descriptor of the primary turned out to be.
//! Every kind has the same accept, acknowledgement, deadline and drain
//! accounting.

use cluster_ipc::Sender;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, watch};

use super::stream::ListenStream;
use super::{CloseNotice, DrainSignal, Open, refuse_queued, take_handed};

/// A connection handed over and not yet accepted (nor acknowledged).
#[derive(Debug)]
pub(super) struct Handed<S: ListenStream> {
    pub(super) stream: S,
    pub(super) peer: S::Peer,
    pub(super) conn_id: u64,
    /// Counts it among the worker's open connections from the hand-over on.
    pub(super) open: Open,
    /// The hand-off deadline (`CLOCK_MONOTONIC` ns): refused past it.
    pub(super) deadline_ns: u64,
}

/// Where a listener's connections come from.
#[derive(Debug)]
pub(super) enum Source<S: ListenStream> {
    /// Handed over by the primary (distributed policies).
    Handed {
        queue: mpsc::UnboundedReceiver<Handed<S>>,
        tx: Sender,
    },
    /// Accepted here on the primary's listening socket (`none`).
    Shared {
        listener: S::Shared,
        draining: watch::Receiver<bool>,
    },
}

/// A listener of a worker, through the primary: the stream of its accepted
/// connections. Made by `Worker::listen` (TCP, the default stream type),
/// [`Worker::listen_unix`](crate::Worker::listen_unix)
/// ([`UnixListener`]) or [`Worker::listen_fd`](crate::Worker::listen_fd).
///
/// Whatever the cluster's scheduling policy, the connections come out of
/// [`accept`](Listener::accept) the same way; [`accept`](Listener::accept)
/// returns `None` once the worker is draining (the primary asked it to
/// disconnect, it called `Worker::disconnect`, or the primary is gone),
/// after the connections it already took over. Dropping the `Listener`
/// makes the worker refuse further connections for it (the primary gives
/// them to another worker).
#[derive(Debug)]
pub struct Listener<S: ListenStream = TcpStream> {
    pub(super) addr: S::Addr,
    pub(super) drain: DrainSignal,
    /// Held until `accept` ends: see [`DrainSignal::done`].
    pub(super) accepting: Option<Open>,
    pub(super) source: Source<S>,
}

/// A Unix-domain stream socket a worker listens on through the primary
/// ([`Worker::listen_unix`](crate::Worker::listen_unix)): a [`Listener`]
/// over [`tokio::net::UnixStream`], with every guarantee of a TCP one.
pub type UnixListener = Listener<UnixStream>;

impl<S: ListenStream> Listener<S> {
    /// What the primary listens on: the address (with a requested port 0
    /// resolved, the same for every worker that asked for it), or the
    /// Unix-domain path or abstract name.
    pub fn local_addr(&self) -> S::Addr {
        self.addr.clone()
    }

    /// Whether the primary hands connections over (a distributed policy),
    /// rather than sharing the listening socket (`none`).
    pub fn is_handed_over(&self) -> bool {
        matches!(self.source, Source::Handed { .. })
    }

    /// The drain of this listener's worker (the same as
    /// `Worker::drain_signal`).
    pub fn drain_signal(&self) -> DrainSignal {
        self.drain.clone()
    }

    /// The next connection and its peer's address; `None` once the worker
    /// is draining. Under `none`, a failed `accept` (out of descriptors, a
    /// connection reset before it was accepted) is retried after a short
    /// pause rather than reported.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if it is dropped before it completes (a `select!` whose
    /// other branch won), no connection is lost. A handed-over connection
    /// stays queued (and unacknowledged) until a later call takes it; under
    /// `none`, it stays in the kernel's backlog.
    pub async fn accept(&mut self) -> Option<(Connection<S>, S::Peer)> {
        let accepted = self.accept_inner().await;
        if accepted.is_none() {
            self.accepting = None;
        }
        accepted
    }

    async fn accept_inner(&mut self) -> Option<(Connection<S>, S::Peer)> {
        match &mut self.source {
            Source::Handed { queue, tx } => loop {
                let h = queue.recv().await?;
                if !take_handed(tx, h.conn_id, h.deadline_ns) {
                    continue;
                }
                let conn = Connection {
                    stream: h.stream,
                    peer: h.peer.clone(),
                    _notice: Some(CloseNotice {
                        conn_id: h.conn_id,
                        tx: tx.clone(),
                    }),
                    _open: h.open,
                };
                return Some((conn, h.peer));
            },
            Source::Shared { listener, draining } => loop {
                if *draining.borrow() {
                    return None;
                }
                // Biased, the accept first: a connection that is already
                // waiting is taken without registering for the drain
                // signal (a lock and a waiter per accept otherwise); the
                // drain is checked above on every turn anyway.
                let accept = std::future::poll_fn(|cx| S::poll_accept(listener, cx));
                tokio::select! {
                    biased;
                    res = accept => match res {
                        Ok((stream, peer)) => {
                            let _open = self.drain.open.track();
                            let conn = Connection { stream, peer: peer.clone(), _notice: None, _open };
                            return Some((conn, peer));
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    },
                    changed = draining.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            },
        }
    }
}

impl<S: ListenStream> Drop for Listener<S> {
    fn drop(&mut self) {
        // What was handed over but never accepted goes back to the primary,
        // which gives it to another worker.
        if let Source::Handed { queue, tx } = &mut self.source {
            refuse_queued(queue, tx, |h| h.conn_id);
        }
    }
}

/// An accepted connection of a worker: the stream (a [`TcpStream`] by
/// default; [`UnixConnection`] over a Unix-domain one) that tells the
/// primary when it is dropped (so the primary's open-connection counters,
/// which least-connections and power of two choices read, stay true), and
/// counts among the worker's open connections until then (the drain waits
/// for it: [`DrainSignal`]).
///
/// It reads and writes like the stream (`AsyncRead`, `AsyncWrite`, `Unpin`:
/// hyper's `TokioIo::new(conn)` takes it as it is) and derefs to it for
/// everything else (`set_nodelay`, `local_addr`, `peer_cred`, …).
///
/// # Caveats
/// Dropping a connection handed over by the primary (any policy but
/// `none`) shuts its socket down, both ways, before closing it: the client
/// sees the end at once, even while the primary still holds its duplicate
/// of the socket (until it has processed this worker's ack). A descriptor
/// of it you duplicated yourself ends with it.
#[derive(Debug)]
pub struct Connection<S: ListenStream = TcpStream> {
    pub(super) stream: S,
    pub(super) peer: S::Peer,
    /// Sends `ConnectionClosed` when dropped (with the connection).
    pub(super) _notice: Option<CloseNotice>,
    /// Counts it among the worker's open connections.
    pub(super) _open: Open,
}

/// An accepted Unix-domain connection of a worker: a [`Connection`] over
/// [`tokio::net::UnixStream`] (the peer's credentials are
/// `conn.peer_cred()`).
pub type UnixConnection = Connection<UnixStream>;

impl<S: ListenStream> Connection<S> {
    /// The client's address (for a Unix-domain client, usually unnamed).
    pub fn peer_addr(&self) -> S::Peer {
        self.peer.clone()
    }

    /// The stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: ListenStream> Drop for Connection<S> {
    fn drop(&mut self) {
        if self._notice.is_some() {
            // End a handed-over connection now, whatever other descriptors
            // of it exist: the primary keeps a duplicate until it has
            // processed this worker's ack, and a plain close would leave the
            // client waiting for its end (the FIN) until then. Already
            // reset or shut down by the peer: nothing to end.
            let _ = nix::sys::socket::shutdown(
                self.stream.as_raw_fd(),
                nix::sys::socket::Shutdown::Both,
            );
        }
    }
}

impl<S: ListenStream> std::ops::Deref for Connection<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.stream
    }
}

impl<S: ListenStream> std::ops::DerefMut for Connection<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: ListenStream> tokio::io::AsyncRead for Connection<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: ListenStream> tokio::io::AsyncWrite for Connection<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a worker listens on through a descriptor the primary holds
/// ([`Worker::listen_fd`](crate::Worker::listen_fd)): the descriptor's kind
/// decides.
#[derive(Debug)]
#[non_exhaustive]
pub enum FdListener {
    /// A TCP listener.
    Tcp(Listener),
    /// A Unix-domain stream listener.
    Unix(UnixListener),
    /// A UDP socket, shared with every worker that binds it.
    Udp(tokio::net::UdpSocket),
}
