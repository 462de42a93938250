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

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cluster_ipc::{
    ControlMsg, ListenErrorKind, ListenFailure, ListenOk, ListenReply, ListenRequest, TrySendError,
};
use sched_policy::{Connection, ListenerId, Policy, Scheduler, Slot, WorkerState};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::AbortHandle;

use crate::event::{SlotId, WorkerId};
use crate::settings::PolicyChoice;

/// How many connections may wait in the kernel's accept queue of a listener
/// the primary binds.
const BACKLOG: u32 = 1024;

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
}

struct WorkerNet {
    slot: SlotId,
    counters: Arc<Counters>,
    sender: Option<cluster_ipc::Sender>,
    draining: bool,
}

/// A connection handed to a worker that has not acknowledged it yet: the
/// primary still owns it (the duplicate kept here).
struct Pending {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    listener: usize,
    slot: Slot,
    worker: WorkerId,
    excluded: Vec<Slot>,
}

/// A connection a worker took over.
struct Open {
    listener: usize,
    slot: Slot,
    worker: WorkerId,
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

    /// Answer a worker's listen request; the bound address on success (the
    /// worker is then ready for that listener).
    pub(crate) async fn listen(
        self: &Arc<Self>,
        id: WorkerId,
        tx: &cluster_ipc::Sender,
        req: ListenRequest,
    ) -> Option<SocketAddr> {
        let found = self.find_or_bind(req.addr);
        let (reply, fds, bound) = match found {
            Ok((idx, addr, shared_fd)) => {
                let fd_attached = shared_fd.is_some();
                (
                    Ok(ListenOk { addr, fd_attached }),
                    shared_fd.into_iter().collect(),
                    Some((idx, addr)),
                )
            }
            Err(e) => (Err(failure(&e)), Vec::new(), None),
        };
        let msg = ControlMsg::ListenReply(ListenReply {
            request_id: req.request_id,
            result: reply,
        });
        // The reply is queued before the worker becomes routable, so it
        // reaches the worker before any connection of this listener.
        tx.send_control(&msg, fds).await.ok()?;
        let (idx, addr) = bound?;
        let mut st = self.lock();
        let st = &mut *st;
        let slot = st.workers.get(&id)?.slot;
        let entry = st.listeners.get_mut(idx)?;
        entry.routes.entry(slot).or_default().push(Route {
            worker: id,
            request_id: req.request_id,
        });
        refresh_row(entry, slot, &st.workers);
        Some(addr)
    }

    /// The listener for `addr` (bound now if new): its index, its real
    /// address, and under `none` a duplicate of the socket for the worker.
    fn find_or_bind(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> io::Result<(usize, SocketAddr, Option<OwnedFd>)> {
        let mut st = self.lock();
        if st.closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the cluster is shutting down",
            ));
        }
        let idx = match st.by_addr.get(&addr) {
            Some(&idx) => idx,
            None => {
                let choice = st
                    .choice
                    .clone()
                    .unwrap_or(PolicyChoice::Kind(sched_policy::PolicyKind::RoundRobin));
                let listener = bind(addr)?;
                let real = listener.local_addr()?;
                let idx = st.listeners.len();
                let mut entry = ListenerEntry {
                    addr: real,
                    shared: None,
                    sched: None,
                    routes: BTreeMap::new(),
                    accept_task: None,
                };
                if choice.is_none() {
                    entry.shared = Some(listener.into_std()?);
                } else {
                    entry.sched = choice.build().map(Scheduler::new);
                    let task = tokio::spawn(accept_loop(Arc::clone(self), idx, listener));
                    entry.accept_task = Some(task.abort_handle());
                }
                st.listeners.push(entry);
                st.by_addr.insert(addr, idx);
                st.by_addr.insert(real, idx);
                idx
            }
        };
        let entry = &st.listeners[idx];
        let fd = match &entry.shared {
            Some(l) => Some(OwnedFd::from(l.try_clone()?)),
            None => None,
        };
        Ok((idx, entry.addr, fd))
    }

    /// A connection was accepted on listener `idx`: schedule and hand it over.
    fn accepted(&self, idx: usize, stream: std::net::TcpStream, peer: SocketAddr) {
        let mut st = self.lock();
        let conn_id = st.next_conn;
        st.next_conn += 1;
        st.pending.insert(
            conn_id,
            Pending {
                stream,
                peer,
                listener: idx,
                slot: Slot::default(),
                worker: WorkerId(0),
                excluded: Vec::new(),
            },
        );
        dispatch(&mut st, conn_id);
    }

    /// The worker answered a `NewConnection`.
    pub(crate) fn ack(&self, id: WorkerId, conn_id: u64, accepted: bool) {
        let mut st = self.lock();
        if accepted {
            take_over(&mut st, id, conn_id);
        } else {
            hand_off_failed(&mut st, id, conn_id);
        }
    }

    /// The worker closed a connection it took over.
    pub(crate) fn closed(&self, id: WorkerId, conn_id: u64) {
        let mut st = self.lock();
        // A close can overtake the worker's own ack: it took the connection.
        take_over(&mut st, id, conn_id);
        close_open(&mut st, conn_id);
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
        }
    }
}

