//! Listening through the primary: the listeners it holds for its workers,
//! the scheduling of every accepted connection, and the hand-off with its
//! acknowledgement.
//!
//! One [`Balancer`] per cluster. Every kind of listener — a TCP address, a
//! Unix-domain stream socket, a UDP address, a socket the primary was given
//! ([`InheritedSocket`], from `Cluster::inherit_socket`, systemd's socket
//! activation or an upgrading primary) — is one [`ListenerEntry`], opened
//! once by one path (`listeners.rs`: found by what a worker asks for, or
//! adopted, or bound) the first time a worker asks, and kept until the
//! cluster closes: a listener outlives its workers, so a client that
//! connects while none listens waits in the backlog (or is parked) for the
//! next one, whatever the kind.
//!
//! - Distributed policies (stream sockets): an accept task per listener
//!   asks that listener's [`Scheduler`] for a slot, hands the socket to the
//!   slot's newest ready worker (`NewConnection`, or `NewUnixConnection`,
//!   the descriptor attached) and keeps a duplicate until the worker's
//!   `ConnectionAck`. A refusal, a failed send or the worker's death before
//!   the ack re-routes the connection with that slot excluded.
//! - Bounds: a worker has at most `window` connections handed over and not
//!   acknowledged (the scheduler's window); one not acknowledged by its
//!   deadline (plus a margin) is taken back and re-routed, and the worker is
//!   stalled (not eligible) until it answers. The accept task accepts only
//!   as many connections as the eligible workers have room for: with none,
//!   it stops accepting (the kernel's backlog holds the clients) until a
//!   worker has room again. A connection with nowhere to go (its worker
//!   died, none other eligible) is *parked* and handed over first when a
//!   worker has room; it is closed only when the balancer closes (shutdown,
//!   or every slot gave up). So the primary holds at most
//!   `workers x window` (+ one accept batch) connections per listener.
//! - Shared (`none`, and UDP whatever the policy): every listening worker
//!   gets a duplicate of the socket and accepts (or receives) itself.
//!
//! A slot's row in a scheduler is `Ready` while one of its workers listens on
//! that listener and is not draining (a reload's replacement and the worker
//! it replaces share the row: the newest takes the new connections), and is
//! removed when none is left; a restarted worker re-adds it, so a sticky
//! client finds its slot again. Every new route wakes the listener (its
//! parked connections, its accept task), whatever the kind.
//!
//! This file keeps the tables and the workers' membership; `listeners.rs`
//! opens the listeners and answers listen requests (one path for every
//! kind), `unix.rs` holds what only a Unix-domain socket needs (its file,
//! the stale-file check), `handoff.rs` accepts, schedules and hands the
//! connections over and tracks their acks and closes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_ipc::Bound;
use sched_policy::{Availability, Policy, Scheduler};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::event::{SlotId, WorkerId};
use crate::settings::PolicyChoice;

mod handoff;
mod listeners;
mod unix;

pub use listeners::InheritedSocket;
pub(crate) use listeners::{Held, ListenKey};

use handoff::{Open, Pending, close_open, hand_off_failed, unpark};

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
    /// hand-off so the worker finds its listener.
    request_id: u64,
}

/// One listener of the cluster, whatever its kind. See the module docs.
struct ListenerEntry {
    /// What it is bound to, as the workers are told.
    bound: Bound,
    /// The primary's own copy of the listening socket, kept until the
    /// listener closes (`Balancer::close`, or `stop_accepting` once an
    /// upgrade handed it on): duplicated for the workers when shared, and
    /// for the accept task and a new primary.
    socket: Option<InheritedSocket>,
    /// Its name in `LISTEN_FDNAMES` when a new primary gets it.
    name: Option<String>,
    /// The socket file this cluster owns (a Unix-domain path it bound, or
    /// one an upgrading primary handed on): removed when the listener
    /// closes, if the path still names it.
    file: Option<unix::SocketFile>,
    /// Every worker gets a duplicate of the socket and accepts (or
    /// receives) itself: `none`, and UDP whatever the policy.
    shared: bool,
    /// Handed over: the scheduler of this listener's connections.
    sched: Option<Scheduler<Box<dyn Policy>>>,
    /// The workers listening here, by slot, oldest first.
    routes: BTreeMap<SlotId, Vec<Route>>,
    /// Its accept loop (handed over only): aborted when the listener
    /// closes, and awaited once an upgrade handed it on
    /// ([`Balancer::stop_accepting`]).
    accept_task: Option<JoinHandle<()>>,
    /// Connections that had nowhere to go, oldest first: handed over before
    /// anything new is accepted.
    parked: VecDeque<u64>,
    /// Whether the accept task waits for room (on `room_notify`).
    waiting: bool,
    room_notify: Arc<Notify>,
}

struct WorkerNet {
    slot: SlotId,
    counters: Arc<Counters>,
    sender: Option<cluster_ipc::Sender>,
    draining: bool,
    /// A hand-off to it expired; cleared when it answers anything.
    stalled: bool,
}

