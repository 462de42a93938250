//! The worker side: [`Worker`].
//!
//! [`Worker::connect`] adopts the channel the primary left at a fixed
//! descriptor (named by `cluster-ipc`'s variable), exchanges the versioned
//! handshake, starts the receive loop and the heartbeat on the current tokio
//! runtime, and announces the worker as online.
//!
//! # Caveats
//! - The library never ends the process. When the primary's channel closes
//!   (the primary died or dropped its cluster), the worker drains, as if it
//!   were asked to disconnect: [`Worker::recv`] returns `Ok(None)` after the
//!   messages already received, [`Listener::accept`] returns `None`, and
//!   [`Worker::primary_gone`] resolves; what comes next is the program's
//!   choice (a worker that ends its main loop exits 0). No orphan is left
//!   behind either way: a worker has the parent-death signal SIGKILL
//!   (Linux), so it dies with its primary whatever it does; on systems
//!   without that signal, a worker that ignores the end of its channel
//!   keeps running.
//! - A message from the primary that does not decode as `M` is an error for
//!   that message only: [`Worker::recv`] returns it, and the next call
//!   carries on with the next message.
//! - The heartbeat runs as a task of the worker's own runtime: a runtime
//!   blocked by synchronous work goes silent, which is the point.
//! - `send` returns once the message is queued; [`Worker::recv`] returning
//!   `Ok(None)` and [`Worker::disconnect`] flush the queue. Call
//!   [`Worker::flush`] before leaving `main` any other way.

mod listen;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_ipc::{
    Config, ControlMsg, Credit, Handshake, Incoming, ListenOnRequest, ListenRequest, ListenTarget,
    Receiver, Sender, SocketKind,
};
use tokio::sync::{mpsc, watch};

use crate::Payload;
use crate::endpoint::UnixAddr;
use crate::error::{Error, Result};
use crate::event::{SlotId, WorkerId};
use crate::role::{take_channel, worker_env};

pub use listen::{
    Connection, DrainSignal, FdListener, ListenStream, Listener, UnixConnection, UnixListener,
};
use listen::{Net, Requested};

/// A message (or the error of one) waiting for [`Worker::recv`], with its
/// room in the channel's window: the primary's sends wait once the window
/// is full of messages the program has not taken, while the channel itself
/// is always read (hand-offs and the disconnect never wait for `recv`).
type Inbox<M> = mpsc::UnboundedReceiver<(Result<M>, Credit)>;

/// This process as a worker of a cluster. `M` is the message type, both ways.
#[derive(Debug)]
pub struct Worker<M> {
    id: WorkerId,
    slot: SlotId,
    tx: Sender,
    inbox: Inbox<M>,
    net: Arc<Net>,
    /// True once the channel from the primary closed.
    gone: watch::Receiver<bool>,
}

impl<M: Payload> Worker<M> {
    /// Connect to the primary through the inherited channel. Call it once,
    /// inside a tokio runtime. Fails with [`Error::NotAWorker`] in a process
    /// not started by a primary.
    pub async fn connect() -> Result<Self> {
        let env = worker_env()?.ok_or(Error::NotAWorker)?;
        let fd = take_channel()?;
        let ours = Handshake::for_this_process(env.id.0).with_token(env.token);
        let (tx, rx, theirs) = cluster_ipc::handshake(fd, ours, Config::default())
            .await
            .map_err(gone)?;
        if theirs.worker_id != env.id.0 || theirs.token != env.token {
            return Err(Error::WrongWorker { worker: env.id });
        }
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let net = Net::new(tx.clone());
        let (gone_tx, gone_rx) = watch::channel(false);
        tokio::spawn(receive_loop::<M>(rx, inbox_tx, Arc::clone(&net), gone_tx));
        tx.send_control(&ControlMsg::Online, Vec::new())
            .await
            .map_err(gone)?;
        tx.flush().await.map_err(gone)?;
        if let Some(every) = env.heartbeat {
            tokio::spawn(heartbeat(tx.clone(), every));
        }
        Ok(Self {
            id: env.id,
            slot: env.slot,
            tx,
            inbox,
            net,
            gone: gone_rx,
        })
    }

