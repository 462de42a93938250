//! The worker side: [`Worker`].
//!
//! [`Worker::connect`] takes the channel the primary left at a fixed
//! descriptor (named in [`WORKER_ENV`](crate::role::WORKER_ENV)), starts the
//! receive loop and the heartbeat on the current tokio runtime, and announces
//! the worker as online.
//!
//! # Caveats
//! - When the primary's channel closes (the primary died or dropped its
//!   cluster), the worker process exits at once with code 0: no worker
//!   outlives its primary, even on systems without a parent-death signal.
//! - The heartbeat runs as a task of the worker's own runtime: a runtime
//!   blocked by synchronous work goes silent, which is the point.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, mpsc};

use crate::Payload;
use crate::error::{Error, Result};
use crate::event::{SlotId, WorkerId};
use crate::role::worker_env;
use crate::wire::{Control, FrameReader, FrameWriter, Incoming};

static TAKEN: AtomicBool = AtomicBool::new(false);

/// How many decoded messages wait in the worker before the channel stops
/// being read (and the primary's `send` waits).
const INBOX: usize = 64;

/// This process as a worker of a cluster. `M` is the message type, both ways.
#[derive(Debug)]
pub struct Worker<M> {
    id: WorkerId,
    slot: SlotId,
    writer: Arc<Mutex<FrameWriter<OwnedWriteHalf>>>,
    inbox: mpsc::Receiver<M>,
}

impl<M: Payload> Worker<M> {
    /// Connect to the primary through the inherited channel. Call it once,
    /// inside a tokio runtime. Fails with [`Error::NotAWorker`] in a process
    /// not started by a primary.
    pub async fn connect() -> Result<Self> {
        let env = worker_env()?.ok_or(Error::NotAWorker)?;
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyConnected);
        }
        // SAFETY: the primary placed the channel at `env.fd` and named it in
        // the variable, which is read once per process; `TAKEN` makes this the
        // only owner of the descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(env.fd) };
        let std_stream = std::os::unix::net::UnixStream::from(fd);
        std_stream.set_nonblocking(true).map_err(Error::Io)?;
        set_cloexec(&std_stream).map_err(Error::Io)?;
        let stream = tokio::net::UnixStream::from_std(std_stream).map_err(Error::Io)?;
        let (read_half, write_half) = stream.into_split();
        let writer = Arc::new(Mutex::new(FrameWriter::new(write_half)));
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        tokio::spawn(receive_loop::<M>(FrameReader::new(read_half), inbox_tx));
        writer.lock().await.send_control(&Control::Online).await?;
        if let Some(every) = env.heartbeat {
            tokio::spawn(heartbeat(Arc::clone(&writer), every));
        }
        Ok(Self {
            id: env.id,
            slot: env.slot,
            writer,
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

    /// Send a message to the primary; waits while the primary holds too many
    /// undelivered messages of this worker (backpressure).
    pub async fn send(&self, msg: &M) -> Result<()> {
        self.writer.lock().await.send_user(msg).await.map_err(gone)
    }

    /// Wait until everything sent so far is written to the channel (sends
    /// are written before they return; kept for symmetry with queued
    /// transports).
    pub async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The next message from the primary; `None` once the primary asked this
    /// worker to disconnect: finish the work in flight, then return from
    /// `main` (exit 0).
    pub async fn recv(&mut self) -> Option<M> {
        self.inbox.recv().await
    }

    /// Tell the primary this worker listens on `addr` (its `Listening` event;
    /// a reload then waits for the replacement to listen too).
    pub async fn listening(&self, addr: SocketAddr) -> Result<()> {
        self.writer
            .lock()
            .await
            .send_control(&Control::Listening { addr })
            .await
            .map_err(gone)
    }

    /// Leave the cluster on purpose: the primary will not restart this
    /// worker. Finish the work in flight, then return from `main`.
    pub async fn disconnect(self) -> Result<()> {
        let mut w = self.writer.lock().await;
        w.send_control(&Control::Disconnect).await.map_err(gone)?;
        w.close().await;
        Ok(())
    }
}

fn gone(e: Error) -> Error {
    match e {
        Error::Io(_) => Error::PrimaryGone,
        other => other,
    }
}

fn set_cloexec(s: &std::os::unix::net::UnixStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let res = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if res == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Dispatch every frame from the primary, in one place: user messages to the
/// inbox, control messages here (`listen` replies and connection hand-off
/// plug in beside `Disconnect`). When the channel closes, the primary is gone
/// and so is this worker.
async fn receive_loop<M: Payload>(mut reader: FrameReader<OwnedReadHalf>, inbox: mpsc::Sender<M>) {
    let mut inbox = Some(inbox);
    loop {
        match reader.recv().await {
            Ok(Some(Incoming::User(bytes))) => {
                let msg = match Incoming::decode_user::<M>(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("cluster worker: bad message from the primary: {e}");
                        std::process::exit(70);
                    }
                };
                if let Some(tx) = &inbox {
                    // A dropped Worker no longer reads: discard.
                    let _ = tx.send(msg).await;
                }
            }
            Ok(Some(Incoming::Control(Control::Disconnect))) => {
                // Ends `recv()` once the queued messages are read.
                inbox = None;
            }
            Ok(Some(Incoming::Control(_))) => {}
            Ok(None) | Err(_) => std::process::exit(0),
        }
    }
}

async fn heartbeat(writer: Arc<Mutex<FrameWriter<OwnedWriteHalf>>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        seq += 1;
        if writer
            .lock()
            .await
            .send_control(&Control::Heartbeat { seq })
            .await
            .is_err()
        {
            return;
        }
    }
}
