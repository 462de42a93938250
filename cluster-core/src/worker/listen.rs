//! Listening in a worker: [`Listener`] and the accepted [`Connection`].
//!
//! `Worker::listen` asks the primary to listen on the worker's behalf. Under
//! a distributed policy (round-robin, sticky, …) the primary accepts and
//! hands each connection over; the receive loop takes the descriptor and
//! queues it for [`Listener::accept`], which acknowledges it when it hands it
//! to the user. Until then the primary still owns it: a worker that dies, or
//! a `Listener` dropped, with connections queued gives them back (no ack, or
//! a refusal) and the primary re-routes them. So does a connection that
//! reaches `accept` after its hand-off deadline (the worker was stopped or
//! its runtime blocked): it is refused, since the primary may have taken it
//! back and given it to another worker. Under `none` the
//! primary sends the listening socket itself and `accept` calls the kernel.
//! Either way the user sees the same `Listener`.
//!
//! The drain (see [`DrainSignal`]): once the worker drains, `accept` ends
//! after the connections already taken over; every connection still open
//! is counted, so the HTTP integrations can tell when the last one closed,
//! and the drain grace bounds how long an idle one is kept.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_ipc::{ControlMsg, ListenReply, Sender, TrySendError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};

mod listen_on;
#[cfg(test)]
mod tests;
mod unix;

pub use listen_on::FdListener;
pub use unix::{UnixConnection, UnixListener};

/// How long a draining worker keeps an idle connection open, by default:
/// Node's `server.keepAliveTimeout`, so a client pool that honours that
/// timeout never reuses a connection the drain is about to close.
pub(crate) const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// What the receive loop resolves a listen request with.
pub(crate) type ListenAnswer = Result<Listener>;

/// The worker's listening state, shared by `Worker` and its receive loop.
pub(crate) struct Net {
    tx: Sender,
    state: Mutex<NetState>,
    drain: DrainSignal,
    draining: watch::Sender<bool>,
}

