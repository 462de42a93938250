//! Binding: the listener of each distinct address (bound once, port 0
//! resolved once), and the answer to a worker's listen request: the bound
//! address, under `none` with a duplicate of the listening socket, or the
//! bind error as the worker will see it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::Arc;

use cluster_ipc::{
    ControlMsg, ListenErrorKind, ListenFailure, ListenOk, ListenReply, ListenRequest,
};
use sched_policy::Scheduler;
use tokio::net::{TcpListener, TcpSocket};

use super::handoff::accept_loop;
use super::{Balancer, ListenKey, ListenerEntry, Route, refresh_row, wake};
use crate::event::WorkerId;
use crate::settings::PolicyChoice;

/// How many connections may wait in the kernel's accept queue of a listener
/// the primary binds.
const BACKLOG: u32 = 1024;

impl Balancer {
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
        refresh_row(entry, slot, &st.workers, st.limits.window);
        wake(st, idx);
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
            None if st.holds(&ListenKey::Tcp(addr)) => {
                self.adopt(&mut st, &ListenKey::Tcp(addr))?
            }
            None => {
                let choice = st
                    .choice
                    .clone()
                    .unwrap_or(PolicyChoice::Kind(sched_policy::PolicyKind::RoundRobin));
                // Socket activation (systemd, or an upgrading primary): an
                // inherited socket bound to `addr` is used instead of binding.
                let listener = match crate::primary::activation::take_listener(addr) {
                    Some(inherited) => TcpListener::from_std(inherited)?,
                    None => bind(addr)?,
                };
                let kept = listener.as_fd().try_clone_to_owned()?;
                let real = listener.local_addr()?;
                let idx = st.listeners.len();
                let mut entry = ListenerEntry {
                    addr: real,
                    unix: None,
                    shared: None,
                    sched: None,
                    routes: BTreeMap::new(),
                    accept_task: None,
                    parked: Default::default(),
                    waiting: false,
                    room_notify: Default::default(),
                    kept: Some(kept),
                };
                let mut accepting = None;
                if choice.is_none() {
                    entry.shared = Some(listener.into_std()?.into());
                } else {
                    entry.sched = choice.build().map(Scheduler::new);
                    accepting = Some(listener.into_std()?);
                }
                st.listeners.push(entry);
                if let Some(listener) = accepting {
                    // Spawned once the entry exists: the task reads it.
                    let task = tokio::spawn(accept_loop(Arc::clone(self), idx, listener));
                    st.listeners[idx].accept_task = Some(task.abort_handle());
                }
                st.by_addr.insert(addr, idx);
                st.by_addr.insert(real, idx);
                idx
            }
        };
        let entry = &st.listeners[idx];
        let fd = match &entry.shared {
            Some(l) => Some(l.try_clone()?),
            None => None,
        };
        Ok((idx, entry.addr, fd))
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
pub(super) fn failure(e: &io::Error) -> ListenFailure {
    let kind = match e.kind() {
        io::ErrorKind::AddrInUse => ListenErrorKind::AddrInUse,
        io::ErrorKind::AddrNotAvailable => ListenErrorKind::AddrNotAvailable,
        io::ErrorKind::PermissionDenied => ListenErrorKind::PermissionDenied,
        io::ErrorKind::Unsupported => ListenErrorKind::Unsupported,
        io::ErrorKind::NotFound => ListenErrorKind::NotFound,
        _ => ListenErrorKind::Other,
    };
    ListenFailure {
        kind,
        errno: e.raw_os_error(),
        message: e.to_string(),
    }
}
