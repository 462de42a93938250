//! The tasks behind one worker: the *driver* owns the child process (waits for
//! it, signals it), the *reader* dispatches the frames it sends, and two
//! forwarders copy its piped output line by line. They report to the
//! supervisor through [`Notice`]s, the one place where events are ordered.

use std::sync::Arc;
use std::time::Duration;

use std::os::fd::OwnedFd;

use cluster_ipc::{Config, ControlMsg, Handshake, Incoming};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::Payload;
use crate::error::Error;
use crate::event::{Exit, Message, SlotId, WorkerId};
use crate::primary::balancer::Balancer;
use crate::primary::handle::{KillRequest, WorkerHandle};

/// What the per-worker tasks (and the fork path) tell the supervisor.
pub(crate) enum Notice<M> {
    Forked(WorkerHandle<M>),
    Online(WorkerId),
    Listening(WorkerId, std::net::SocketAddr),
    Heartbeat(WorkerId),
    /// The worker itself asked to disconnect.
    WorkerDisconnect(WorkerId),
    Message(Message<M>),
    ChannelError(WorkerId, Error),
    ChannelClosed(WorkerId),
    Exited(WorkerId, Exit),
    RestartDue(SlotId),
    /// Time to tell the service manager's watchdog the supervisor runs.
    Watchdog,
    /// An upgrade ended: the new primary's pid, or why it failed.
    Upgrade(std::result::Result<u32, String>),
}

/// How long the driver waits, after the process ended, for the reader to
/// deliver what the worker sent before dying.
const DRAIN: Duration = Duration::from_millis(250);

/// Own the child until it is reaped; then report its exit. Only the driver
/// signals the child, and spawn-core's `Child::kill` does nothing once it was
/// reaped, so a reused pid is never signalled.
pub(crate) async fn drive<M: Payload>(
    mut child: spawn_core::Child,
    id: WorkerId,
    reader: tokio::task::JoinHandle<()>,
    mut kill_rx: mpsc::UnboundedReceiver<KillRequest>,
    notices: mpsc::UnboundedSender<Notice<M>>,
) {
    let exit = loop {
        tokio::select! {
            close = child.wait() => {
                break match close {
                    Ok(close) => Exit::from_close(close),
                    // waitpid cannot fail for our own unreaped child; if it
                    // does, the child is unobservable: report an abnormal end.
                    Err(_) => Exit::Code(-1),
                };
            }
            Some(req) = kill_rx.recv() => {
                let _ = if req.group {
                    child.kill_group(req.signal)
                } else {
                    child.kill(req.signal)
                };
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN, reader).await;
    let _ = notices.send(Notice::Exited(id, exit));
}

/// Open the channel (the versioned handshake), publish the sender, then
/// dispatch every frame the worker sends, in one place: control messages
/// (online, listening, heartbeat, disconnect, listen requests, connection
/// acknowledgements and closes, the last three through the [`Balancer`])
/// and user messages, each of which takes one credit
/// so that a primary that does not consume events makes the worker wait.
pub(crate) async fn read_loop<M: Payload>(
    channel: OwnedFd,
    id: WorkerId,
    sender: watch::Sender<Option<cluster_ipc::Sender>>,
    credits: Arc<Semaphore>,
    notices: mpsc::UnboundedSender<Notice<M>>,
    balancer: Arc<Balancer>,
) {
    read_frames(channel, id, &sender, credits, &notices, &balancer).await;
    // The peer is gone: close our half too (handles may outlive the worker),
    // and re-route what it had not acknowledged.
    sender.send_replace(None);
    balancer.worker_gone(id);
    let _ = notices.send(Notice::ChannelClosed(id));
}

async fn read_frames<M: Payload>(
    channel: OwnedFd,
    id: WorkerId,
    sender: &watch::Sender<Option<cluster_ipc::Sender>>,
    credits: Arc<Semaphore>,
    notices: &mpsc::UnboundedSender<Notice<M>>,
    balancer: &Arc<Balancer>,
) {
    let ours = Handshake::new(id.0, std::process::id());
    let rx = match cluster_ipc::handshake(channel, ours, Config::default()).await {
        Ok((tx, rx, theirs)) if theirs.worker_id == id.0 => {
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
    loop {
        let notice = match rx.recv_raw().await {
            Ok(Incoming::Control(c, _fds)) => match c {
                ControlMsg::Online => Notice::Online(id),
                ControlMsg::Listening { addr } => Notice::Listening(id, addr),
                ControlMsg::Heartbeat { .. } => Notice::Heartbeat(id),
                ControlMsg::Disconnect => {
                    balancer.set_draining(id);
                    Notice::WorkerDisconnect(id)
                }
                ControlMsg::Listen(req) => match balancer.listen(id, &tx, req).await {
                    Some(addr) => Notice::Listening(id, addr),
                    None => continue,
                },
                ControlMsg::ConnectionAck { conn_id, accepted } => {
                    balancer.ack(id, conn_id, accepted);
                    continue;
                }
                ControlMsg::ConnectionClosed { conn_id } => {
                    balancer.closed(id, conn_id);
                    continue;
                }
                _ => continue,
            },
            Ok(Incoming::User(frame, _fds)) => {
                let Ok(credit) = Arc::clone(&credits).acquire_owned().await else {
                    break;
                };
                match frame.decode::<M>() {
                    Ok(value) => Notice::Message(Message::new(id, value, credit)),
                    Err(e) => {
                        let _ = notices.send(Notice::ChannelError(id, Error::Ipc(e)));
                        break;
                    }
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
}

/// The longest piece of output forwarded as one line.
const MAX_LINE: u64 = 64 * 1024;

/// Which of the worker's streams a forwarder copies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Copy a worker's output line by line, each line prefixed with its id and
/// written with one `write_all` under the stream's lock, so lines of
/// different workers never interleave mid-line.
pub(crate) async fn forward_lines<R: AsyncRead + Unpin>(io: R, id: WorkerId, stream: Stream) {
    use std::io::Write;
    let mut reader = BufReader::new(io);
    let mut line = Vec::with_capacity(256);
    let prefix = format!("[worker {id}] ");
    loop {
        line.clear();
        line.extend_from_slice(prefix.as_bytes());
        // A line longer than the cap is forwarded in pieces.
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&line),
            Stream::Stderr => std::io::stderr().lock().write_all(&line),
        };
    }
}
