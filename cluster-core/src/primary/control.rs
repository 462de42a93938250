//! What acts on a running cluster from outside its event loop:
//! [`ClusterHandle`] (stats, scale, reload, upgrade, shutdown), usable
//! beside [`Cluster::run`], which consumes the `Cluster`; and the
//! operations it shares with `Cluster` (`Shared::stats`, `slots`,
//! `scale_to`).

use std::sync::Weak;

use tokio::sync::{mpsc, oneshot};

use crate::Payload;
use crate::error::{Error, Result};
use crate::event::SlotId;
use crate::primary::driver::Notice;
use crate::primary::{Cluster, Command, Shared, WorkerHandle};
use crate::stats::{ClusterStats, WorkerStats};

impl<M: Payload> Shared<M> {
    /// The live workers with their slot's restarts and whether they are its
    /// current worker, and the slots kept: cloned under the lock.
    fn snapshot(&self) -> (Vec<(WorkerHandle<M>, u64, bool)>, usize) {
        let st = self.lock();
        let workers: Vec<_> = st
            .workers
            .values()
            .map(|w| {
                let slot = st.slots.get(&w.slot());
                let restarts = slot.map_or(0, |s| s.starts.saturating_sub(1));
                let current = slot.and_then(|s| s.current) == Some(w.id());
                (w.clone(), restarts, current)
            })
            .collect();
        let slots = st.slots.values().filter(|s| !s.gave_up).count();
        (workers, slots)
    }

    /// A snapshot (`Cluster::stats`): handles cloned under the lock, `/proc`
    /// read outside it, on tokio's blocking pool (one task for them all):
    /// never on the primary's runtime threads.
    pub(crate) async fn stats(&self) -> ClusterStats {
        let (workers, slots) = self.snapshot();
        let pids = workers.iter().map(|(w, _, _)| w.pid()).collect();
        let procs = crate::stats::read_procs(pids).await;
        assemble(workers, procs, slots)
    }

    /// [`Shared::stats`] read on the calling thread: for a thread of its own
    /// that may block (the metrics endpoint's).
    #[cfg(feature = "prometheus")]
    pub(crate) fn stats_now(&self) -> ClusterStats {
        let (workers, slots) = self.snapshot();
        let procs = workers
            .iter()
            .map(|(w, _, _)| crate::stats::read_proc(w.pid()))
            .collect();
        assemble(workers, procs, slots)
    }

    /// The slots kept filled (those given up excluded).
    pub(crate) fn slots(&self) -> usize {
        self.lock().slots.values().filter(|s| !s.gave_up).count()
    }

    /// `Cluster::scale_to`.
    pub(crate) fn scale_to(&self, n: usize) -> Result<()> {
        let n = n.max(1);
        let (live, removed) = {
            let mut st = self.lock();
            if st.stopping {
                return Err(Error::Stopped);
            }
            let live: Vec<SlotId> = st
                .slots
                .iter()
                .filter(|(_, s)| !s.gave_up)
                .map(|(id, _)| *id)
                .collect();
            let mut removed = Vec::new();
            for slot in live.iter().skip(n).rev() {
                if let Some(s) = st.slots.remove(slot) {
                    let worker = s.current.and_then(|id| st.workers.get(&id).cloned());
                    removed.push((*slot, worker));
                }
            }
            (live.len(), removed)
        };
        for (slot, worker) in removed {
            let _ = self
                .notices
                .send(Notice::SlotRemoved(slot, worker.as_ref().map(|w| w.id())));
            if let Some(w) = worker {
                tokio::spawn(async move {
                    let _ = w.disconnect().await;
                });
            }
        }
        for _ in live..n {
            self.fork_slot(Vec::new())?;
        }
        Ok(())
    }
}

/// A handle to a running cluster, for a route, a signal handler or an
/// admin task beside the event loop ([`Cluster::run`] consumes the
/// `Cluster`): its stats, scaling, reloads, upgrades and shutdown. Cheap to
/// clone. It does not keep the cluster alive: once the cluster is gone
/// (dropped, or its supervisor ended after the shutdown), each call fails
/// with [`Error::Stopped`].
///
/// ```no_run
/// use cluster_core::{Cluster, Settings};
///
/// # async fn f() -> cluster_core::Result<()> {
/// let cluster = Cluster::<()>::new(Settings::from_env()?)?;
/// let handle = cluster.handle();
/// tokio::spawn(async move {
///     // An admin task: one more worker in a minute.
///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
///     let n = handle.slots()?;
///     handle.scale_to(n + 1)
/// });
/// cluster.run().await
/// # }
/// ```
pub struct ClusterHandle<M> {
    shared: Weak<Shared<M>>,
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl<M> Clone for ClusterHandle<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Weak::clone(&self.shared),
            commands: self.commands.clone(),
        }
    }
}

impl<M> std::fmt::Debug for ClusterHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").finish_non_exhaustive()
    }
}

impl<M: Payload> Cluster<M> {
    /// A [`ClusterHandle`] to this cluster.
    pub fn handle(&self) -> ClusterHandle<M> {
        ClusterHandle {
            shared: std::sync::Arc::downgrade(&self.shared),
            commands: self.commands.downgrade(),
        }
    }
}

impl<M: Payload> ClusterHandle<M> {
    fn shared(&self) -> Result<std::sync::Arc<Shared<M>>> {
        self.shared.upgrade().ok_or(Error::Stopped)
    }

    /// [`Cluster::stats`].
    pub async fn stats(&self) -> Result<ClusterStats> {
        Ok(self.shared()?.stats().await)
    }

    /// [`Cluster::slots`].
    pub fn slots(&self) -> Result<usize> {
        Ok(self.shared()?.slots())
    }

    /// [`Cluster::scale_to`].
    pub fn scale_to(&self, n: usize) -> Result<()> {
        self.shared()?.scale_to(n)
    }

    /// [`Cluster::has_given_up`] (`false` once the cluster is gone).
    pub fn has_given_up(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| s.lock().gave_up)
    }

    /// [`Cluster::reload`].
    pub async fn reload(&self) -> Result<()> {
        self.shared()?.reload().await
    }

    /// [`Cluster::upgrade`].
    pub async fn upgrade(&self) -> Result<u32> {
        crate::primary::upgrade::upgrade(&self.shared()?).await
    }

    /// [`Cluster::shutdown`]: returns once every worker has exited (at
    /// once if the cluster is already gone).
    pub async fn shutdown(&self) -> Result<()> {
        let Some(commands) = self.commands.upgrade() else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        if commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        Ok(())
    }
}

/// A snapshot's rows: each worker with its `/proc` figures.
fn assemble<M>(
    workers: Vec<(WorkerHandle<M>, u64, bool)>,
    procs: Vec<crate::stats::ProcStats>,
    slots: usize,
) -> ClusterStats {
    let workers = workers
        .into_iter()
        .zip(procs)
        .map(|((w, restarts, current), proc)| WorkerStats {
            id: w.id(),
            slot: w.slot(),
            pid: w.pid(),
            state: w.state(),
            current,
            uptime: w.uptime(),
            restarts,
            connections: w.connections(),
            messages: w.messages(),
            rss_bytes: proc.rss_bytes,
            cpu_time: proc.cpu_time,
        })
        .collect();
    ClusterStats { workers, slots }
}