    /// This worker's id, as the primary knows it.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// The slot this worker fills.
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// Send a message to the primary. Waits while the send queue is full,
    /// which happens when the primary holds too many undelivered messages of
    /// this worker (backpressure).
    pub async fn send(&self, msg: &M) -> Result<()> {
        self.tx.send(msg).await.map_err(gone)
    }

    /// Wait until everything sent so far is written to the channel.
    pub async fn flush(&self) -> Result<()> {
        self.tx.flush().await.map_err(gone)
    }

    /// The next message from the primary.
    ///
    /// `Ok(None)` once the primary asked this worker to disconnect, or is
    /// gone (see [`primary_gone`](Self::primary_gone)), after every message
    /// received before that; what this worker sent is flushed by then:
    /// finish the work in flight, then return from `main` (exit 0).
    ///
    /// An error is about one message: one that does not decode as `M`
    /// ([`Error::Ipc`] with `cluster-ipc`'s `MalformedPayload`), after which
    /// the next call returns the next message; or the channel failing (a
    /// malformed frame), after which the next call returns `Ok(None)`.
    /// So `while let Some(msg) = worker.recv().await? { … }` ends on either,
    /// and a program that wants to skip bad messages matches on the error.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if it is dropped before it completes (a `select!` whose
    /// other branch won), no message is lost; the next call returns it.
    pub async fn recv(&mut self) -> Result<Option<M>> {
        match self.inbox.recv().await {
            // Taken: the message's room goes back to the primary.
            Some((item, _credit)) => item.map(Some),
            None => {
                let _ = self.tx.flush().await;
                Ok(None)
            }
        }
    }

    /// Resolves once the channel from the primary closed: the primary exited,
    /// died or dropped its cluster (at once if it already did). The worker
    /// drains by then ([`recv`](Self::recv) ends after the messages already
    /// received, [`Listener::accept`] returns `None`); sends fail with
    /// [`Error::PrimaryGone`]. It does not resolve when the primary asks the
    /// worker to disconnect (see [`drain_signal`](Self::drain_signal) for
    /// that). The future owns what it needs: spawn it or keep it in a
    /// `select!` loop.
    ///
    /// On Linux a worker is also killed (SIGKILL) when its primary dies, so
    /// this is mostly for a primary that dropped its cluster, and for other
    /// systems.
    pub fn primary_gone(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut gone = self.gone.clone();
        async move {
            // An error means the receive loop's task is gone (its runtime
            // shut down): the channel is gone with it.
            let _ = gone.wait_for(|g| *g).await;
        }
    }

    /// Listen on `addr` through the primary (Node's `server.listen` in a
    /// worker): the primary binds the address once for all the workers that
    /// ask for it (port 0: once, and every worker gets the same real port),
    /// and the [`Listener`] yields the accepted connections, handed over by
    /// the primary under a distributed policy (round-robin, sticky,
    /// least-connections, power of two choices) or accepted here on the
    /// shared socket under `none`. The primary then reports this worker's
    /// [`Event::Listening`](crate::Event::Listening) with the real address,
    /// and, under a distributed policy, starts giving it connections.
    ///
    /// `addr` is what tokio's `TcpListener::bind` takes: a `SocketAddr`,
    /// `("127.0.0.1", 3000)`, `"127.0.0.1:3000"`, `"localhost:3000"` (a
    /// name is resolved here, in the worker, and its addresses are tried in
    /// turn; [`Error::Resolve`] if it resolves to none).
    ///
    /// A bind that fails in the primary comes back as [`Error::Listen`],
    /// with the OS error as its source (`AddrInUse`, `AddrNotAvailable`, …).
    ///
    /// The graceful drain: once the worker is asked to disconnect,
    /// [`Listener::accept`] returns `None`; finish the connections in
    /// flight, then return from `main` (exit 0).
    ///
    /// ```no_run
    /// use cluster_core::Worker;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// async fn serve(worker: Worker<String>) -> cluster_core::Result<()> {
    ///     let mut listener = worker.listen(("127.0.0.1", 3000)).await?;
    ///     let mut in_flight = tokio::task::JoinSet::new();
    ///     while let Some((mut conn, peer)) = listener.accept().await {
    ///         let id = worker.id();
    ///         in_flight.spawn(async move {
    ///             let hello = format!("hello {peer} from worker {id}\n");
    ///             let _ = conn.write_all(hello.as_bytes()).await;
    ///         }); // dropping `conn` closes it and tells the primary
    ///     }
    ///     // Draining: no new connections; let the open ones finish.
    ///     while in_flight.join_next().await.is_some() {}
    ///     Ok(())
    /// }
    /// ```
    pub async fn listen(&self, addr: impl tokio::net::ToSocketAddrs) -> Result<Listener> {
        let mut last = None;
        for addr in tokio::net::lookup_host(addr)
            .await
            .map_err(Error::Resolve)?
        {
            match self.listen_addr(addr).await {
                Ok(listener) => return Ok(listener),
                Err(e @ Error::Listen { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::Resolve(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            ))
        }))
    }