struct NetState {
    next_request: u64,
    /// The channel from the primary closed: no answer will come.
    primary_gone: bool,
    waiting: HashMap<u64, (SocketAddr, oneshot::Sender<ListenAnswer>)>,
    /// Listeners fed by the primary's hand-off, by listen request id.
    handed: HashMap<u64, mpsc::UnboundedSender<Handed>>,
    /// `ListenOn` requests (Unix-domain, UDP, descriptors) in flight.
    waiting_on: HashMap<u64, listen_on::Waiting>,
    /// Unix-domain listeners fed by the hand-off, by listen request id.
    handed_unix: HashMap<u64, mpsc::UnboundedSender<unix::HandedUnix>>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl Net {
    pub(crate) fn new(tx: Sender) -> Arc<Self> {
        let draining = watch::Sender::new(false);
        let drain = DrainSignal {
            draining: draining.subscribe(),
            open: OpenCount::default(),
            grace_ms: Arc::new(AtomicU64::new(DEFAULT_DRAIN_GRACE.as_millis() as u64)),
        };
        Arc::new(Net {
            tx,
            state: Mutex::new(NetState {
                next_request: 1,
                primary_gone: false,
                waiting: HashMap::new(),
                handed: HashMap::new(),
                waiting_on: HashMap::new(),
                handed_unix: HashMap::new(),
            }),
            drain,
            draining,
        })
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A signal that resolves once the worker drains.
    pub(crate) fn drain_signal(&self) -> DrainSignal {
        self.drain.clone()
    }

    /// Set the drain grace of every listener of this worker.
    pub(crate) fn set_drain_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.drain.grace_ms.store(ms, Ordering::Relaxed);
    }

    /// Register a listen request; its id and the answer to wait for.
    pub(crate) fn request(&self, addr: SocketAddr) -> (u64, oneshot::Receiver<ListenAnswer>) {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        let id = st.next_request;
        st.next_request += 1;
        if !st.primary_gone {
            // Otherwise `tx` is dropped: the answer is `PrimaryGone`.
            st.waiting.insert(id, (addr, tx));
        }
        (id, rx)
    }

    /// Stop taking connections: every listener's `accept` ends (after the
    /// connections already taken over), and new hand-offs are refused.
    pub(crate) fn drain(&self) {
        self.draining.send_replace(true);
        let mut st = self.lock();
        st.handed.clear();
        st.handed_unix.clear();
    }

    /// The channel from the primary closed: drain, and fail the listen
    /// requests still waiting for an answer (`Error::PrimaryGone`).
    pub(crate) fn primary_gone(&self) {
        self.drain();
        let mut st = self.lock();
        st.primary_gone = true;
        st.waiting.clear();
    }

    /// The primary answered a listen request.
    pub(crate) fn on_reply(&self, reply: ListenReply, fds: Vec<OwnedFd>) {
        let Some((requested, answer)) = self.lock().waiting.remove(&reply.request_id) else {
            return;
        };
        let result = match reply.result {
            Ok(ok) if ok.fd_attached => match fds.into_iter().next() {
                Some(fd) => shared_listener(fd).map(|l| Listener {
                    addr: ok.addr,
                    drain: self.drain_signal(),
                    accepting: Some(self.drain.open.track_listener()),
                    source: Source::Shared {
                        listener: l,
                        draining: self.draining.subscribe(),
                    },
                }),
                None => Err(Error::Listen {
                    addr: requested,
                    kind: cluster_ipc::ListenErrorKind::Other,
                    source: io::Error::other("the listening socket was not attached"),
                }),
            },
            Ok(ok) => {
                let (conn_tx, conn_rx) = mpsc::unbounded_channel();
                if !*self.draining.borrow() {
                    self.lock().handed.insert(reply.request_id, conn_tx);
                }
                Ok(Listener {
                    addr: ok.addr,
                    drain: self.drain_signal(),
                    accepting: Some(self.drain.open.track_listener()),
                    source: Source::Handed {
                        queue: conn_rx,
                        tx: self.tx.clone(),
                    },
                })
            }
            Err(f) => Err(Error::Listen {
                addr: requested,
                kind: f.kind,
                source: f.errno.map_or_else(
                    || io::Error::other(f.message.clone()),
                    io::Error::from_raw_os_error,
                ),
            }),
        };
        let _ = answer.send(result);
    }

    /// The primary handed a connection over: take the descriptor and queue
    /// it for its listener, whose `accept` acknowledges it; or refuse it at
    /// once (listener gone, worker draining), and the primary re-routes it.
    pub(crate) async fn on_connection(
        &self,
        conn_id: u64,
        listener_id: u64,
        peer: SocketAddr,
        deadline_ns: u64,
        fds: Vec<OwnedFd>,
    ) {
        let queue = self.lock().handed.get(&listener_id).cloned();
        let queued = match (queue, fds.into_iter().next()) {
            (Some(queue), Some(fd)) => match adopt(fd) {
                Ok(stream) => queue
                    .send(Handed {
                        stream,
                        peer,
                        conn_id,
                        open: self.drain.open.track(),
                        deadline_ns,
                    })
                    .is_ok(),
                Err(_) => false,
            },
            _ => false,
        };
        if !queued {
            let refused = ControlMsg::ConnectionAck {
                conn_id,
                accepted: false,
            };
            let _ = self.tx.send_control(&refused, Vec::new()).await;
        }
    }
}

/// A connection handed over and not yet accepted (nor acknowledged).
#[derive(Debug)]
struct Handed {
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    /// Counts it among the worker's open connections from the hand-over on.
    open: Open,
    /// The hand-off deadline (`CLOCK_MONOTONIC` ns): refused past it.
    deadline_ns: u64,
}

/// What a worker still has in hand: the connections it took over (queued
/// or accepted) and has not closed, and the listeners whose `accept` has not
/// ended yet (one may still return a connection the kernel or the primary
/// gave it as the drain started). Cheap to clone: the clones share it.
#[derive(Debug, Clone, Default)]
struct OpenCount(Arc<watch::Sender<Counts>>);

/// The two counts of [`OpenCount`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    connections: usize,
    accepting: usize,
}