/// The hand-off bounds, from the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandoffLimits {
    /// Connections handed to a worker, per listener, not yet acknowledged.
    pub(crate) window: u32,
    /// How long a worker has to acknowledge one.
    pub(crate) deadline: Duration,
}

impl Default for HandoffLimits {
    fn default() -> Self {
        Self {
            window: crate::settings::DEFAULT_HANDOFF_WINDOW,
            deadline: crate::settings::DEFAULT_HANDOFF_DEADLINE,
        }
    }
}

impl HandoffLimits {
    /// How long after its deadline a hand-off is taken back: the time an
    /// ack sent just before the deadline has to arrive (a quarter of the
    /// deadline, at least 50 ms).
    pub(crate) fn margin(&self) -> Duration {
        (self.deadline / 4).max(Duration::from_millis(50))
    }
}

#[derive(Default)]
struct State {
    choice: Option<PolicyChoice>,
    limits: HandoffLimits,
    listeners: Vec<ListenerEntry>,
    /// Each listener under every key a worker may ask for it by (its
    /// address, the address requested, its descriptor number).
    by_key: HashMap<ListenKey, usize>,
    /// Sockets given to the primary (`Cluster::inherit_socket`) that no
    /// worker asked for yet.
    given: Vec<listeners::Held>,
    workers: HashMap<WorkerId, WorkerNet>,
    pending: HashMap<u64, Pending>,
    open: HashMap<u64, Open>,
    next_conn: u64,
    closed: bool,
    /// An accept loop found no hand-off awaiting its ack and parked its
    /// sweep: the next hand-off wakes it (`Balancer::sweep_notify`).
    sweep_idle: bool,
    /// Wakes the accept loops' parked sweeps when a hand-off starts (only
    /// while `sweep_idle`): an idle cluster arms no timer.
    sweep_notify: Arc<Notify>,
}

/// The primary's listeners and connection hand-off. See the module docs.
#[derive(Default)]
pub(crate) struct Balancer {
    state: Mutex<State>,
    /// Held while a listener is opened (found, adopted or bound), so two
    /// workers asking for the same new address open it once. Async: a
    /// Unix-domain bind may check a socket file in the way (a connect,
    /// bounded) without holding `state` or blocking the network thread.
    opening: tokio::sync::Mutex<()>,
    /// Set while an upgraded primary waits for its accepted connections to
    /// be taken ([`Balancer::handed_over`]): only then do acks notify.
    awaiting_handover: std::sync::atomic::AtomicBool,
    /// Notified when the last pending connection was taken, while
    /// `awaiting_handover`.
    all_taken: tokio::sync::Notify,
}