    /// [`listen`](Self::listen) on one address.
    async fn listen_addr(&self, addr: SocketAddr) -> Result<Listener> {
        let requested = Requested::Tcp(addr);
        let (request_id, answer) = self.net.request(requested.clone());
        let req = ListenRequest {
            request_id,
            addr,
            kind: SocketKind::Tcp,
        };
        match self.ask(ControlMsg::Listen(req), answer).await? {
            FdListener::Tcp(l) => Ok(l),
            _ => Err(wrong_kind(&requested)),
        }
    }

    /// Listen on a Unix-domain stream socket through the primary (Node's
    /// `server.listen({ path })` in a worker): a filesystem path or, on
    /// Linux, an abstract name ([`UnixAddr`]). The primary binds it once for
    /// every worker that asks, and the connections come as with
    /// [`listen`](Self::listen), into the same [`Listener`] (over a
    /// `UnixStream`): handed over under a distributed policy (sticky has no
    /// client address to key on here and uses round-robin), accepted here on
    /// the shared socket under `none`. The primary then reports
    /// [`Event::ListeningOn`](crate::Event::ListeningOn).
    ///
    /// A socket file left by a crashed run (nothing accepts on it: a
    /// connect is refused) is replaced; a live one fails with
    /// [`ListenErrorKind::AddrInUse`](crate::ListenErrorKind). The primary
    /// keeps the socket bound for the life of the cluster, as it keeps a TCP
    /// port (a client waits through a restart), and removes the file at
    /// shutdown. The file's permissions are what the primary's umask gives;
    /// see [`listen_unix_with_mode`](Self::listen_unix_with_mode).
    ///
    /// Fails with [`Error::ListenOn`], whose `kind` is `AddrInUse`,
    /// `NotFound` (no such directory), `PermissionDenied` or `PathTooLong`
    /// (longer than `sun_path`'s 107 bytes), or [`Error::PrimaryGone`] (as
    /// every listen request does) when the primary is gone before it
    /// answers.
    pub async fn listen_unix(&self, addr: impl Into<UnixAddr>) -> Result<UnixListener> {
        self.listen_unix_inner(addr.into(), None).await
    }

    /// [`listen_unix`](Self::listen_unix), and the primary sets the socket
    /// file's permission bits to `mode` after binding it (Node's
    /// `readableAll`/`writableAll`: `0o666` lets every user connect). Only
    /// the first worker's request binds, so only its mode counts; ignored
    /// for an abstract name, which has no file.
    pub async fn listen_unix_with_mode(
        &self,
        addr: impl Into<UnixAddr>,
        mode: u32,
    ) -> Result<UnixListener> {
        self.listen_unix_inner(addr.into(), Some(mode)).await
    }

