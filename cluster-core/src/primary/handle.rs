//! [`WorkerHandle`]: the primary's handle on one worker (Node's `Worker`).

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use spawn_core::Signal;
use tokio::sync::{mpsc, watch};

use crate::Payload;
use crate::error::{Error, Result};
use crate::event::{SlotId, WorkerId};
use crate::primary::balancer::{Balancer, ConnectionStats, Counters};
use crate::state::WorkerState;

/// A signal request for the worker's driver, which owns the child and so
/// never signals a reaped (possibly reused) pid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KillRequest {
    pub(crate) signal: Signal,
    pub(crate) group: bool,
}

pub(crate) struct HandleInner {
    pub(crate) id: WorkerId,
    pub(crate) slot: SlotId,
    pub(crate) pid: u32,
    /// The sending half, once the handshake is done; dropped (closed) if the
    /// channel never came up.
    pub(crate) sender: watch::Receiver<Option<cluster_ipc::Sender>>,
    pub(crate) state: watch::Sender<WorkerState>,
    pub(crate) after_disconnect: AtomicBool,
    pub(crate) kill_tx: mpsc::UnboundedSender<KillRequest>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) balancer: Arc<Balancer>,
    /// User messages received from it.
    pub(crate) messages: std::sync::atomic::AtomicU64,
    /// When it was started.
    pub(crate) started: std::time::Instant,
    /// Its `max_requests` limit, jitter included (`None`: no limit).
    pub(crate) request_limit: Option<u64>,
    /// Broadcasts waiting for room in its window (it does not read its
    /// messages): at most [`MAX_PENDING_BROADCASTS`].
    pub(crate) pending_broadcasts: std::sync::atomic::AtomicUsize,
}

/// How many broadcasts a worker whose window is full (one that does not
/// read its messages) may have waiting for it; later ones pass it by.
pub(crate) const MAX_PENDING_BROADCASTS: usize = 16;

/// What [`WorkerHandle::offer`] did with a broadcast.
pub(crate) enum Offered {
    /// Queued on the channel now.
    Sent,
    /// Waiting (in a task) for room in the worker's window.
    Pending,
    /// Not sent: the worker is gone, disconnected, or too far behind.
    Missed,
}

/// The primary's handle on one worker. Cheap to clone; every clone talks to
/// the same worker. It stays usable after the worker died: `send` and `kill`
/// then return [`Error::WorkerGone`].
pub struct WorkerHandle<M> {
    pub(crate) inner: Arc<HandleInner>,
    _msg: PhantomData<fn(M) -> M>,
}

impl<M> Clone for WorkerHandle<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _msg: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for WorkerHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("id", &self.inner.id)
            .field("slot", &self.inner.slot)
            .field("pid", &self.inner.pid)
            .field("state", &self.state())
            .finish()
    }
}

impl<M> WorkerHandle<M> {
    pub(crate) fn new(inner: Arc<HandleInner>) -> Self {
        Self {
            inner,
            _msg: PhantomData,
        }
    }

    /// The worker's id (from 1, never reused).
    pub fn id(&self) -> WorkerId {
        self.inner.id
    }

    /// The slot it fills.
    pub fn slot(&self) -> SlotId {
        self.inner.slot
    }

    /// Its process id (stale once it is [`WorkerState::Dead`]).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Where it is in its life.
    pub fn state(&self) -> WorkerState {
        *self.inner.state.borrow()
    }

    /// Its connection counters: connections the primary handed over and the
    /// worker acknowledged, and those it still holds open. Always zero under
    /// the `none` policy, where the worker accepts by itself.
    pub fn connections(&self) -> ConnectionStats {
        self.inner.counters.stats()
    }

    /// How many user messages the primary received from it.
    pub fn messages(&self) -> u64 {
        self.inner.messages.load(Ordering::Relaxed)
    }

    /// How long since it was started.
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// Whether it was disconnected (by either side), so its exit is intended
    /// and it will not be restarted.
    pub fn exited_after_disconnect(&self) -> bool {
        self.inner.after_disconnect.load(Ordering::Acquire)
    }
}

impl<M: Payload> WorkerHandle<M> {
    /// Send a message. Waits while the worker's window is full of messages
    /// its program has not taken (backpressure); connection hand-offs and
    /// the disconnect never wait behind them. Fails with [`Error::ChannelClosed`] once the worker
    /// was disconnected (by either side; Node's `ERR_IPC_CHANNEL_CLOSED`),
    /// and with [`Error::WorkerGone`] once it is dead.
    pub async fn send(&self, msg: &M) -> Result<()> {
        if self.exited_after_disconnect() {
            return Err(Error::ChannelClosed {
                worker: self.inner.id,
            });
        }
        let sender = self.sender().await?;
        sender.send(msg).await.map_err(|e| self.channel_error(e))
    }

