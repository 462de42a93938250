//! The tasks behind one worker: the *driver* owns the child process (waits for
//! it, signals it), the *reader* dispatches the frames it sends, and two
//! forwarders copy its piped output line by line (to the queues of
//! [`crate::output`], never to the primary's stdout directly). They report to the
//! supervisor through [`Notice`]s, the one place where events are ordered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::OwnedFd;

use cluster_ipc::{Config, ControlMsg, Credit, Handshake, Incoming};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, watch};

use crate::Payload;
use crate::error::Error;
use crate::event::{Close, Message, SlotId, WorkerId};
use crate::primary::balancer::Balancer;
use crate::primary::handle::{KillRequest, WorkerHandle};

/// What the per-worker tasks (and the fork path) tell the supervisor.
pub(crate) enum Notice<M> {
    Forked(WorkerHandle<M>),
    Online(WorkerId),
    Listening(WorkerId, std::net::SocketAddr),
    ListeningOn(WorkerId, crate::Endpoint),
    Heartbeat(WorkerId),
    /// The worker itself asked to disconnect.
    WorkerDisconnect(WorkerId),
    Message(Message<M>),
    /// A user message that did not decode; the channel goes on. The credit
    /// is the message's room in the window, held until the program takes
    /// the event.
    MessageError(WorkerId, Error, Credit),
    ChannelError(WorkerId, Error),
    ChannelClosed(WorkerId),
    Exited(WorkerId, Close),
    RestartDue(SlotId),
    /// A slot's worker could not be started again (the spawn, done in a
    /// task of its own, failed).
    ForkFailed(SlotId, Error),
    /// Time to tell the service manager's watchdog the supervisor runs.
    Watchdog,
    /// An upgrade ended: the new primary's pid, or why it failed.
    Upgrade(std::result::Result<u32, String>),
    /// After an upgrade: the connections this primary accepted are handed
    /// over (or the wait ended); drain now.
    HandedOver,
    /// A worker reached a recycling limit: its replacement starts now.
    Recycling(WorkerId, SlotId, crate::event::RecycleReason),
    /// `Cluster::scale_to` removed a slot (its worker, draining).
    SlotRemoved(SlotId, Option<WorkerId>),
    /// A rolling reload (the API's or SIGHUP's) started.
    ReloadStarted,
    /// A rolling reload ended, with its error if it failed.
    ReloadFinished(Option<Error>),
    /// The grace after readiness ended: report the inherited sockets
    /// still unused (`unused.rs`).
    CheckUnused,
}

/// Once the process is reaped, the longest the reader waits for the next
/// frame before it ends the channel: everything the dead process sent is in
/// the socket already, and comes at once; a channel that stays open and
/// silent is held by someone else (a program the worker started before it
/// adopted the channel).
const DRAIN: Duration = Duration::from_millis(250);

/// Once the process is reaped, the longest the reader goes on reading: a
/// program the worker started that holds the channel and keeps sending
/// cannot delay the worker's `Exit` for ever.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Own the child until it is reaped; then tell the reader (`reaped`), wait
/// until it has delivered everything the worker sent, and report its exit:
/// `Exit` is the worker's last event, however late the user reads events.
/// Only the driver signals the child, and spawn-core's `Child::kill` does
/// nothing once it was reaped, so a reused pid is never signalled.
pub(crate) async fn drive<M: Payload>(
    mut child: spawn_core::Child,
    id: WorkerId,
    reader: tokio::task::JoinHandle<()>,
    reaped: watch::Sender<bool>,
    mut kill_rx: mpsc::UnboundedReceiver<KillRequest>,
    notices: mpsc::UnboundedSender<Notice<M>>,
) {
    let exit = loop {
        tokio::select! {
            close = child.wait() => {
                break match close {
                    Ok(close) => close,
                    // waitpid cannot fail for our own unreaped child; if it
                    // does, the child is unobservable: report an abnormal end.
                    Err(_) => Close::Exited(-1),
                };
            }
            Some(req) = kill_rx.recv() => {
                let _ = if req.group {
                    child.signal_group(req.signal)
                } else {
                    child.signal(req.signal)
                };
            }
        }
    };
    reaped.send_replace(true);
    // The reader ends by itself once the process is reaped (end of stream,
    // DRAIN of silence, or DRAIN_LIMIT), without waiting for credits.
    let _ = reader.await;
    let _ = notices.send(Notice::Exited(id, exit));
}

