//! The hand-off: accept on a listener, ask its scheduler for a slot, pass
//! the socket to the slot's worker and keep a duplicate until the worker
//! acknowledges it; a refusal or a failed send re-routes it; the worker's
//! closes keep the counters and the scheduler's open counts true.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use cluster_ipc::{ControlMsg, TrySendError};
use sched_policy::{Connection, ListenerId};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::{Balancer, InheritedSocket, State, room, route_of, wake, wake_all};
use crate::clock::{monotonic_ns, nanos};
use crate::event::{SlotId, WorkerId};

#[cfg(test)]
mod tests;

/// A connection the primary accepted and still owns (the descriptor kept
/// here): handed to a worker that has not acknowledged it yet, or parked
/// while no worker can take it.
pub(super) struct Pending {
    pub(super) stream: OwnedFd,
    /// The client's address; `None` on a Unix-domain listener.
    pub(super) peer: Option<SocketAddr>,
    pub(super) listener: usize,
    pub(super) slot: SlotId,
    /// The worker it was handed to; `None` while parked or being routed.
    pub(super) worker: Option<WorkerId>,
    /// When the worker's hand-off expires (`CLOCK_MONOTONIC` ns).
    pub(super) deadline_ns: u64,
    pub(super) excluded: Vec<SlotId>,
    /// In its listener's parked queue.
    pub(super) parked: bool,
    /// How many times its exclusions were cleared to try every worker
    /// again.
    pub(super) rounds: u8,
}

/// A connection a worker took over.
pub(super) struct Open {
    pub(super) listener: usize,
    pub(super) slot: SlotId,
    pub(super) worker: WorkerId,
}

/// The most connections accepted in one go before they are scheduled and
/// handed over together (one lock, and the frames for one worker queued
/// together, which its channel's writer sends with one `sendmsg`).
pub(crate) const ACCEPT_BATCH: usize = 64;

/// How many times a connection refused (or let expire) by every eligible
/// worker is offered to them all again before it is closed.
const MAX_ROUNDS: u8 = 3;

/// A hand-off decided under the balancer's lock, sent after it.
pub(super) struct Outgoing {
    conn_id: u64,
    worker: WorkerId,
    sender: cluster_ipc::Sender,
    msg: ControlMsg,
    fd: OwnedFd,
}

impl Balancer {
    /// Connections were accepted on listener `idx`: schedule them under one
    /// lock, then hand them over outside it (a send takes the channel's own
    /// lock and may wake its writer: not while the read loops wait for this
    /// one). Each is pending before its frame is queued, so its ack always
    /// finds it. Leaves both vectors empty, their capacity kept. Returns how
    /// many more the listener may accept now (0: wait for room).
    fn accepted(
        &self,
        idx: usize,
        batch: &mut Vec<(OwnedFd, Option<SocketAddr>)>,
        out: &mut Vec<Outgoing>,
    ) -> usize {
        let room = {
            let mut st = self.lock();
            for (stream, peer) in batch.drain(..) {
                let conn_id = st.next_conn;
                st.next_conn += 1;
                st.pending.insert(
                    conn_id,
                    Pending {
                        stream,
                        peer,
                        listener: idx,
                        slot: SlotId::default(),
                        worker: None,
                        deadline_ns: 0,
                        excluded: Vec::new(),
                        parked: false,
                        rounds: 0,
                    },
                );
                out.extend(route(&mut st, conn_id));
            }
            room_or_wait(&mut st, idx)
        };
        for o in out.drain(..) {
            let (worker, conn_id) = (o.worker, o.conn_id);
            if send(o).is_err() {
                // The channel closed between the decision and the send.
                hand_off_failed(&mut self.lock(), worker, conn_id);
            }
        }
        room
    }

    /// How many connections listener `idx` may accept now; with none, its
    /// accept task is marked waiting, to be woken when room appears.
    fn room_now(&self, idx: usize) -> usize {
        room_or_wait(&mut self.lock(), idx)
    }