    /// Offer a broadcast, encoded once for every worker, without ever
    /// waiting: queued at once if the worker's window has room, otherwise
    /// left to a task that waits for room (up to
    /// [`MAX_PENDING_BROADCASTS`] of them per worker).
    pub(crate) fn offer(&self, msg: &Arc<cluster_ipc::Encoded>) -> Offered {
        if self.exited_after_disconnect() || !self.state().is_alive() {
            return Offered::Missed;
        }
        let sender = self.inner.sender.borrow().clone();
        if let Some(sender) = &sender {
            match sender.try_send_encoded(msg) {
                Ok(()) => return Offered::Sent,
                Err(cluster_ipc::TrySendError::Full(())) => {}
                Err(_) => return Offered::Missed,
            }
        }
        // Its window is full, or its channel is not open yet: a task waits.
        let pending = &self.inner.pending_broadcasts;
        if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_BROADCASTS {
            pending.fetch_sub(1, Ordering::AcqRel);
            return Offered::Missed;
        }
        let inner = Arc::clone(&self.inner);
        let msg = Arc::clone(msg);
        tokio::spawn(async move {
            let mut opened = inner.sender.clone();
            let sender = opened
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|s| s.clone());
            if let Some(sender) = sender {
                // Until there is room, or the channel ends.
                let _ = sender.send_encoded(&msg).await;
            }
            inner.pending_broadcasts.fetch_sub(1, Ordering::AcqRel);
        });
        Offered::Pending
    }

    /// Send a signal to the worker process.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        self.request_kill(KillRequest {
            signal,
            group: false,
        })
    }

    /// Send a signal to the worker's whole process group (it and anything it
    /// started that stayed in its group).
    pub fn kill_group(&self, signal: Signal) -> Result<()> {
        self.request_kill(KillRequest {
            signal,
            group: true,
        })
    }

    /// Ask the worker to finish its in-flight work and exit. Its exit then
    /// counts as intended: [`exited_after_disconnect`](Self::exited_after_disconnect)
    /// is true and it is not restarted.
    pub async fn disconnect(&self) -> Result<()> {
        self.check_alive()?;
        self.mark_disconnected();
        // No new connection goes to it from now on.
        self.inner.balancer.set_draining(self.inner.id);
        let sender = self.sender().await?;
        sender
            .send_disconnect()
            .await
            .map_err(|e| self.channel_error(e))
    }

    /// The sender, waiting for the handshake if it is not done yet.
    async fn sender(&self) -> Result<cluster_ipc::Sender> {
        self.check_alive()?;
        let gone = || Error::WorkerGone {
            worker: self.inner.id,
        };
        let mut rx = self.inner.sender.clone();
        let ready = rx.wait_for(Option::is_some).await.map_err(|_| gone())?;
        ready.as_ref().cloned().ok_or_else(gone)
    }

    /// Wait until the worker is ready (`Listening`, or `Online` when
    /// `listening_needed` is false); false if it disconnected or died first.
    pub(crate) async fn wait_ready(&self, listening_needed: bool) -> bool {
        let mut rx = self.inner.state.subscribe();
        let want = if listening_needed {
            WorkerState::Listening
        } else {
            WorkerState::Online
        };
        match rx.wait_for(|s| *s >= want).await.map(|s| *s) {
            Ok(s) => s.is_ready(),
            Err(_) => false,
        }
    }

    pub(crate) fn mark_disconnected(&self) {
        self.inner.after_disconnect.store(true, Ordering::Release);
    }

    pub(crate) fn advance(&self, next: WorkerState) {
        self.inner.state.send_if_modified(|s| {
            let new = s.advance(next);
            let changed = new != *s;
            *s = new;
            changed
        });
    }

    fn check_alive(&self) -> Result<()> {
        if self.state().is_alive() {
            Ok(())
        } else {
            Err(Error::WorkerGone {
                worker: self.inner.id,
            })
        }
    }

    fn request_kill(&self, req: KillRequest) -> Result<()> {
        self.check_alive()?;
        self.inner.kill_tx.send(req).map_err(|_| Error::WorkerGone {
            worker: self.inner.id,
        })
    }

    fn channel_error(&self, e: cluster_ipc::Error) -> Error {
        match e {
            cluster_ipc::Error::PeerClosed { .. } | cluster_ipc::Error::Closed => {
                Error::WorkerGone {
                    worker: self.inner.id,
                }
            }
            other => Error::Ipc(other),
        }
    }
}
