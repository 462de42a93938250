//! The hand-off: accept on a listener, ask its scheduler for a slot, pass
//! the socket to the slot's worker and keep a duplicate until the worker
//! acknowledges it; a refusal or a failed send re-routes it; the worker's
//! closes keep the counters and the scheduler's open counts true.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use cluster_ipc::{ControlMsg, TrySendError};
use sched_policy::{Connection, ListenerId, Slot};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;

use super::{Balancer, State, route_of};
use crate::event::{SlotId, WorkerId};

/// A connection handed to a worker that has not acknowledged it yet: the
/// primary still owns it (the duplicate kept here).
pub(super) struct Pending {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) listener: usize,
    pub(super) slot: Slot,
    pub(super) worker: WorkerId,
    pub(super) excluded: Vec<Slot>,
}

/// A connection a worker took over.
pub(super) struct Open {
    pub(super) listener: usize,
    pub(super) slot: Slot,
    pub(super) worker: WorkerId,
}

impl Balancer {
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
}

/// Accept on a listener until the cluster closes it.
///
/// The accepted sockets only pass through the primary, so they are never
/// registered with its reactor (tokio's `accept` would register each one and
/// `into_std` deregister it: two wasted `epoll_ctl`s per connection): the
/// listener is polled for readiness and drained with plain `accept4` calls.
pub(super) async fn accept_loop(balancer: Arc<Balancer>, idx: usize, listener: TcpListener) {
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
pub(super) fn hand_off_failed(st: &mut State, worker: WorkerId, conn_id: u64) {
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