impl OpenCount {
    /// Count one more connection, until the returned guard is dropped.
    fn track(&self) -> Open {
        self.count(false)
    }

    /// Count one more listener still accepting, until the guard is dropped.
    fn track_listener(&self) -> Open {
        self.count(true)
    }

    fn count(&self, listener: bool) -> Open {
        self.0.send_modify(|n| {
            if listener {
                n.accepting += 1;
            } else {
                n.connections += 1;
            }
        });
        Open {
            count: Arc::clone(&self.0),
            listener,
        }
    }
}

/// One open connection, or one listener still accepting, in its worker's
/// [`OpenCount`].
#[derive(Debug)]
struct Open {
    count: Arc<watch::Sender<Counts>>,
    listener: bool,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.count.send_modify(|n| {
            let c = if self.listener {
                &mut n.accepting
            } else {
                &mut n.connections
            };
            *c = c.saturating_sub(1);
        });
    }
}

/// `accept` takes a handed-over connection: acknowledged (from now on it is
/// this worker's) and `true`, or, past its hand-off deadline, refused and
/// `false` (the primary may have given it to another worker; it keeps its
/// own descriptor of it). TCP's and Unix-domain listeners alike.
pub(super) fn take_handed(tx: &Sender, conn_id: u64, deadline_ns: u64) -> bool {
    let accepted = crate::clock::monotonic_ns() <= deadline_ns;
    send_soon(tx, ControlMsg::ConnectionAck { conn_id, accepted });
    accepted
}

/// A listener is dropped: every connection still queued for it goes back
/// to the primary, which gives it to another worker.
pub(super) fn refuse_queued<T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    tx: &Sender,
    conn_id: impl Fn(&T) -> u64,
) {
    queue.close();
    while let Ok(h) = queue.try_recv() {
        let refused = ControlMsg::ConnectionAck {
            conn_id: conn_id(&h),
            accepted: false,
        };
        send_soon(tx, refused);
    }
}

/// Send a control message without waiting: queued now, or by a task when
/// the queue is full (outside a runtime, dropped: the channel is then gone).
fn send_soon(tx: &Sender, msg: ControlMsg) {
    // Queued for the channel's writer, never written on the spot: the acks
    // and close notices of a burst of connections leave together, in one
    // `sendmsg`, and reach the primary in one read.
    if let Err(TrySendError::Full(msg)) = tx.try_queue_control(msg)
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        let tx = tx.clone();
        rt.spawn(async move {
            let _ = tx.send_control(&msg, Vec::new()).await;
        });
    }
}

fn shared_listener(fd: OwnedFd) -> Result<TcpListener> {
    let std = std::net::TcpListener::from(fd);
    let io = |source: io::Error| Error::Listen {
        addr: std
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        kind: cluster_ipc::ListenErrorKind::Other,
        source,
    };
    std.set_nonblocking(true).map_err(io)?;
    let addr = std.local_addr().map_err(io)?;
    TcpListener::from_std(std).map_err(|source| Error::Listen {
        addr,
        kind: cluster_ipc::ListenErrorKind::Other,
        source,
    })
}

fn adopt(fd: OwnedFd) -> io::Result<TcpStream> {
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    TcpStream::from_std(std)
}

/// The worker's drain: when it starts, how long an idle connection may
/// still be kept (the drain grace), and when the last connection closed.
///
/// The worker drains when the primary asks it to disconnect (graceful
/// shutdown, rolling reload) or when it calls `Worker::disconnect`. From then
/// on its listeners' `accept` returns `None` (after the connections already
/// handed over) and the primary sends it no new connection. What the HTTP
/// integrations (`cluster_core::hyper`, `cluster_core::axum`) do with it,
/// and why, is in `docs/cluster.md` ("Draining without failing a request"):
/// a response sent while draining carries `Connection: close`; a connection
/// still idle when the grace ends is closed; the worker ends when its last
/// connection closed, or at the grace's end.
///
/// Cheap to clone; every clone sees the same drain.
#[derive(Debug, Clone)]
pub struct DrainSignal {
    draining: watch::Receiver<bool>,
    open: OpenCount,
    grace_ms: Arc<AtomicU64>,
}