/// Open the channel (the versioned handshake), publish the sender, then
/// dispatch every frame the worker sends, in one place: control messages
/// (online, listening, heartbeat, disconnect, listen requests, connection
/// acknowledgements and closes, the last three through the [`Balancer`])
/// and user messages. The loop never waits for the program: a user
/// message holds its room in the channel's window (its [`Credit`]) until
/// the program takes it, so a primary that does not consume events makes
/// the worker's *messages* wait, while its control frames (acks, closes,
/// heartbeats) are read and handled at once. Once the driver reaped the
/// process (`reaped`), what the dead process sent is delivered, then the
/// loop ends.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_loop<M: Payload>(
    channel: OwnedFd,
    id: WorkerId,
    token: u64,
    config: Config,
    sender: watch::Sender<Option<cluster_ipc::Sender>>,
    reaped: watch::Receiver<bool>,
    notices: mpsc::UnboundedSender<Notice<M>>,
    balancer: Arc<Balancer>,
) {
    let mut reaped = Reaped {
        rx: reaped,
        deadline: None,
    };
    read_frames(
        channel,
        id,
        token,
        config,
        &sender,
        &mut reaped,
        &notices,
        &balancer,
    )
    .await;
    // The peer is gone: close our half too (handles may outlive the worker),
    // and re-route what it had not acknowledged.
    sender.send_replace(None);
    balancer.worker_gone(id);
    let _ = notices.send(Notice::ChannelClosed(id));
}

/// Whether the driver reaped the worker's process, and since when the
/// reader drains what is left.
struct Reaped {
    rx: watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
}

impl Reaped {
    /// Whether the process was reaped (or its driver is gone: the runtime
    /// that ran it shut down).
    fn now(&mut self) -> bool {
        if self.deadline.is_none() && (*self.rx.borrow() || self.rx.has_changed().is_err()) {
            self.start_draining();
        }
        self.deadline.is_some()
    }

    /// Resolves once the process was reaped (or its driver is gone).
    async fn wait(&mut self) {
        let _ = self.rx.wait_for(|r| *r).await;
        if self.deadline.is_none() {
            self.start_draining();
        }
    }

    fn start_draining(&mut self) {
        self.deadline = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
    }

    /// The next frame; `None` when, the process reaped, nothing more comes
    /// within [`DRAIN`] (or [`DRAIN_LIMIT`] is over).
    async fn next_frame(
        &mut self,
        rx: &mut cluster_ipc::Receiver,
    ) -> Option<Result<Incoming, cluster_ipc::Error>> {
        if !self.now() {
            tokio::select! {
                biased;
                // Cancel-safe: a frame read in part stays buffered.
                frame = rx.recv_raw() => return Some(frame),
                () = self.wait() => {}
            }
        }
        let limit = self.deadline?;
        let until = limit.min(tokio::time::Instant::now() + DRAIN);
        tokio::time::timeout_at(until, rx.recv_raw()).await.ok()
    }
}

/// At most this many distinct addresses a worker may report as listening
/// on by itself (`ControlMsg::Listening`, for a socket it opened alone):
/// past it, its reports are dropped, so a broken worker cannot grow the
/// primary's events without bound (a real worker listens on a handful).
const MAX_LISTENING_REPORTS: usize = 1024;

/// The notices a worker's control frames may raise once (or once per
/// address): repeats from a broken worker raise nothing.
#[derive(Default)]
struct Reported {
    online: bool,
    disconnect: bool,
    listening: HashSet<std::net::SocketAddr>,
}

