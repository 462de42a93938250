//! The worker side: [`Worker`].
//!
//! [`Worker::connect`] adopts the channel the primary left at a fixed
//! descriptor (named by `cluster-ipc`'s variable), exchanges the versioned
//! handshake, starts the receive loop and the heartbeat on the current tokio
//! runtime, and announces the worker as online.
//!
//! # Caveats
//! - When the primary's channel closes (the primary died or dropped its
//!   cluster), the worker process exits at once with code 0: no worker
//!   outlives its primary, even on systems without a parent-death signal.
//! - The heartbeat runs as a task of the worker's own runtime: a runtime
//!   blocked by synchronous work goes silent, which is the point.
//! - `send` returns once the message is queued; [`Worker::recv`] returning
//!   `None` and [`Worker::disconnect`] flush the queue. Call
//!   [`Worker::flush`] before leaving `main` any other way.

use std::net::SocketAddr;
use std::time::Duration;

use cluster_ipc::{Config, ControlMsg, Handshake, Incoming, Receiver, Sender};
use tokio::sync::mpsc;

use crate::Payload;
use crate::error::{Error, Result};
use crate::event::{SlotId, WorkerId};
use crate::role::{take_channel, worker_env};

/// How many decoded messages wait in the worker before the channel stops
/// being read (and the primary's `send` waits).
const INBOX: usize = 64;

/// This process as a worker of a cluster. `M` is the message type, both ways.
#[derive(Debug)]
pub struct Worker<M> {
    id: WorkerId,
    slot: SlotId,
    tx: Sender,
    inbox: mpsc::Receiver<M>,
}

impl<M: Payload> Worker<M> {
    /// Connect to the primary through the inherited channel. Call it once,
    /// inside a tokio runtime. Fails with [`Error::NotAWorker`] in a process
    /// not started by a primary.
    pub async fn connect() -> Result<Self> {
        let env = worker_env()?.ok_or(Error::NotAWorker)?;
        let fd = take_channel()?;
        let ours = Handshake::for_this_process(env.id.0);
        let (tx, rx, theirs) = cluster_ipc::handshake(fd, ours, Config::default())
            .await
            .map_err(gone)?;
        if theirs.worker_id != env.id.0 {
            return Err(Error::WrongWorker { worker: env.id });
        }
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        tokio::spawn(receive_loop::<M>(rx, inbox_tx));
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

    /// The next message from the primary; `None` once the primary asked this
    /// worker to disconnect (what was sent is flushed by then): finish the
    /// work in flight, then return from `main` (exit 0).
    pub async fn recv(&mut self) -> Option<M> {
        let msg = self.inbox.recv().await;
        if msg.is_none() {
            let _ = self.tx.flush().await;
        }
        msg
    }

    /// Tell the primary this worker listens on `addr` (its `Listening` event;
    /// a reload then waits for the replacement to listen too).
    pub async fn listening(&self, addr: SocketAddr) -> Result<()> {
        self.tx
            .send_control(&ControlMsg::Listening { addr }, Vec::new())
            .await
            .map_err(gone)
    }

    /// Leave the cluster on purpose: the primary will not restart this
    /// worker. Finish the work in flight, then return from `main`.
    pub async fn disconnect(self) -> Result<()> {
        self.tx
            .send_control(&ControlMsg::Disconnect, Vec::new())
            .await
            .map_err(gone)?;
        self.tx.flush().await.map_err(gone)
    }
}

fn gone(e: cluster_ipc::Error) -> Error {
    match e {
        cluster_ipc::Error::PeerClosed { .. } | cluster_ipc::Error::Closed => Error::PrimaryGone,
        other => Error::Ipc(other),
    }
}

/// Dispatch every frame from the primary, in one place: user messages to the
/// inbox, control messages here (listen replies and connection hand-off plug
/// in beside `Disconnect`). When the channel closes, the primary is gone and
/// so is this worker.
async fn receive_loop<M: Payload>(mut rx: Receiver, inbox: mpsc::Sender<M>) {
    let mut inbox = Some(inbox);
    loop {
        match rx.recv::<M>().await {
            Ok(Incoming::User(msg, _fds)) => {
                if let Some(tx) = &inbox {
                    // A dropped Worker no longer reads: discard.
                    let _ = tx.send(msg).await;
                }
            }
            Ok(Incoming::Control(ControlMsg::Disconnect, _)) => {
                // Ends `recv()` once the queued messages are read.
                inbox = None;
            }
            Ok(Incoming::Control(..)) => {}
            Err(e) if e.is_peer_closed() => std::process::exit(0),
            Err(e) => {
                eprintln!("cluster worker: channel to the primary failed: {e}");
                std::process::exit(70);
            }
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