impl Balancer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy of listeners bound from now on.
    pub(crate) fn set_choice(&self, choice: PolicyChoice) {
        self.lock().choice = Some(choice);
    }

    /// The hand-off window and deadline of workers added from now on.
    pub(crate) fn set_limits(&self, limits: HandoffLimits) {
        self.lock().limits = limits;
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
                stalled: false,
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
            refresh_row(entry, slot, &st.workers, st.limits.window);
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
            refresh_row(entry, w.slot, &st.workers, st.limits.window);
        }
        let unacked: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| p.worker == Some(id))
            .map(|(c, _)| *c)
            .collect();
        for conn_id in unacked {
            hand_off_failed(st, id, conn_id);
        }
        wake_all(st);
    }

    /// Stop accepting: close every listener (new connections are refused by
    /// the kernel; a socket file the cluster owns is removed). Connections
    /// already handed over may still be acknowledged or re-routed; parked
    /// ones, with no worker to go to, are closed.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let mut parked = Vec::new();
        for entry in &mut st.listeners {
            if let Some(task) = entry.accept_task.take() {
                task.abort();
            }
            entry.socket = None;
            entry.file = None;
            parked.extend(entry.parked.drain(..));
        }
        st.given.clear();
        let dropped: Vec<_> = parked
            .into_iter()
            .filter_map(|c| st.pending.remove(&c))
            .collect();
        drop(st);
        drop(dropped);
    }

    /// Stop accepting (another primary accepts on the same sockets now):
    /// the accept tasks are told to end and this primary's listening
    /// descriptors close, while the connections already accepted are still
    /// handed over. The socket files are the new primary's now: never
    /// removed by this one. Returns the accept tasks, for
    /// [`Balancer::handed_over`] to await: one told to end in the middle of
    /// a round of accepts (on the network thread, while this runs on
    /// another) ends only after it, and what it accepted meanwhile is this
    /// primary's to hand over too.
    pub(crate) fn stop_accepting(&self) -> StoppedAccepts {
        let mut tasks = Vec::new();
        let mut st = self.lock();
        for entry in &mut st.listeners {
            if let Some(task) = entry.accept_task.take() {
                task.abort();
                tasks.push(task);
            }
            entry.socket = None;
            if let Some(file) = entry.file.take() {
                file.disown();
            }
        }
        StoppedAccepts(tasks)
    }

    /// Resolves once the accept tasks [`Balancer::stop_accepting`] stopped
    /// have ended and no connection this primary accepted waits for a
    /// worker (every one was taken), or after `within` plus the hand-off
    /// deadline and its margin (the time a hand-off made just before the
    /// stop has to be acknowledged or taken back). While it waits it takes
    /// back the hand-offs that expire, as the accept loops did, and gives
    /// them to another worker: a stopped or blocked worker keeps none.
    pub(crate) async fn handed_over(&self, stopped: StoppedAccepts, within: Duration) {
        let limits = self.lock().limits;
        let margin = limits.margin();
        self.awaiting_handover.store(true, Ordering::SeqCst);
        let all_taken = async {
            for task in stopped.0 {
                // Ended (cancelled): what it accepted is pending now.
                let _ = task.await;
            }
            let mut sweep = tokio::time::interval(margin);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Registered before the check, so a notification between the
                // two is not lost.
                let notified = self.all_taken.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.lock().pending.is_empty() {
                    return;
                }
                tokio::select! {
                    () = &mut notified => {}
                    _ = sweep.tick() => self.expire(),
                }
            }
        };
        let bound = within
            .saturating_add(limits.deadline)
            .saturating_add(margin);
        let _ = tokio::time::timeout(bound, all_taken).await;
        self.awaiting_handover.store(false, Ordering::SeqCst);
    }

    /// After an ack or a close: wake [`Balancer::handed_over`] once nothing
    /// is pending (only while it waits: the hand-off path pays one atomic
    /// load otherwise).
    fn note_taken(&self, none_pending: bool) {
        if none_pending && self.awaiting_handover.load(Ordering::SeqCst) {
            self.all_taken.notify_waiters();
        }
    }

    /// Duplicates of every open listener, of every kind, for a new primary,
    /// with the names it gets them under (`listeners::OWNED_FILE` for a
    /// socket file the new primary is to remove at its end).
    pub(crate) fn listening_fds(
        &self,
    ) -> std::io::Result<Vec<(Option<String>, std::os::fd::OwnedFd)>> {
        let st = self.lock();
        st.listeners
            .iter()
            .filter_map(|e| {
                let socket = e.socket.as_ref()?;
                let name = match &e.file {
                    Some(_) => Some(listeners::OWNED_FILE.to_owned()),
                    None => e.name.clone(),
                };
                Some(socket.duplicate().map(|fd| (name, fd)))
            })
            .collect()
    }
}

/// The accept tasks an upgrade stopped ([`Balancer::stop_accepting`]),
/// for [`Balancer::handed_over`] to await.
#[must_use = "the hand-over awaits them"]
pub(crate) struct StoppedAccepts(Vec<JoinHandle<()>>);

/// Room may have appeared on every listener (a worker came, went, or
/// answered): hand the parked connections over and wake the accept tasks
/// that wait for room.
fn wake_all(st: &mut State) {
    for idx in 0..st.listeners.len() {
        wake(st, idx);
    }
}

/// Room may have appeared on listener `idx`: hand its parked connections
/// over first, then wake its accept task if it waits and there is room
/// left. Cheap when nothing waits.
fn wake(st: &mut State, idx: usize) {
    let Some(entry) = st.listeners.get(idx) else {
        return;
    };
    if !entry.parked.is_empty() {
        unpark(st, idx);
    }
    let entry = &mut st.listeners[idx];
    if entry.waiting && room(entry) > 0 {
        entry.waiting = false;
        entry.room_notify.notify_one();
    }
}

/// How many new connections listener `entry` may accept now: the room its
/// eligible workers have, less what is parked.
fn room(entry: &ListenerEntry) -> usize {
    let Some(sched) = entry.sched.as_ref() else {
        return 0;
    };
    let room = usize::try_from(sched.eligible().room()).unwrap_or(usize::MAX);
    room.saturating_sub(entry.parked.len())
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
fn refresh_row(
    entry: &mut ListenerEntry,
    slot: SlotId,
    workers: &HashMap<WorkerId, WorkerNet>,
    window: u32,
) {
    let ready = route_of(&entry.routes, slot, workers).is_some();
    let any = entry.routes.get(&slot).is_some_and(|r| !r.is_empty());
    if !any {
        entry.routes.remove(&slot);
    }
    let Some(sched) = entry.sched.as_mut() else {
        return;
    };
    let s = slot;
    let present = sched.table().get(s).is_some();
    match (present, any) {
        (false, false) => return,
        (true, false) => {
            let _ = sched.remove_worker(s);
            return;
        }
        (false, true) => {
            let _ = sched.add_worker(s);
            let _ = sched.set_window(s, Some(window));
        }
        (true, true) => {}
    }
    let state = if ready {
        Availability::Ready
    } else {
        Availability::Draining
    };
    let _ = sched.set_state(s, state);
}