/// Bind `addr` with `SO_REUSEADDR` and a large backlog.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How a failed bind is told to the worker.
fn failure(e: &io::Error) -> ListenFailure {
    let kind = match e.kind() {
        io::ErrorKind::AddrInUse => ListenErrorKind::AddrInUse,
        io::ErrorKind::AddrNotAvailable => ListenErrorKind::AddrNotAvailable,
        io::ErrorKind::PermissionDenied => ListenErrorKind::PermissionDenied,
        io::ErrorKind::Unsupported => ListenErrorKind::Unsupported,
        _ => ListenErrorKind::Other,
    };
    ListenFailure {
        kind,
        errno: e.raw_os_error(),
        message: e.to_string(),
    }
}

/// Accept on a listener until the cluster closes it.
///
/// The accepted sockets only pass through the primary, so they are never
/// registered with its reactor (tokio's `accept` would register each one and
/// `into_std` deregister it: two wasted `epoll_ctl`s per connection): the
/// listener is polled for readiness and drained with plain `accept4` calls.
async fn accept_loop(balancer: Arc<Balancer>, idx: usize, listener: TcpListener) {
    let Ok(listener) = listener.into_std() else {
        return;
    };
    // SAFETY: the AsyncFd owns the listener, so its descriptor stays open
    // (and is not reused) for as long as it is registered; it is
    // deregistered when the AsyncFd drops, before the listener closes.
    let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
    let Ok(listener) = registered else {
        return;
    };
    loop {
        let Ok(mut ready) = listener.readable().await else {
            return;
        };
        match ready.get_inner().accept() {
            Ok((stream, peer)) => balancer.accepted(idx, stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors or memory, or a connection reset before it
            // was accepted: wait a little rather than spin, then go on.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
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

/// Hand the pending connection `conn_id` to a worker, re-routing on the
/// spot when a send fails; drop it (closing it) when no worker can take it.
fn dispatch(st: &mut State, conn_id: u64) {
    loop {
        let Some(p) = st.pending.get_mut(&conn_id) else {
            return;
        };
        let Some(entry) = st.listeners.get_mut(p.listener) else {
            st.pending.remove(&conn_id);
            return;
        };
        let Some(sched) = entry.sched.as_mut() else {
            st.pending.remove(&conn_id);
            return;
        };
        let routes = &entry.routes;
        let conn = Connection::new(p.peer, ListenerId(p.listener as u32));
        let Some(slot) = sched.reassign(&conn, &p.excluded) else {
            // No worker can take it: closed.
            st.pending.remove(&conn_id);
            return;
        };
        let slot_id = SlotId(slot.get() as usize);
        let route = route_of(routes, slot_id, &st.workers);
        let sender = route.and_then(|r| st.workers.get(&r.worker)?.sender.clone());
        let fd = p.stream.try_clone().ok().map(OwnedFd::from);
        let (Some(route), Some(sender), Some(fd)) = (route, sender, fd) else {
            let _ = sched.hand_off_failed(slot);
            p.excluded.push(slot);
            continue;
        };
        p.slot = slot;
        p.worker = route.worker;
        let msg = ControlMsg::NewConnection {
            conn_id,
            listener_id: route.request_id,
            peer: p.peer,
        };
        match sender.try_send_control(msg, vec![fd]) {
            Ok(()) => return,
            Err(TrySendError::Full((msg, fds))) => {
                // The worker's queue is full: wait for room off the accept
                // path. A failed send is noticed when its channel closes.
                tokio::spawn(async move {
                    let _ = sender.send_control(&msg, fds).await;
                });
                return;
            }
            Err(_) => {
                let _ = sched.hand_off_failed(slot);
                p.excluded.push(slot);
            }
        }
    }
}

/// The hand-off to `worker` of `conn_id` failed: re-route it.
fn hand_off_failed(st: &mut State, worker: WorkerId, conn_id: u64) {
    let Some(p) = st.pending.get_mut(&conn_id) else {
        return;
    };
    if p.worker != worker {
        return;
    }
    let slot = p.slot;
    p.excluded.push(slot);
    if let Some(sched) = st
        .listeners
        .get_mut(p.listener)
        .and_then(|e| e.sched.as_mut())
    {
        let _ = sched.hand_off_failed(slot);
    }
    dispatch(st, conn_id);
}

/// `worker` acknowledged `conn_id`: it owns it now; the primary's duplicate
/// is closed.
fn take_over(st: &mut State, worker: WorkerId, conn_id: u64) {
    let Some(p) = st.pending.get(&conn_id) else {
        return;
    };
    if p.worker != worker {
        return;
    }
    let Some(p) = st.pending.remove(&conn_id) else {
        return;
    };
    if let Some(w) = st.workers.get(&worker) {
        w.counters.opened();
    }
    st.open.insert(
        conn_id,
        Open {
            listener: p.listener,
            slot: p.slot,
            worker,
        },
    );
}

/// A taken-over connection ended.
fn close_open(st: &mut State, conn_id: u64) {
    let Some(o) = st.open.remove(&conn_id) else {
        return;
    };
    if let Some(w) = st.workers.get(&o.worker) {
        w.counters.closed();
    }
    if let Some(sched) = st
        .listeners
        .get_mut(o.listener)
        .and_then(|e| e.sched.as_mut())
    {
        let _ = sched.connection_closed(o.slot);
    }
}