    /// The worker answered a `NewConnection`.
    pub(crate) fn ack(&self, id: WorkerId, conn_id: u64, accepted: bool) {
        let duplicate = {
            let mut st = self.lock();
            responded(&mut st, id);
            let duplicate = if accepted {
                take_over(&mut st, id, conn_id)
            } else {
                hand_off_failed(&mut st, id, conn_id);
                None
            };
            (duplicate, st.pending.is_empty())
        };
        self.note_taken(duplicate.1);
        // Closed outside the lock.
        drop(duplicate);
    }

    /// The worker closed a connection it took over.
    pub(crate) fn closed(&self, id: WorkerId, conn_id: u64) {
        let duplicate = {
            let mut st = self.lock();
            // A close can overtake the worker's own ack: it took the
            // connection.
            let duplicate = take_over(&mut st, id, conn_id);
            if st.open.get(&conn_id).is_some_and(|o| o.worker == id) {
                let listener = st.open.get(&conn_id).map(|o| o.listener);
                close_open(&mut st, conn_id);
                if let Some(idx) = listener {
                    wake(&mut st, idx);
                }
            }
            (duplicate, st.pending.is_empty())
        };
        self.note_taken(duplicate.1);
        drop(duplicate);
    }

    /// Whether some hand-off awaits its ack (the sweep must run); with none,
    /// the sweeps are marked idle, to be woken by the next hand-off. Only
    /// that hand-off clears the mark, after waking every parked sweep: a
    /// loop that parked before it started is always woken, whichever other
    /// loop sweeps (or stops, with its listener) meanwhile.
    fn sweep_due(&self) -> bool {
        let mut st = self.lock();
        let due = st.pending.values().any(|p| p.worker.is_some());
        if !due {
            st.sweep_idle = true;
        }
        due
    }

    /// Take back every hand-off whose deadline (plus the margin) passed and
    /// re-route it; its worker is stalled until it answers.
    pub(super) fn expire(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        let margin = nanos(st.limits.margin());
        let now = monotonic_ns();
        let expired: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| p.worker.is_some() && now > p.deadline_ns.saturating_add(margin))
            .map(|(c, _)| *c)
            .collect();
        if expired.is_empty() {
            return;
        }
        for conn_id in expired {
            let Some(worker) = take_back(st, conn_id, TakeBack::Expired) else {
                continue;
            };
            if let Some(w) = st.workers.get_mut(&worker) {
                w.stalled = true;
            }
            tracing::warn!(target: crate::trace::TARGET, worker = worker.0, conn = conn_id,
                reason = "deadline", "hand-off not acknowledged in time: re-routing, worker stalled");
            dispatch(st, conn_id);
        }
        wake_all(st);
    }
}

/// Listener `idx`'s room now; marks its accept task waiting when there is
/// none.
fn room_or_wait(st: &mut State, idx: usize) -> usize {
    let Some(entry) = st.listeners.get_mut(idx) else {
        return 0;
    };
    let room = room(entry);
    if room == 0 {
        entry.waiting = true;
    }
    room
}

/// `worker` answered something: it is alive, so no longer stalled.
fn responded(st: &mut State, worker: WorkerId) {
    let Some(w) = st.workers.get_mut(&worker) else {
        return;
    };
    if !w.stalled {
        return;
    }
    w.stalled = false;
    let slot = w.slot;
    for entry in &mut st.listeners {
        if let Some(sched) = entry.sched.as_mut() {
            let _ = sched.worker_responded(slot);
        }
    }
    wake_all(st);
}

/// What a Unix-domain connection shows a scheduling policy as its peer.
const UNIX_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// A listening socket the primary's accept loop drains: TCP or Unix-domain
/// stream (not the worker's `crate::Accept`, which yields its connections).
trait PrimaryAccept: AsRawFd + Send + 'static {
    /// Accept one connection (close-on-exec): its socket, and its peer's
    /// address when it has one.
    fn accept_one(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)>;
}

