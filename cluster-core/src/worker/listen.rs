//! Listening in a worker: the one [`Listener`] (over the stream type: TCP,
//! or Unix-domain as [`UnixListener`]), its [`Connection`]s, and the
//! requests behind them.
//!
//! `Worker::listen` (and `listen_unix`, `bind_udp`, `listen_fd`) asks the
//! primary to listen on the worker's behalf; every kind of request waits in
//! one table and is answered the same way, and fails with
//! `Error::PrimaryGone` once the primary's channel closes. Under a
//! distributed policy (round-robin, sticky, …) the primary accepts and
//! hands each connection over; the receive loop takes the descriptor and
//! queues it for [`Listener::accept`], which acknowledges it when it hands it
//! to the user. Until then the primary still owns it: a worker that dies, or
//! a `Listener` dropped, with connections queued gives them back (no ack, or
//! a refusal) and the primary re-routes them. So does a connection that
//! reaches `accept` after its hand-off deadline (the worker was stopped or
//! its runtime blocked): it is refused, since the primary may have taken it
//! back and given it to another worker. Under `none` the
//! primary sends the listening socket itself and `accept` calls the kernel.
//! Either way, and whatever the stream type, the user sees the same
//! `Listener`.
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

use cluster_ipc::{
    Bound, ControlMsg, ListenFailure, ListenOnReply, ListenReply, Sender, TrySendError,
};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::endpoint::{ListenTarget, UnixAddr};
use crate::error::{Error, Result};

mod listener;
mod stream;
#[cfg(test)]
mod tests;

pub use listener::{Connection, FdListener, Listener, UnixConnection, UnixListener};
pub use stream::ListenStream;

use listener::{Handed, Source};

/// How long a draining worker keeps an idle connection open, by default:
/// Node's `server.keepAliveTimeout`, so a client pool that honours that
/// timeout never reuses a connection the drain is about to close.
pub(crate) const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// What a listen request asked for: its failures are told in those terms.
#[derive(Debug, Clone)]
pub(crate) enum Requested {
    /// A TCP address (`Worker::listen`: `Error::Listen`).
    Tcp(SocketAddr),
    /// Anything else (`Error::ListenOn`).
    On(ListenTarget),
}

impl Requested {
    /// The error of a failed request.
    pub(crate) fn error(&self, kind: cluster_ipc::ListenErrorKind, source: io::Error) -> Error {
        match self {
            Requested::Tcp(addr) => Error::Listen {
                addr: *addr,
                kind,
                source,
            },
            Requested::On(target) => Error::ListenOn {
                target: target.clone(),
                kind,
                source,
            },
        }
    }
}

/// A listen request waiting for its answer.
struct Waiting {
    requested: Requested,
    answer: oneshot::Sender<Result<FdListener>>,
}

/// A handed-over connection as it arrives, for its listener's queue.
struct Arrival {
    fd: OwnedFd,
    /// The client's address the primary sent (TCP).
    peer: Option<SocketAddr>,
    conn_id: u64,
    deadline_ns: u64,
    open: Open,
}

/// A listener's queue of handed-over connections, whatever its stream
/// type: adopts the descriptor and queues it; `false` when it cannot (the
/// listener is gone), and the connection is refused.
type Queue = Arc<dyn Fn(Arrival) -> bool + Send + Sync>;