    async fn listen_unix_inner(&self, addr: UnixAddr, mode: Option<u32>) -> Result<UnixListener> {
        let wire = ListenTarget::Unix {
            addr: addr.to_wire(),
            mode,
        };
        let requested = Requested::On(crate::ListenTarget::Unix(addr));
        match self.listen_on(&requested, wire).await? {
            FdListener::Unix(l) => Ok(l),
            _ => Err(wrong_kind(&requested)),
        }
    }

    /// Bind a UDP address through the primary (Node's `dgram` bind in a
    /// worker, which is always shared): the primary binds it once (port 0:
    /// once, the same real port for every worker) and every worker that
    /// binds it receives on a duplicate of that one socket, whatever the
    /// scheduling policy — there is nothing to hand over; the kernel gives
    /// each datagram to one of the waiting readers. Replies sent from it
    /// come from the shared address. The primary then reports
    /// [`Event::ListeningOn`](crate::Event::ListeningOn).
    pub async fn bind_udp(&self, addr: SocketAddr) -> Result<tokio::net::UdpSocket> {
        let requested = Requested::On(crate::ListenTarget::Udp(addr));
        match self.listen_on(&requested, ListenTarget::Udp(addr)).await? {
            FdListener::Udp(s) => Ok(s),
            _ => Err(wrong_kind(&requested)),
        }
    }

    /// Listen on a socket the primary holds, by its descriptor number in
    /// the primary (Node's `listen({ fd })`): one given to
    /// [`Cluster::inherit_socket`](crate::Cluster::inherit_socket), which
    /// returned that number. What it is decides the [`FdListener`]: TCP and
    /// Unix-domain stream sockets are served as by
    /// [`listen`](Self::listen) and [`listen_unix`](Self::listen_unix), a UDP
    /// socket as by [`bind_udp`](Self::bind_udp). Fails with
    /// [`Error::ListenOn`] of kind `UnknownDescriptor` for a number the
    /// primary was not given.
    pub async fn listen_fd(&self, fd: i32) -> Result<FdListener> {
        let requested = Requested::On(crate::ListenTarget::Fd(fd));
        self.listen_on(&requested, ListenTarget::Fd(fd)).await
    }

    /// Listen on whatever `target` names, through the one listen path:
    /// [`listen`](Self::listen) for a TCP address,
    /// [`listen_unix`](Self::listen_unix) for a Unix-domain socket,
    /// [`bind_udp`](Self::bind_udp) for a UDP address,
    /// [`listen_fd`](Self::listen_fd) for a descriptor of the primary; the
    /// [`FdListener`] of that kind (with the same errors). For a program
    /// whose operator picks the kind (a port or a socket path), with one
    /// `serve` for both:
    ///
    /// ```no_run
    /// # #[cfg(feature = "hyper")]
    /// # async fn f(worker: cluster_core::Worker<()>) -> cluster_core::Result<()> {
    /// # let service = hyper::service::service_fn(|_: hyper::Request<hyper::body::Incoming>| async {
    /// #     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
    /// # });
    /// use cluster_core::{ListenTarget, UnixAddr};
    ///
    /// let target = match std::env::var("SOCKET_PATH") {
    ///     Ok(path) => ListenTarget::Unix(UnixAddr::from(path.as_str())),
    ///     Err(_) => ListenTarget::Tcp(([127, 0, 0, 1], 3000).into()),
    /// };
    /// cluster_core::hyper::serve(worker.listen_target(&target).await?, service).await;
    /// # Ok(()) }
    /// ```
    pub async fn listen_target(&self, target: &crate::ListenTarget) -> Result<FdListener> {
        Ok(match target {
            crate::ListenTarget::Tcp(addr) => FdListener::Tcp(self.listen_addr(*addr).await?),
            crate::ListenTarget::Unix(addr) => {
                FdListener::Unix(self.listen_unix_inner(addr.clone(), None).await?)
            }
            crate::ListenTarget::Udp(addr) => FdListener::Udp(self.bind_udp(*addr).await?),
            crate::ListenTarget::Fd(fd) => self.listen_fd(*fd).await?,
        })
    }

