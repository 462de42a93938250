//! Listening in a worker: [`Listener`] and the accepted [`Connection`].
//!
//! `Worker::listen` asks the primary to listen on the worker's behalf. Under
//! a distributed policy (round-robin, sticky, …) the primary accepts and
//! hands each connection over; the receive loop takes the descriptor and
//! queues it for [`Listener::accept`], which acknowledges it when it hands it
//! to the user. Until then the primary still owns it: a worker that dies, or
//! a `Listener` dropped, with connections queued gives them back (no ack, or
//! a refusal) and the primary re-routes them. Under `none` the
//! primary sends the listening socket itself and `accept` calls the kernel.
//! Either way the user sees the same `Listener`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use cluster_ipc::{ControlMsg, ListenReply, Sender, TrySendError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};

mod listen_on;
#[cfg(test)]
mod tests;
mod unix;

pub use listen_on::FdListener;
pub use unix::{UnixConnection, UnixListener};

/// What the receive loop resolves a listen request with.
pub(crate) type ListenAnswer = Result<Listener>;

/// The worker's listening state, shared by `Worker` and its receive loop.
pub(crate) struct Net {
    tx: Sender,
    state: Mutex<NetState>,
    draining: watch::Sender<bool>,
}

struct NetState {
    next_request: u64,
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
            .field("draining", &*self.draining.borrow())
            .finish_non_exhaustive()
    }
}

impl Net {
    pub(crate) fn new(tx: Sender) -> Arc<Self> {
        Arc::new(Net {
            tx,
            state: Mutex::new(NetState {
                next_request: 1,
                waiting: HashMap::new(),
                handed: HashMap::new(),
                waiting_on: HashMap::new(),
                handed_unix: HashMap::new(),
            }),
            draining: watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A signal that resolves once the worker drains.
    pub(crate) fn drain_signal(&self) -> DrainSignal {
        DrainSignal(self.draining.subscribe())
    }

    /// Register a listen request; its id and the answer to wait for.
    pub(crate) fn request(&self, addr: SocketAddr) -> (u64, oneshot::Receiver<ListenAnswer>) {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        let id = st.next_request;
        st.next_request += 1;
        st.waiting.insert(id, (addr, tx));
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

    /// The primary answered a listen request.
    pub(crate) fn on_reply(&self, reply: ListenReply, fds: Vec<OwnedFd>) {
        let Some((requested, answer)) = self.lock().waiting.remove(&reply.request_id) else {
            return;
        };
        let result = match reply.result {
            Ok(ok) if ok.fd_attached => match fds.into_iter().next() {
                Some(fd) => shared_listener(fd).map(|l| Listener {
                    addr: ok.addr,
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
}

/// Send a control message without waiting: queued now, or by a task when
/// the queue is full (outside a runtime, dropped: the channel is then gone).
fn send_soon(tx: &Sender, msg: ControlMsg) {
    if let Err(TrySendError::Full((msg, _))) = tx.try_send_control(msg, Vec::new())
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

/// Resolves when the worker starts draining: the primary asked it to
/// disconnect (graceful shutdown, rolling reload) or it called
/// `Worker::disconnect`. From then on its listeners' `accept` returns `None`
/// and the primary sends it no new connection; hand it to each connection's
/// task to end keep-alive connections gracefully (hyper's
/// `graceful_shutdown`) instead of waiting for clients to close them.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct DrainSignal(watch::Receiver<bool>);

impl DrainSignal {
    /// Whether the worker is draining now.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Wait until the worker drains (at once if it already does).
    pub async fn wait(&mut self) {
        // An error means the worker's state is gone: as good as drained.
        let _ = self.0.wait_for(|d| *d).await;
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
/// (the primary asked it to disconnect, or it called `Worker::disconnect`),
/// after the connections it already took over. Dropping the `Listener`
/// makes the worker refuse further connections for it (the primary gives
/// them to another worker).
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
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

    /// The next connection and its peer address; `None` once the worker is
    /// draining. Under `none`, a failed `accept` (out of descriptors, a
    /// connection reset before it was accepted) is retried after a short
    /// pause rather than reported.
    pub async fn accept(&mut self) -> Option<(Connection, SocketAddr)> {
        match &mut self.source {
            Source::Handed { queue, tx } => {
                let h = queue.recv().await?;
                // Taken: from now on the connection is this worker's.
                send_soon(
                    tx,
                    ControlMsg::ConnectionAck {
                        conn_id: h.conn_id,
                        accepted: true,
                    },
                );
                let conn = Connection {
                    stream: h.stream,
                    peer: h.peer,
                    _notice: Some(CloseNotice {
                        conn_id: h.conn_id,
                        tx: tx.clone(),
                    }),
                };
                Some((conn, h.peer))
            }
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
                            return Some((Connection { stream, peer, _notice: None }, peer));
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
            queue.close();
            while let Ok(h) = queue.try_recv() {
                send_soon(
                    tx,
                    ControlMsg::ConnectionAck {
                        conn_id: h.conn_id,
                        accepted: false,
                    },
                );
            }
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

impl std::ops::Deref for Connection {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
