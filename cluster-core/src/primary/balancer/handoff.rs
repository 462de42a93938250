//! The hand-off: accept on a listener, ask its scheduler for a slot, pass
//! the socket to the slot's worker and keep a duplicate until the worker
//! acknowledges it; a refusal or a failed send re-routes it; the worker's
//! closes keep the counters and the scheduler's open counts true.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use cluster_ipc::{ControlMsg, TrySendError};
use sched_policy::{Connection, ListenerId, Slot};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Balancer, State, route_of};
use crate::event::{SlotId, WorkerId};

/// A connection handed to a worker that has not acknowledged it yet: the
/// primary still owns it (the duplicate kept here).
pub(super) struct Pending {
    pub(super) stream: OwnedFd,
    /// The client's address; `None` on a Unix-domain listener.
    pub(super) peer: Option<SocketAddr>,
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

/// The most connections accepted in one go before they are scheduled and
/// handed over together (one lock, and the frames for one worker queued
/// together, which its channel's writer sends with one `sendmsg`).
const ACCEPT_BATCH: usize = 64;

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
    /// finds it. Leaves both vectors empty, their capacity kept.
    fn accepted(
        &self,
        idx: usize,
        batch: &mut Vec<(OwnedFd, Option<SocketAddr>)>,
        out: &mut Vec<Outgoing>,
    ) {
        {
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
                        slot: Slot::default(),
                        worker: WorkerId(0),
                        excluded: Vec::new(),
                    },
                );
                out.extend(route(&mut st, conn_id));
            }
        }
        for o in out.drain(..) {
            let (worker, conn_id) = (o.worker, o.conn_id);
            if send(o).is_err() {
                // The channel closed between the decision and the send.
                hand_off_failed(&mut self.lock(), worker, conn_id);
            }
        }
    }

    /// The worker answered a `NewConnection`.
    pub(crate) fn ack(&self, id: WorkerId, conn_id: u64, accepted: bool) {
        let duplicate = {
            let mut st = self.lock();
            if accepted {
                take_over(&mut st, id, conn_id)
            } else {
                hand_off_failed(&mut st, id, conn_id);
                None
            }
        };
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
            close_open(&mut st, conn_id);
            duplicate
        };
        drop(duplicate);
    }
}

/// What a Unix-domain connection shows a scheduling policy as its peer.
const UNIX_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// A listening socket the accept loop drains: TCP or Unix-domain stream.
pub(super) trait Accept: AsRawFd + Send + 'static {
    /// Accept one connection (close-on-exec): its socket, and its peer's
    /// address when it has one.
    fn accept_one(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)>;
}

impl Accept for std::net::TcpListener {
    fn accept_one(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
        self.accept().map(|(s, peer)| (s.into(), Some(peer)))
    }
}

impl Accept for std::os::unix::net::UnixListener {
    fn accept_one(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
        self.accept().map(|(s, _)| (s.into(), None))
    }
}

/// Accept on a listener until the cluster closes it.
///
/// The accepted sockets only pass through the primary, so they are never
/// registered with its reactor (tokio's `accept` would register each one and
/// `into_std` deregister it: two wasted `epoll_ctl`s per connection): the
/// listener is polled for readiness and drained with plain `accept4` calls,
/// everything pending (up to [`ACCEPT_BATCH`]) before the batch is handed
/// over.
pub(super) async fn accept_loop<L: Accept>(balancer: Arc<Balancer>, idx: usize, listener: L) {
    // SAFETY: the AsyncFd owns the listener, so its descriptor stays open
    // (and is not reused) for as long as it is registered; it is
    // deregistered when the AsyncFd drops, before the listener closes.
    let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
    let Ok(listener) = registered else {
        return;
    };
    let mut batch = Vec::with_capacity(ACCEPT_BATCH);
    let mut out = Vec::with_capacity(ACCEPT_BATCH);
    loop {
        let Ok(mut ready) = listener.readable().await else {
            return;
        };
        let mut failed = false;
        while batch.len() < ACCEPT_BATCH {
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
            balancer.accepted(idx, &mut batch, &mut out);
        }
        if failed {
            // Out of descriptors or memory, or a connection reset before it
            // was accepted: wait a little rather than spin, then go on.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// Hand the pending connection `conn_id` to a worker, re-routing on the
/// spot when a send fails; drop it (closing it) when no worker can take it.
fn dispatch(st: &mut State, conn_id: u64) {
    while let Some(o) = route(st, conn_id) {
        let worker = o.worker;
        if send(o).is_ok() {
            return;
        }
        exclude(st, worker, conn_id);
    }
}

/// Choose the worker of the pending connection `conn_id` and make its
/// `NewConnection` (a duplicate of the socket attached); `None` when no
/// worker can take it, which drops it (closing it).
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
        // A Unix-domain client has no address: policies see the
        // unspecified one (sticky is replaced by round-robin there).
        let peer = p.peer.unwrap_or(UNIX_PEER);
        let conn = Connection::new(peer, ListenerId(p.listener as u32));
        let Some(slot) = sched.reassign(&conn, &p.excluded) else {
            // No worker can take it: closed.
            st.pending.remove(&conn_id);
            return None;
        };
        let routes = &st.listeners[p.listener].routes;
        let route = route_of(routes, SlotId(slot.get() as usize), &st.workers);
        let sender = route.and_then(|r| st.workers.get(&r.worker)?.sender.clone());
        let fd = p.stream.try_clone().ok();
        let (Some(route), Some(sender), Some(fd)) = (route, sender, fd) else {
            if let Some(sched) = st.listeners[p.listener].sched.as_mut() {
                let _ = sched.hand_off_failed(slot);
            }
            p.excluded.push(slot);
            continue;
        };
        p.slot = slot;
        p.worker = route.worker;
        let msg = match p.peer {
            Some(peer) => ControlMsg::NewConnection {
                conn_id,
                listener_id: route.request_id,
                peer,
            },
            None => ControlMsg::NewUnixConnection {
                conn_id,
                listener_id: route.request_id,
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
    let Some(p) = st.pending.get_mut(&conn_id) else {
        return false;
    };
    if p.worker != worker {
        return false;
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
    true
}

/// The hand-off to `worker` of `conn_id` failed: re-route it.
pub(super) fn hand_off_failed(st: &mut State, worker: WorkerId, conn_id: u64) {
    if exclude(st, worker, conn_id) {
        dispatch(st, conn_id);
    }
}

/// `worker` acknowledged `conn_id`: it owns it now; the primary's duplicate
/// is returned, for the caller to close outside the lock.
fn take_over(st: &mut State, worker: WorkerId, conn_id: u64) -> Option<OwnedFd> {
    let p = st.pending.get(&conn_id)?;
    if p.worker != worker {
        return None;
    }
    let p = st.pending.remove(&conn_id)?;
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