    async fn listen_on(&self, requested: &Requested, wire: ListenTarget) -> Result<FdListener> {
        let (request_id, answer) = self.net.request(requested.clone());
        let req = ListenOnRequest {
            request_id,
            target: wire,
        };
        self.ask(ControlMsg::ListenOn(req), answer).await
    }

    /// Send a listen request of any kind and wait for its answer:
    /// `Error::PrimaryGone` if the primary is gone before it answers.
    async fn ask(
        &self,
        request: ControlMsg,
        answer: tokio::sync::oneshot::Receiver<Result<FdListener>>,
    ) -> Result<FdListener> {
        self.tx
            .send_control(&request, Vec::new())
            .await
            .map_err(gone)?;
        answer.await.map_err(|_| Error::PrimaryGone)?
    }

    /// A signal that resolves when this worker starts draining (see
    /// [`DrainSignal`]).
    pub fn drain_signal(&self) -> DrainSignal {
        self.net.drain_signal()
    }

    /// How long, once this worker drains, a connection may stay idle before
    /// the HTTP integrations close it (see [`DrainSignal`]): long enough for
    /// a keep-alive client to send its next request and be told, with
    /// `Connection: close`, to move to a new connection, and for a
    /// connection handed over just before the drain to bring its first
    /// request. Keep it below the primary's
    /// [`shutdown_deadline`](crate::Settings::shutdown_deadline). Default:
    /// 5 s (Node's `server.keepAliveTimeout`).
    pub fn set_drain_grace(&self, grace: Duration) -> &Self {
        self.net.set_drain_grace(grace);
        self
    }

    /// Resolves when this worker should stop serving: it drains, then every
    /// connection it took over has closed or the drain grace has passed
    /// ([`DrainSignal::done`]). Give it to axum's `with_graceful_shutdown`:
    /// requests then in flight finish, and the connections still idle close.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        self.net.drain_signal().done()
    }

    /// The tower layer that marks every response sent while this worker
    /// drains with `Connection: close` (see [`crate::axum`]): add it to the
    /// axum app served on this worker's listener.
    #[cfg(feature = "axum")]
    pub fn drain_layer(&self) -> crate::axum::DrainLayer {
        crate::axum::DrainLayer::new(self.drain_signal())
    }

    /// Tell the primary this worker listens on `addr` (its `Listening` event;
    /// a reload then waits for the replacement to listen too). Only for a
    /// socket the worker bound by itself: [`listen`](Self::listen) reports
    /// its own.
    pub async fn listening(&self, addr: SocketAddr) -> Result<()> {
        self.tx
            .send_control(&ControlMsg::Listening { addr }, Vec::new())
            .await
            .map_err(gone)
    }

    /// Leave the cluster on purpose: the primary will not restart this
    /// worker. Finish the work in flight, then return from `main`.
    pub async fn disconnect(self) -> Result<()> {
        self.net.drain();
        self.tx.send_disconnect().await.map_err(gone)?;
        self.tx.flush().await.map_err(gone)
    }
}

/// The primary answered with another kind of socket than asked for.
fn wrong_kind(requested: &Requested) -> Error {
    requested.error(
        cluster_ipc::ListenErrorKind::Unsupported,
        std::io::Error::other("the primary answered with another kind of socket"),
    )
}

fn gone(e: cluster_ipc::Error) -> Error {
    match e {
        cluster_ipc::Error::PeerClosed { .. } | cluster_ipc::Error::Closed => Error::PrimaryGone,
        other => Error::Ipc(other),
    }
}