impl PrimaryAccept for std::net::TcpListener {
    fn accept_one(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
        self.accept().map(|(s, peer)| (s.into(), Some(peer)))
    }
}

impl PrimaryAccept for std::os::unix::net::UnixListener {
    fn accept_one(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
        self.accept().map(|(s, _)| (s.into(), None))
    }
}

/// Start listener `idx`'s accept loop on a duplicate of its stream socket.
pub(super) fn spawn_accept(
    balancer: Arc<Balancer>,
    idx: usize,
    socket: &InheritedSocket,
) -> io::Result<JoinHandle<()>> {
    Ok(match socket {
        InheritedSocket::Tcp(l) => tokio::spawn(accept_loop(balancer, idx, l.try_clone()?)),
        InheritedSocket::Unix(l) => tokio::spawn(accept_loop(balancer, idx, l.try_clone()?)),
        // Shared: every worker receives itself.
        InheritedSocket::Udp(_) => return Err(io::ErrorKind::Unsupported.into()),
    })
}

/// Accept on a listener until the cluster closes it, as many connections
/// as its workers have room for; with no room, the listener is left alone
/// (the kernel's backlog holds the clients) until a worker has room again.
/// Also takes back the hand-offs that expired, every margin.
///
/// The accepted sockets only pass through the primary, so they are never
/// registered with its reactor (tokio's `accept` would register each one and
/// `into_std` deregister it: two wasted `epoll_ctl`s per connection): the
/// listener is polled for readiness and drained with plain `accept4` calls,
/// everything pending (up to [`ACCEPT_BATCH`] and the room) before the batch
/// is handed over.
async fn accept_loop<L: PrimaryAccept>(balancer: Arc<Balancer>, idx: usize, listener: L) {
    // SAFETY: the AsyncFd owns the listener, so its descriptor stays open
    // (and is not reused) for as long as it is registered; it is
    // deregistered when the AsyncFd drops, before the listener closes.
    let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
    let Ok(listener) = registered else {
        return;
    };
    let (notify, sweep_notify, margin) = {
        let st = balancer.lock();
        let Some(entry) = st.listeners.get(idx) else {
            return;
        };
        (
            Arc::clone(&entry.room_notify),
            Arc::clone(&st.sweep_notify),
            st.limits.margin(),
        )
    };
    let mut sweep = tokio::time::interval(margin);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweeping = false;
    let mut batch = Vec::with_capacity(ACCEPT_BATCH);
    let mut out = Vec::with_capacity(ACCEPT_BATCH);
    let mut room = balancer.room_now(idx);
    loop {
        // The sweep runs only while some hand-off awaits its ack; otherwise
        // it parks until one starts (registered before the check, so a
        // hand-off made in between still wakes it).
        let handed = sweep_notify.notified();
        tokio::pin!(handed);
        handed.as_mut().enable();
        let due = balancer.sweep_due();
        if due && !sweeping {
            sweep.reset();
        }
        sweeping = due;
        tokio::select! {
            biased;
            ready = listener.readable(), if room > 0 => {
                let Ok(mut ready) = ready else {
                    return;
                };
                let mut failed = false;
                while batch.len() < ACCEPT_BATCH.min(room) {
                    match ready.get_inner().accept_one() {
                        Ok(conn) => batch.push(conn),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ready.clear_ready();
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                drop(ready);
                if !batch.is_empty() {
                    room = balancer.accepted(idx, &mut batch, &mut out);
                }
                if failed {
                    // Out of descriptors or memory, or a connection reset
                    // before it was accepted: wait a little rather than
                    // spin, then go on.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            () = notify.notified(), if room == 0 => room = balancer.room_now(idx),
            () = &mut handed, if !sweeping => {}
            _ = sweep.tick(), if sweeping => {
                balancer.expire();
                room = balancer.room_now(idx);
            }
        }
    }
}

/// Hand the pending connection `conn_id` to a worker, re-routing on the
/// spot when a send fails; parked when no worker can take it now.
fn dispatch(st: &mut State, conn_id: u64) {
    while let Some(o) = route(st, conn_id) {
        let worker = o.worker;
        if send(o).is_ok() {
            return;
        }
        tracing::debug!(target: crate::trace::TARGET, worker = worker.0, conn = conn_id,
            reason = "send failed", "hand-off re-routed");
        exclude(st, worker, conn_id);
    }
}

/// Hand listener `idx`'s parked connections over, oldest first, while a
/// worker can take them.
pub(super) fn unpark(st: &mut State, idx: usize) {
    let n = st.listeners.get(idx).map_or(0, |e| e.parked.len());
    for _ in 0..n {
        let Some(entry) = st.listeners.get_mut(idx) else {
            return;
        };
        if entry.sched.as_ref().is_none_or(|s| s.eligible().is_empty()) {
            return;
        }
        let Some(conn_id) = entry.parked.pop_front() else {
            return;
        };
        if let Some(p) = st.pending.get_mut(&conn_id) {
            p.parked = false;
            dispatch(st, conn_id);
        }
    }
}

/// Choose the worker of the pending connection `conn_id` and make its
/// `NewConnection` (a duplicate of the socket attached). `None` when no
/// worker can take it now: it is parked, or closed if the balancer is
/// closed or every eligible worker refused it [`MAX_ROUNDS`] times.
fn route(st: &mut State, conn_id: u64) -> Option<Outgoing> {
    loop {
        let p = st.pending.get_mut(&conn_id)?;
        let Some(sched) = st
            .listeners
            .get_mut(p.listener)
            .and_then(|e| e.sched.as_mut())
        else {
            st.pending.remove(&conn_id);
            return None;
        };
        if st.closed {
            // Shutting down, or no worker can ever come back: closed.
            st.pending.remove(&conn_id);
            return None;
        }
        // A Unix-domain client has no address: policies see the
        // unspecified one (sticky is replaced by round-robin there).
        let peer = p.peer.unwrap_or(UNIX_PEER);
        let conn = Connection::new(peer, ListenerId(p.listener as u32));
        let Some(slot) = sched.reassign(&conn, &p.excluded) else {
            if !p.excluded.is_empty() && !sched.eligible().is_empty() {
                // Every eligible worker is excluded: try them all again, a
                // few times, then give up on this connection.
                if p.rounds >= MAX_ROUNDS {
                    st.pending.remove(&conn_id);
                    return None;
                }
                p.rounds += 1;
                p.excluded.clear();
                continue;
            }
            // No worker can take it now: parked, handed over first when
            // one can.
            p.worker = None;
            if !p.parked {
                p.parked = true;
                st.listeners[p.listener].parked.push_back(conn_id);
            }
            return None;
        };
        let routes = &st.listeners[p.listener].routes;
        let route = route_of(routes, slot, &st.workers);
        let sender = route.and_then(|r| st.workers.get(&r.worker)?.sender.clone());
        let fd = p.stream.try_clone().ok();
        let (Some(route), Some(sender), Some(fd)) = (route, sender, fd) else {
            if let Some(sched) = st.listeners[p.listener].sched.as_mut() {
                let _ = sched.hand_off_failed(slot);
            }
            p.excluded.push(slot);
            continue;
        };
        let deadline_ns = monotonic_ns().saturating_add(nanos(st.limits.deadline));
        p.slot = slot;
        p.worker = Some(route.worker);
        p.deadline_ns = deadline_ns;
        if st.sweep_idle {
            st.sweep_idle = false;
            st.sweep_notify.notify_waiters();
        }
        let msg = match p.peer {
            Some(peer) => ControlMsg::NewConnection {
                conn_id,
                listener_id: route.request_id,
                peer,
                deadline_ns,
            },
            None => ControlMsg::NewUnixConnection {
                conn_id,
                listener_id: route.request_id,
                deadline_ns,
            },
        };
        return Some(Outgoing {
            conn_id,
            worker: route.worker,
            sender,
            msg,
            fd,
        });
    }
}

/// Queue a hand-off on its worker's channel; an error when the channel is
/// closed.
fn send(o: Outgoing) -> Result<(), ()> {
    match o.sender.try_send_control(o.msg, vec![o.fd]) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full((msg, fds))) => {
            // The worker's queue is full: wait for room off the accept
            // path. A failed send is noticed when its channel closes.
            let sender = o.sender;
            tokio::spawn(async move {
                let _ = sender.send_control(&msg, fds).await;
            });
            Ok(())
        }
        Err(_) => Err(()),
    }
}

/// The hand-off to `worker` of `conn_id` failed: exclude that slot for this
/// connection. Nothing when the connection went elsewhere meanwhile.
fn exclude(st: &mut State, worker: WorkerId, conn_id: u64) -> bool {
    if st.pending.get(&conn_id).and_then(|p| p.worker) != Some(worker) {
        return false;
    }
    take_back(st, conn_id, TakeBack::Failed).is_some()
}

/// Why a hand-off is taken back from its worker.
#[derive(Clone, Copy)]
enum TakeBack {
    /// The worker refused it, or the send failed.
    Failed,
    /// Not acknowledged by its deadline plus the margin.
    Expired,
}

/// Take the hand-off of `conn_id` back from its worker: that slot is
/// excluded for this connection and its scheduler told why. Returns the
/// worker; `None` when the connection is not handed to one.
fn take_back(st: &mut State, conn_id: u64, why: TakeBack) -> Option<WorkerId> {
    let p = st.pending.get_mut(&conn_id)?;
    let worker = p.worker.take()?;
    let slot = p.slot;
    p.excluded.push(slot);
    if let Some(sched) = st
        .listeners
        .get_mut(p.listener)
        .and_then(|e| e.sched.as_mut())
    {
        let _ = match why {
            TakeBack::Failed => sched.hand_off_failed(slot),
            TakeBack::Expired => sched.hand_off_expired(slot),
        };
    }
    Some(worker)
}

/// The hand-off to `worker` of `conn_id` failed: re-route it.
pub(super) fn hand_off_failed(st: &mut State, worker: WorkerId, conn_id: u64) {
    let listener = st.pending.get(&conn_id).map(|p| p.listener);
    tracing::debug!(target: crate::trace::TARGET, worker = worker.0, conn = conn_id,
        reason = "refused or worker gone", "hand-off re-routed");
    if exclude(st, worker, conn_id) {
        dispatch(st, conn_id);
        if let Some(idx) = listener {
            wake(st, idx);
        }
    }
}

/// `worker` acknowledged `conn_id`: it owns it now; the primary's duplicate
/// is returned, for the caller to close outside the lock.
fn take_over(st: &mut State, worker: WorkerId, conn_id: u64) -> Option<OwnedFd> {
    let p = st.pending.get(&conn_id)?;
    if p.worker != Some(worker) {
        return None;
    }
    let p = st.pending.remove(&conn_id)?;
    if let Some(w) = st.workers.get(&worker) {
        w.counters.opened();
    }
    if let Some(sched) = st
        .listeners
        .get_mut(p.listener)
        .and_then(|e| e.sched.as_mut())
    {
        let _ = sched.hand_off_acknowledged(p.slot);
    }
    st.open.insert(
        conn_id,
        Open {
            listener: p.listener,
            slot: p.slot,
            worker,
        },
    );
    wake(st, p.listener);
    Some(p.stream)
}
/// A taken-over connection ended.
pub(super) fn close_open(st: &mut State, conn_id: u64) {
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