impl DrainSignal {
    /// Whether the worker is draining now.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// The drain's rule for an HTTP/1 response (the `hyper` and `axum`
    /// integrations): sent while the worker drains, it is its connection's
    /// last (`Connection: close`, so hyper closes the connection once it
    /// is sent and a keep-alive client moves to another worker). Read when
    /// the response is ready: a request in flight as the drain starts gets
    /// it too. An upgrade (`101`) keeps its `Connection: upgrade`: that
    /// connection is no longer HTTP's.
    #[cfg(any(feature = "hyper", feature = "axum"))]
    pub(crate) fn mark_last<B>(&self, version: http::Version, response: &mut http::Response<B>) {
        if version < http::Version::HTTP_2
            && self.is_draining()
            && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
        {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }

    /// Wait until the worker drains (at once if it already does).
    pub async fn wait(&mut self) {
        // An error means the worker's state is gone: as good as drained.
        let _ = self.draining.wait_for(|d| *d).await;
    }

    /// How long, once draining, a connection may stay idle before it is
    /// closed (`Worker::set_drain_grace`; default 5 s).
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    /// How many connections this worker took over (accepted, or handed over
    /// and waiting for `accept`) and has not closed yet.
    pub fn open_connections(&self) -> usize {
        self.open.0.borrow().connections
    }

    /// Wait until the worker drains, then for the drain grace: when this
    /// returns, a connection still idle is to be closed.
    pub async fn wait_grace(&mut self) {
        self.wait().await;
        tokio::time::sleep(self.grace()).await;
    }

    /// Wait until the worker drains, then until every listener's `accept`
    /// has ended (returned `None`, or the listener was dropped) and every
    /// connection it took over has closed, or the drain grace has passed,
    /// whichever comes first:
    /// the moment to stop serving (axum's `with_graceful_shutdown` takes it,
    /// through `Worker::shutdown_signal`). Requests then in flight still
    /// finish; idle connections close.
    pub async fn done(mut self) {
        self.wait().await;
        let mut open = self.open.0.subscribe();
        let grace = tokio::time::sleep(self.grace());
        tokio::select! {
            () = grace => {}
            // The sender lives in `self`: the wait ends only on zero.
            _ = open.wait_for(|n| *n == Counts::default()) => {}
        }
    }
}

/// Where a listener's connections come from.
#[derive(Debug)]
enum Source {
    /// Handed over by the primary (distributed policies).
    Handed {
        queue: mpsc::UnboundedReceiver<Handed>,
        tx: Sender,
    },
    /// Accepted here on the primary's listening socket (`none`).
    Shared {
        listener: TcpListener,
        draining: watch::Receiver<bool>,
    },
}

/// A listening address of a worker: the stream of its accepted connections.
///
/// Made by `Worker::listen`. Whatever the cluster's scheduling policy, the
/// connections come out of [`accept`](Listener::accept) the same way;
/// [`accept`](Listener::accept) returns `None` once the worker is draining
/// (the primary asked it to disconnect, it called `Worker::disconnect`, or
/// the primary is gone),
/// after the connections it already took over. Dropping the `Listener`
/// makes the worker refuse further connections for it (the primary gives
/// them to another worker).
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    drain: DrainSignal,
    /// Held until `accept` ends: see [`DrainSignal::done`].
    accepting: Option<Open>,
    source: Source,
}

impl Listener {
    /// The address the primary listens on, with a requested port 0
    /// resolved (the same for every worker that asked for it).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

    /// The next connection and its peer address; `None` once the worker is
    /// draining. Under `none`, a failed `accept` (out of descriptors, a
    /// connection reset before it was accepted) is retried after a short
    /// pause rather than reported.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if it is dropped before it completes (a `select!` whose
    /// other branch won), no connection is lost. A handed-over connection
    /// stays queued (and unacknowledged) until a later call takes it; under
    /// `none`, it stays in the kernel's backlog.
    pub async fn accept(&mut self) -> Option<(Connection, SocketAddr)> {
        let accepted = self.accept_inner().await;
        if accepted.is_none() {
            self.accepting = None;
        }
        accepted
    }