/// Dispatch every frame from the primary, in one place: user messages (or
/// the error of one that does not decode) to the inbox, with their credit,
/// control messages here (listen replies, connection hand-off, `Disconnect`,
/// which also stops every listener). The loop never waits for the program:
/// the window bounds the inbox. When the channel closes, the primary is
/// gone: the worker drains and `gone` turns true; the process goes on (the
/// user decides).
async fn receive_loop<M: Payload>(
    mut rx: Receiver,
    inbox: mpsc::UnboundedSender<(Result<M>, Credit)>,
    net: Arc<Net>,
    gone: watch::Sender<bool>,
) {
    let mut inbox = InboxSender::open(inbox);
    loop {
        match rx.recv_raw().await {
            Ok(Incoming::User(mut frame, _fds)) => {
                let credit = frame.take_credit();
                // One message that is not an `M`: the channel goes on.
                let item = frame.decode::<M>().map_err(Error::Ipc);
                inbox.message(item, credit);
            }
            Ok(Incoming::Control(ControlMsg::Disconnect { after_messages }, _)) => {
                // Ends `recv()` once the messages sent before it are read
                // (it overtook those still on their way), and `accept()`
                // once the connections taken over are.
                inbox.close_after(after_messages);
                net.drain();
            }
            Ok(Incoming::Control(ControlMsg::ListenReply(reply), fds)) => net.on_reply(reply, fds),
            Ok(Incoming::Control(
                ControlMsg::NewConnection {
                    conn_id,
                    listener_id,
                    peer,
                    deadline_ns,
                },
                fds,
            )) => {
                net.on_connection(conn_id, listener_id, peer, deadline_ns, fds)
                    .await;
            }
            Ok(Incoming::Control(ControlMsg::ListenOnReply(reply), fds)) => {
                net.on_listen_on_reply(reply, fds);
            }
            Ok(Incoming::Control(
                ControlMsg::NewUnixConnection {
                    conn_id,
                    listener_id,
                    deadline_ns,
                },
                fds,
            )) => {
                net.on_unix_connection(conn_id, listener_id, deadline_ns, fds)
                    .await;
            }
            // Only a worker sends these; a primary never does. Nothing here
            // waits for one, so one from a broken peer is dropped (its
            // descriptors closed) and the loop goes on.
            Ok(Incoming::Control(
                ControlMsg::Online
                | ControlMsg::Listen(_)
                | ControlMsg::Listening { .. }
                | ControlMsg::ConnectionAck { .. }
                | ControlMsg::ConnectionClosed { .. }
                | ControlMsg::Heartbeat { .. }
                | ControlMsg::ListenOn(_),
                _,
            )) => {}
            Err(e) if e.is_peer_closed() => break,
            Err(e) => {
                // The receiver is closed after this one error.
                inbox.send(Err(Error::Ipc(e)), Credit::none());
                break;
            }
        }
    }
    net.primary_gone();
    gone.send_replace(true);
}

/// The receive loop's end of the inbox: open until the primary's
/// `Disconnect` and the messages it overtook are delivered, or the `Worker`
/// is dropped (then what comes is discarded, its credit given back).
struct InboxSender<M> {
    tx: Option<mpsc::UnboundedSender<(Result<M>, Credit)>>,
    /// User messages received so far.
    received: u64,
    /// The count of messages after which a `Disconnect` closes the inbox.
    close_at: Option<u64>,
}

impl<M> InboxSender<M> {
    fn open(tx: mpsc::UnboundedSender<(Result<M>, Credit)>) -> Self {
        InboxSender {
            tx: Some(tx),
            received: 0,
            close_at: None,
        }
    }

    /// A user message, or the error of one that did not decode.
    fn message(&mut self, item: Result<M>, credit: Credit) {
        self.received += 1;
        self.send(item, credit);
        self.close_if_due();
    }

    fn send(&mut self, item: Result<M>, credit: Credit) {
        if let Some(tx) = &self.tx
            && tx.send((item, credit)).is_err()
        {
            self.tx = None;
        }
    }

    fn close_after(&mut self, messages: u64) {
        self.close_at = Some(messages);
        self.close_if_due();
    }

    fn close_if_due(&mut self) {
        if self.close_at.is_some_and(|at| self.received >= at) {
            self.tx = None;
        }
    }
}

async fn heartbeat(tx: Sender, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        seq += 1;
        if tx
            .send_control(&ControlMsg::Heartbeat { seq }, Vec::new())
            .await
            .is_err()
        {
            return;
        }
    }
}
