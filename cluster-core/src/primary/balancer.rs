//! Listening through the primary: the listeners it binds for its workers,
//! the scheduling of every accepted connection, and the hand-off with its
//! acknowledgement.
//!
//! One [`Balancer`] per cluster. A worker's `Listen` request binds (or finds)
//! one listener per distinct address; port 0 is resolved once and every later
//! request for it (or for the real port) shares it.
//!
//! - Distributed policies: an accept task per listener asks that listener's
//!   [`Scheduler`] for a slot, hands the socket to the slot's newest ready
//!   worker (`NewConnection`, the descriptor attached) and keeps a duplicate
//!   until the worker's `ConnectionAck`. A refusal, a failed send or the
//!   worker's death before the ack re-routes the connection with that slot
//!   excluded; it is closed only when no worker is left to take it.
//! - `none`: every listening worker gets a duplicate of the listening socket
//!   and accepts itself.
//!
//! A slot's row in a scheduler is `Ready` while one of its workers listens on
//! that address and is not draining (a reload's replacement and the worker
//! it replaces share the row: the newest takes the new connections), and is
//! removed when none is left; a restarted worker re-adds it, so a sticky
//! client finds its slot again.
//!
//! This file keeps the tables and the workers' membership; `bind.rs` binds
//! the listeners and answers listen requests, `handoff.rs` accepts,
//! schedules and hands the connections over and tracks their acks and
//! closes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sched_policy::{Policy, Scheduler, Slot, WorkerState};
use tokio::task::AbortHandle;

use crate::event::{SlotId, WorkerId};
use crate::settings::PolicyChoice;

mod bind;
mod handoff;

use handoff::{Open, Pending, close_open, hand_off_failed};

/// A worker's connection counters, shared with its `WorkerHandle`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    handed: AtomicU64,
    open: AtomicU64,
}