/// The queue of a listener over `S`.
fn queue_of<S: ListenStream>(tx: mpsc::UnboundedSender<Handed<S>>) -> Queue {
    Arc::new(move |a: Arrival| match S::adopt(a.fd) {
        Ok(stream) => {
            let peer = stream.handed_peer(a.peer);
            tx.send(Handed {
                stream,
                peer,
                conn_id: a.conn_id,
                open: a.open,
                deadline_ns: a.deadline_ns,
            })
            .is_ok()
        }
        Err(_) => false,
    })
}

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
    /// Listen requests of every kind waiting for their answer.
    waiting: HashMap<u64, Waiting>,
    /// The listeners fed by the primary's hand-off, by listen request id.
    handed: HashMap<u64, Queue>,
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

    /// Register a listen request of any kind; its id and the answer to wait
    /// for (a closed channel, `Error::PrimaryGone`, once the primary is
    /// gone).
    pub(crate) fn request(
        &self,
        requested: Requested,
    ) -> (u64, oneshot::Receiver<Result<FdListener>>) {
        let (answer, rx) = oneshot::channel();
        let mut st = self.lock();
        let id = st.next_request;
        st.next_request += 1;
        if !st.primary_gone {
            // Otherwise `answer` is dropped: the request fails at once.
            st.waiting.insert(id, Waiting { requested, answer });
        }
        (id, rx)
    }

    /// Stop taking connections: every listener's `accept` ends (after the
    /// connections already taken over), and new hand-offs are refused.
    pub(crate) fn drain(&self) {
        self.draining.send_replace(true);
        self.lock().handed.clear();
    }

    /// The channel from the primary closed: drain, and fail every listen
    /// request still waiting for an answer (`Error::PrimaryGone`).
    pub(crate) fn primary_gone(&self) {
        self.drain();
        let mut st = self.lock();
        st.primary_gone = true;
        st.waiting.clear();
    }

    /// The primary answered a TCP listen request.
    pub(crate) fn on_reply(&self, reply: ListenReply, fds: Vec<OwnedFd>) {
        let result = reply.result.map(|ok| (Bound::Tcp(ok.addr), ok.fd_attached));
        self.answered(reply.request_id, result, fds);
    }

    /// The primary answered a `ListenOn` request.
    pub(crate) fn on_listen_on_reply(&self, reply: ListenOnReply, fds: Vec<OwnedFd>) {
        let result = reply.result.map(|ok| (ok.bound, ok.fd_attached));
        self.answered(reply.request_id, result, fds);
    }

    /// The one answer to a listen request of any kind: the listener of what
    /// the primary bound, or the error as the request asked.
    fn answered(
        &self,
        request_id: u64,
        result: std::result::Result<(Bound, bool), ListenFailure>,
        fds: Vec<OwnedFd>,
    ) {
        let Some(Waiting { requested, answer }) = self.lock().waiting.remove(&request_id) else {
            return;
        };
        let other = cluster_ipc::ListenErrorKind::Other;
        let result = match result {
            Ok((bound, attached)) => {
                let fd = fds.into_iter().next();
                if attached && fd.is_none() {
                    Err(requested.error(other, io::Error::other("the socket was not attached")))
                } else {
                    self.opened(request_id, bound, fd)
                        .map_err(|e| requested.error(other, e))
                }
            }
            Err(f) => Err(requested.error(
                f.kind,
                f.errno.map_or_else(
                    || io::Error::other(f.message.clone()),
                    io::Error::from_raw_os_error,
                ),
            )),
        };
        let _ = answer.send(result);
    }

    /// The listener of what the primary bound: fed by the hand-off, or on
    /// the attached socket.
    fn opened(&self, request_id: u64, bound: Bound, fd: Option<OwnedFd>) -> io::Result<FdListener> {
        Ok(match bound {
            Bound::Tcp(addr) => FdListener::Tcp(self.listener::<TcpStream>(request_id, addr, fd)?),
            Bound::Unix(addr) => FdListener::Unix(self.listener::<UnixStream>(
                request_id,
                UnixAddr::from_wire(addr),
                fd,
            )?),
            Bound::Udp(_) => {
                let fd = fd.ok_or_else(|| io::Error::other("the socket was not attached"))?;
                let std = std::net::UdpSocket::from(fd);
                std.set_nonblocking(true)?;
                FdListener::Udp(tokio::net::UdpSocket::from_std(std)?)
            }
            _ => return Err(io::Error::from(io::ErrorKind::Unsupported)),
        })
    }

    /// The listener over `S` of request `request_id`: on the shared socket
    /// `fd` (`none`), or fed by the hand-off (unless the worker drains
    /// already: then its `accept` ends at once).
    fn listener<S: ListenStream>(
        &self,
        request_id: u64,
        addr: S::Addr,
        fd: Option<OwnedFd>,
    ) -> io::Result<Listener<S>> {
        let source = match fd {
            Some(fd) => Source::Shared {
                listener: S::share(fd)?,
                draining: self.draining.subscribe(),
            },
            None => {
                let (conn_tx, queue) = mpsc::unbounded_channel();
                let mut st = self.lock();
                // Checked under the lock `drain` clears the queues under.
                if !*self.draining.borrow() {
                    st.handed.insert(request_id, queue_of::<S>(conn_tx));
                }
                Source::Handed {
                    queue,
                    tx: self.tx.clone(),
                }
            }
        };
        Ok(Listener {
            addr,
            drain: self.drain_signal(),
            accepting: Some(self.drain.open.track_listener()),
            source,
        })
    }

    /// The primary handed a TCP connection over.
    pub(crate) async fn on_connection(
        &self,
        conn_id: u64,
        listener_id: u64,
        peer: SocketAddr,
        deadline_ns: u64,
        fds: Vec<OwnedFd>,
    ) {
        self.handed(conn_id, listener_id, Some(peer), deadline_ns, fds)
            .await;
    }

    /// The primary handed a Unix-domain connection over.
    pub(crate) async fn on_unix_connection(
        &self,
        conn_id: u64,
        listener_id: u64,
        deadline_ns: u64,
        fds: Vec<OwnedFd>,
    ) {
        self.handed(conn_id, listener_id, None, deadline_ns, fds)
            .await;
    }

    /// A connection of any kind handed over: take the descriptor and queue
    /// it for its listener, whose `accept` acknowledges it; or refuse it at
    /// once (listener gone, worker draining), and the primary re-routes it.
    /// Counted among the worker's open connections from now on.
    async fn handed(
        &self,
        conn_id: u64,
        listener_id: u64,
        peer: Option<SocketAddr>,
        deadline_ns: u64,
        fds: Vec<OwnedFd>,
    ) {
        let queue = self.lock().handed.get(&listener_id).cloned();
        let queued = match (queue, fds.into_iter().next()) {
            (Some(queue), Some(fd)) => queue(Arrival {
                fd,
                peer,
                conn_id,
                deadline_ns,
                open: self.drain.open.track(),
            }),
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
fn take_handed(tx: &Sender, conn_id: u64, deadline_ns: u64) -> bool {
    let accepted = crate::clock::monotonic_ns() <= deadline_ns;
    send_soon(tx, ControlMsg::ConnectionAck { conn_id, accepted });
    accepted
}

/// A listener is dropped: every connection still queued for it goes back
/// to the primary, which gives it to another worker.
fn refuse_queued<T>(
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
    /// A drain that has already started, with nothing open: the drain of a
    /// listener that has nothing to accept (a UDP socket).
    pub(crate) fn already_drained() -> Self {
        DrainSignal {
            draining: watch::channel(true).1,
            open: OpenCount::default(),
            grace_ms: Arc::new(AtomicU64::new(0)),
        }
    }

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