impl Reported {
    fn first_listening(&mut self, addr: std::net::SocketAddr) -> bool {
        self.listening.len() < MAX_LISTENING_REPORTS && self.listening.insert(addr)
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_frames<M: Payload>(
    channel: OwnedFd,
    id: WorkerId,
    token: u64,
    config: Config,
    sender: &watch::Sender<Option<cluster_ipc::Sender>>,
    reaped: &mut Reaped,
    notices: &mpsc::UnboundedSender<Notice<M>>,
    balancer: &Arc<Balancer>,
) {
    let ours = Handshake::new(id.0, std::process::id()).with_token(token);
    let rx = match cluster_ipc::handshake(channel, ours, config).await {
        Ok((tx, rx, theirs)) if theirs.worker_id == id.0 && theirs.token == token => {
            balancer.set_sender(id, tx.clone());
            sender.send_replace(Some(tx.clone()));
            (tx, rx)
        }
        Ok(_) => {
            let _ = notices.send(Notice::ChannelError(id, Error::WrongWorker { worker: id }));
            return;
        }
        Err(e) => {
            if !e.is_peer_closed() {
                let _ = notices.send(Notice::ChannelError(id, Error::Ipc(e)));
            }
            return;
        }
    };
    let (tx, mut rx) = rx;
    let mut reported = Reported::default();
    // Listen requests are answered beside the loop: opening a listener may
    // wait (a stale socket file's check, bounded), and acknowledgements and
    // heartbeats must not wait behind it. Awaited before the loop ends, so
    // their notices precede the worker's `Exit`.
    let mut listens = tokio::task::JoinSet::new();
    loop {
        let Some(frame) = reaped.next_frame(&mut rx).await else {
            break;
        };
        let notice = match frame {
            Ok(Incoming::Control(c, _fds)) => match c {
                ControlMsg::Online if !std::mem::replace(&mut reported.online, true) => {
                    Notice::Online(id)
                }
                ControlMsg::Online => continue,
                ControlMsg::Listening { addr } if reported.first_listening(addr) => {
                    Notice::Listening(id, addr)
                }
                ControlMsg::Listening { .. } => continue,
                ControlMsg::Heartbeat { .. } => Notice::Heartbeat(id),
                ControlMsg::Disconnect { .. } => {
                    balancer.set_draining(id);
                    if std::mem::replace(&mut reported.disconnect, true) {
                        continue;
                    }
                    Notice::WorkerDisconnect(id)
                }
                ControlMsg::Listen(req) => {
                    let (balancer, tx, notices) =
                        (Arc::clone(balancer), tx.clone(), notices.clone());
                    listens.spawn(async move {
                        if let Some(addr) = balancer.listen(id, &tx, req).await {
                            let _ = notices.send(Notice::Listening(id, addr));
                        }
                    });
                    continue;
                }
                ControlMsg::ListenOn(req) => {
                    let (balancer, tx, notices) =
                        (Arc::clone(balancer), tx.clone(), notices.clone());
                    listens.spawn(async move {
                        let bound = balancer.listen_on(id, &tx, req).await;
                        if let Some(notice) = bound.and_then(|b| listening_on(id, b)) {
                            let _ = notices.send(notice);
                        }
                    });
                    continue;
                }
                ControlMsg::ConnectionAck { conn_id, accepted } => {
                    balancer.ack(id, conn_id, accepted);
                    continue;
                }
                ControlMsg::ConnectionClosed { conn_id } => {
                    balancer.closed(id, conn_id);
                    continue;
                }
                // Only the primary sends these: a worker that does breaks
                // the protocol, which is a channel error like a frame that
                // does not decode.
                msg @ (ControlMsg::ListenReply(_)
                | ControlMsg::NewConnection { .. }
                | ControlMsg::ListenOnReply(_)
                | ControlMsg::NewUnixConnection { .. }) => {
                    let error = cluster_ipc::Error::MisdirectedControl {
                        message: msg.name(),
                    };
                    let _ = notices.send(Notice::ChannelError(id, Error::Ipc(error)));
                    break;
                }
            },
            Ok(Incoming::User(mut frame, _fds)) => {
                let credit = frame.take_credit();
                match frame.decode::<M>() {
                    Ok(value) => Notice::Message(Message::new(id, value, credit)),
                    // That message only: the channel goes on.
                    Err(e) => Notice::MessageError(id, Error::Ipc(e), credit),
                }
            }
            Err(e) if e.is_peer_closed() => break,
            Err(e) => {
                let _ = notices.send(Notice::ChannelError(id, Error::Ipc(e)));
                break;
            }
        };
        if notices.send(notice).is_err() {
            return;
        }
    }
    while listens.join_next().await.is_some() {}
}

pub(crate) use crate::output::Stream;

/// The notice of a worker listening on what a `ListenOn` request bound.
fn listening_on<M>(id: WorkerId, bound: cluster_ipc::Bound) -> Option<Notice<M>> {
    use crate::{Endpoint, UnixAddr};
    Some(match bound {
        cluster_ipc::Bound::Unix(addr) => {
            Notice::ListeningOn(id, Endpoint::Unix(UnixAddr::from_wire(addr)))
        }
        cluster_ipc::Bound::Udp(addr) => Notice::ListeningOn(id, Endpoint::Udp(addr)),
        // A descriptor that is a TCP listener.
        cluster_ipc::Bound::Tcp(addr) => Notice::Listening(id, addr),
        _ => return None,
    })
}

/// Copy a worker's output line by line to the primary's `stream`, each line
/// framed by `format` and queued whole for the stream's writer thread
/// ([`crate::output`]): this task never writes to the primary's stdout or
/// stderr itself, so it never blocks a thread of the runtime. When the
/// queue is full (the primary's output stalls) it waits before reading
/// more, so the worker's pipe fills and the worker's own writes block.
pub(crate) async fn forward_lines<R: AsyncRead + Unpin>(
    io: R,
    id: WorkerId,
    stream: Stream,
    format: crate::output::LineFormat,
) {
    crate::output::forward(crate::output::Sink::of(stream), io, id, stream, format).await;
}