impl Counters {
    pub(crate) fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            handed: self.handed.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
        }
    }

    fn opened(&self) {
        self.handed.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    fn closed(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// A worker's connection counters as the primary sees them (distributed
/// policies only: under `none` the workers accept by themselves and the
/// primary counts nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Connections the worker acknowledged (took over) so far.
    pub handed: u64,
    /// Of those, the ones it has not closed yet.
    pub open: u64,
}

/// One worker listening on one listener.
#[derive(Debug, Clone, Copy)]
struct Route {
    worker: WorkerId,
    /// The worker's listen request, echoed as `listener_id` in each
    /// `NewConnection` so the worker finds its `Listener`.
    request_id: u64,
}

struct ListenerEntry {
    addr: SocketAddr,
    /// `none`: the listening socket, duplicated to each worker.
    shared: Option<std::net::TcpListener>,
    /// Distributed: the scheduler of this listener's connections.
    sched: Option<Scheduler<Box<dyn Policy>>>,
    /// The workers listening here, by slot, oldest first.
    routes: BTreeMap<SlotId, Vec<Route>>,
    accept_task: Option<AbortHandle>,
    /// A duplicate of the listening socket, handed on by an upgrade
    /// (`upgrade.rs`); dropped when the listener closes.
    kept: Option<std::os::fd::OwnedFd>,
}

struct WorkerNet {
    slot: SlotId,
    counters: Arc<Counters>,
    sender: Option<cluster_ipc::Sender>,
    draining: bool,
}

#[derive(Default)]
struct State {
    choice: Option<PolicyChoice>,
    listeners: Vec<ListenerEntry>,
    by_addr: HashMap<SocketAddr, usize>,
    workers: HashMap<WorkerId, WorkerNet>,
    pending: HashMap<u64, Pending>,
    open: HashMap<u64, Open>,
    next_conn: u64,
    closed: bool,
}

/// The primary's listeners and connection hand-off. See the module docs.
#[derive(Default)]
pub(crate) struct Balancer {
    state: Mutex<State>,
}

fn sched_slot(slot: SlotId) -> Slot {
    Slot::new(u32::try_from(slot.0).unwrap_or(u32::MAX))
}

impl Balancer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy of listeners bound from now on.
    pub(crate) fn set_choice(&self, choice: PolicyChoice) {
        self.lock().choice = Some(choice);
    }

    /// A worker was started.
    pub(crate) fn add_worker(&self, id: WorkerId, slot: SlotId, counters: Arc<Counters>) {
        self.lock().workers.insert(
            id,
            WorkerNet {
                slot,
                counters,
                sender: None,
                draining: false,
            },
        );
    }

    /// The worker's channel is up.
    pub(crate) fn set_sender(&self, id: WorkerId, sender: cluster_ipc::Sender) {
        if let Some(w) = self.lock().workers.get_mut(&id) {
            w.sender = Some(sender);
        }
    }

    /// The worker takes no new connections (it disconnects or shuts down).
    pub(crate) fn set_draining(&self, id: WorkerId) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(w) = st.workers.get_mut(&id) else {
            return;
        };
        if w.draining {
            return;
        }
        w.draining = true;
        let slot = w.slot;
        for entry in &mut st.listeners {
            refresh_row(entry, slot, &st.workers);
        }
    }

    /// The worker's channel closed or its process ended: it holds nothing
    /// any more; what it had not acknowledged goes to another worker.
    pub(crate) fn worker_gone(&self, id: WorkerId) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(w) = st.workers.remove(&id) else {
            return;
        };
        let theirs: Vec<u64> = st
            .open
            .iter()
            .filter(|(_, o)| o.worker == id)
            .map(|(c, _)| *c)
            .collect();
        for conn_id in theirs {
            close_open(st, conn_id);
        }
        for entry in &mut st.listeners {
            if let Some(routes) = entry.routes.get_mut(&w.slot) {
                routes.retain(|r| r.worker != id);
            }
            refresh_row(entry, w.slot, &st.workers);
        }
        let unacked: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| p.worker == id)
            .map(|(c, _)| *c)
            .collect();
        for conn_id in unacked {
            hand_off_failed(st, id, conn_id);
        }
    }

    /// Stop accepting: close every listener (new connections are refused by
    /// the kernel). Connections already accepted are still handed over.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        for entry in &mut st.listeners {
            if let Some(task) = entry.accept_task.take() {
                task.abort();
            }
            entry.shared = None;
            entry.kept = None;
        }
    }

    /// Duplicates of the open listening sockets, for a new primary.
    pub(crate) fn listening_fds(
        &self,
    ) -> std::io::Result<Vec<(Option<String>, std::os::fd::OwnedFd)>> {
        let st = self.lock();
        st.listeners
            .iter()
            .filter_map(|e| e.kept.as_ref())
            .map(|fd| Ok((None, fd.try_clone()?)))
            .collect()
    }
}

/// The worker of `slot` that takes new connections on this listener: the
/// newest one that is not draining.
fn route_of(
    routes: &BTreeMap<SlotId, Vec<Route>>,
    slot: SlotId,
    workers: &HashMap<WorkerId, WorkerNet>,
) -> Option<Route> {
    routes
        .get(&slot)?
        .iter()
        .rev()
        .find(|r| workers.get(&r.worker).is_some_and(|w| !w.draining))
        .copied()
}

/// Bring the slot's row of the listener's scheduler in line with its
/// routes: ready with a live route, draining with only draining ones,
/// removed with none.
fn refresh_row(entry: &mut ListenerEntry, slot: SlotId, workers: &HashMap<WorkerId, WorkerNet>) {
    let ready = route_of(&entry.routes, slot, workers).is_some();
    let any = entry.routes.get(&slot).is_some_and(|r| !r.is_empty());
    if !any {
        entry.routes.remove(&slot);
    }
    let Some(sched) = entry.sched.as_mut() else {
        return;
    };
    let s = sched_slot(slot);
    let present = sched.table().get(s).is_some();
    match (present, any) {
        (false, false) => return,
        (true, false) => {
            let _ = sched.remove_worker(s);
            return;
        }
        (false, true) => {
            let _ = sched.add_worker(s);
        }
        (true, true) => {}
    }
    let state = if ready {
        WorkerState::Ready
    } else {
        WorkerState::Draining
    };
    let _ = sched.set_state(s, state);
}