    async fn accept_inner(&mut self) -> Option<(Connection, SocketAddr)> {
        match &mut self.source {
            Source::Handed { queue, tx } => loop {
                let h = queue.recv().await?;
                if !take_handed(tx, h.conn_id, h.deadline_ns) {
                    continue;
                }
                let conn = Connection {
                    stream: h.stream,
                    peer: h.peer,
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
                tokio::select! {
                    biased;
                    res = listener.accept() => match res {
                        Ok((stream, peer)) => {
                            let _open = self.drain.open.track();
                            return Some((Connection { stream, peer, _notice: None, _open }, peer));
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

impl Drop for Listener {
    fn drop(&mut self) {
        // What was handed over but never accepted goes back to the primary,
        // which gives it to another worker.
        if let Source::Handed { queue, tx } = &mut self.source {
            refuse_queued(queue, tx, |h| h.conn_id);
        }
    }
}

/// Tells the primary when a handed-over connection is closed.
#[derive(Debug)]
struct CloseNotice {
    conn_id: u64,
    tx: Sender,
}

impl Drop for CloseNotice {
    fn drop(&mut self) {
        send_soon(
            &self.tx,
            ControlMsg::ConnectionClosed {
                conn_id: self.conn_id,
            },
        );
    }
}

/// An accepted TCP connection of a worker: a [`TcpStream`] that tells the
/// primary when it is dropped (so the primary's open-connection counters,
/// which least-connections and power of two choices read, stay true).
///
/// It reads and writes like the stream (`AsyncRead`, `AsyncWrite`, `Unpin`:
/// hyper's `TokioIo::new(conn)` takes it as it is) and derefs to it for
/// everything else (`set_nodelay`, `local_addr`, …).
///
/// # Caveats
/// Dropping a connection handed over by the primary (any policy but
/// `none`) shuts its socket down, both ways, before closing it: the client
/// sees the end at once, even while the primary still holds its duplicate
/// of the socket (until it has processed this worker's ack). A descriptor
/// of it you duplicated yourself ends with it.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Sends `ConnectionClosed` when dropped (with the connection).
    _notice: Option<CloseNotice>,
    /// Counts it among the worker's open connections.
    _open: Open,
}

impl Connection {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The stream, mutably.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self._notice.is_some() {
            shut_down(&self.stream);
        }
    }
}

/// End a handed-over connection now, whatever other descriptors of it
/// exist: the primary keeps a duplicate until it has processed this worker's
/// ack, and a plain close would leave the client waiting for its end (the
/// FIN) until then.
fn shut_down(stream: &TcpStream) {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: the descriptor is the stream's own and stays open for this
    // call (`&TcpStream`); the borrowed `std` view is never dropped
    // (`ManuallyDrop`), so it does not close the descriptor.
    let view = std::mem::ManuallyDrop::new(unsafe {
        std::net::TcpStream::from_raw_fd(stream.as_raw_fd())
    });
    // Already reset or shut down by the peer: nothing to end.
    let _ = view.shutdown(std::net::Shutdown::Both);
}

/// `Deref`/`DerefMut` to the stream, and `AsyncRead`/`AsyncWrite` passed
/// through to it, for a connection type wrapping a tokio stream in its
/// `stream` field (TCP's [`Connection`] and the Unix-domain
/// `UnixConnection`).
macro_rules! stream_wrapper {
    ($wrapper:ty, $stream:ty) => {
        impl std::ops::Deref for $wrapper {
            type Target = $stream;
            fn deref(&self) -> &$stream {
                &self.stream
            }
        }

        impl std::ops::DerefMut for $wrapper {
            fn deref_mut(&mut self) -> &mut $stream {
                &mut self.stream
            }
        }

        impl tokio::io::AsyncRead for $wrapper {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
            }
        }

        impl tokio::io::AsyncWrite for $wrapper {
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
    };
}
pub(super) use stream_wrapper;

stream_wrapper!(Connection, TcpStream);
