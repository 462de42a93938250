//! The other kinds of listener: a worker's `ListenOn` request (a
//! Unix-domain stream socket, a UDP address, a descriptor the primary
//! holds), and the sockets given to the primary ([`InheritedSocket`]).
//!
//! A stream listener of any kind (TCP or Unix-domain) is one
//! `ListenerEntry`: the same routes, scheduler, accept loop and hand-off as
//! a TCP address. Entries are found by [`ListenKey`]: what a worker asks for.
//! An inherited socket is found under its descriptor number and under its
//! address, so a worker's `listen_fd(3)` and its `listen` on the address
//! that descriptor is bound to share it; the primary opens it as a listener
//! entry (or a shared UDP socket) the first time a worker asks, and never
//! binds that address itself.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use cluster_ipc::{
    Bound, ControlMsg, ListenErrorKind, ListenFailure, ListenOnOk, ListenOnReply, ListenOnRequest,
    ListenTarget, UnixAddr,
};
use sched_policy::{PolicyKind, Scheduler};

use super::bind::failure;
use super::handoff::accept_loop;
use super::unix::{UnixBindError, UnixSide};
use super::{Balancer, ListenerEntry, Route, State, refresh_row, udp, unix};
use crate::event::WorkerId;
use crate::settings::PolicyChoice;

/// What a worker asks to listen on: how the primary finds a listener entry,
/// a UDP socket or an inherited socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ListenKey {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain stream socket.
    Unix(UnixAddr),
    /// A UDP address.
    Udp(SocketAddr),
    /// A descriptor number in the primary.
    Fd(RawFd),
}

/// A socket given to the primary to listen on for its workers, already
/// bound (and, for a stream socket, listening): a systemd socket unit's
/// descriptor, or one the program opened before it started the cluster.
///
/// See [`Cluster::inherit_socket`](crate::Cluster::inherit_socket).
#[derive(Debug)]
#[non_exhaustive]
pub enum InheritedSocket {
    /// A listening TCP socket.
    Tcp(std::net::TcpListener),
    /// A listening Unix-domain stream socket.
    Unix(UnixListener),
    /// A bound UDP socket.
    Udp(std::net::UdpSocket),
}

impl InheritedSocket {
    fn raw_fd(&self) -> RawFd {
        match self {
            InheritedSocket::Tcp(s) => s.as_raw_fd(),
            InheritedSocket::Unix(s) => s.as_raw_fd(),
            InheritedSocket::Udp(s) => s.as_raw_fd(),
        }
    }

    /// The keys it is found under: its descriptor number, and its address
    /// when the OS tells it.
    fn keys(&self) -> Vec<ListenKey> {
        let mut keys = vec![ListenKey::Fd(self.raw_fd())];
        let addr = match self {
            InheritedSocket::Tcp(s) => s.local_addr().ok().map(ListenKey::Tcp),
            InheritedSocket::Unix(s) => unix::addr_of(s).map(ListenKey::Unix),
            InheritedSocket::Udp(s) => s.local_addr().ok().map(ListenKey::Udp),
        };
        keys.extend(addr);
        keys
    }
}

/// An inherited socket no worker asked for yet.
pub(super) struct Inherited {
    keys: Vec<ListenKey>,
    socket: InheritedSocket,
}

/// A stream listener about to become a listener entry.
enum Stream {
    Tcp(std::net::TcpListener),
    Unix(UnixListener, UnixSide),
}

impl State {
    /// Whether an inherited socket no worker asked for yet answers to `key`.
    pub(super) fn holds(&self, key: &ListenKey) -> bool {
        self.inherited.iter().any(|i| i.keys.contains(key))
    }
}

/// Take the inherited socket that answers to `key`, with all its keys.
fn take(st: &mut State, key: &ListenKey) -> Option<Inherited> {
    let at = st.inherited.iter().position(|i| i.keys.contains(key))?;
    Some(st.inherited.swap_remove(at))
}

/// Take the inherited UDP socket that answers to `key`, with all its keys.
pub(super) fn take_udp(
    st: &mut State,
    key: &ListenKey,
) -> Option<(Vec<ListenKey>, std::net::UdpSocket)> {
    let at = st
        .inherited
        .iter()
        .position(|i| i.keys.contains(key) && matches!(i.socket, InheritedSocket::Udp(_)))?;
    match st.inherited.swap_remove(at) {
        Inherited {
            keys,
            socket: InheritedSocket::Udp(s),
        } => Some((keys, s)),
        other => {
            st.inherited.push(other);
            None
        }
    }
}

impl Balancer {
    /// Give the primary a socket to listen on for its workers; its
    /// descriptor number (the key of a worker's `listen_fd`).
    pub(crate) fn inherit(&self, socket: InheritedSocket) -> RawFd {
        let fd = socket.raw_fd();
        let keys = socket.keys();
        self.lock().inherited.push(Inherited { keys, socket });
        fd
    }

    /// Open the inherited stream socket that answers to `key` as a listener
    /// entry, found under all its keys; its index.
    pub(super) fn adopt(self: &Arc<Self>, st: &mut State, key: &ListenKey) -> io::Result<usize> {
        let not_held = || io::Error::from(io::ErrorKind::NotFound);
        let Inherited { keys, socket } = take(st, key).ok_or_else(not_held)?;
        let stream = match socket {
            InheritedSocket::Tcp(s) => Stream::Tcp(s),
            InheritedSocket::Unix(s) => {
                let side = UnixSide {
                    addr: unix::addr_of(&s).unwrap_or(UnixAddr::Path(Vec::new())),
                    _file: None,
                    rebindable: false,
                    used: false,
                };
                Stream::Unix(s, side)
            }
            socket @ InheritedSocket::Udp(_) => {
                // Not a stream (`udp::find` takes it).
                st.inherited.push(Inherited { keys, socket });
                return Err(io::Error::from(io::ErrorKind::Unsupported));
            }
        };
        self.open_stream(st, stream, keys)
    }

    /// Make `stream` a listener entry (its accept loop started under a
    /// distributed policy), found under `keys`; its index.
    fn open_stream(
        self: &Arc<Self>,
        st: &mut State,
        stream: Stream,
        keys: Vec<ListenKey>,
    ) -> io::Result<usize> {
        let mut choice = st
            .choice
            .clone()
            .unwrap_or(PolicyChoice::Kind(PolicyKind::RoundRobin));
        let idx = st.listeners.len();
        let mut entry = ListenerEntry {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            unix: None,
            shared: None,
            sched: None,
            routes: BTreeMap::new(),
            accept_task: None,
            parked: Default::default(),
            waiting: false,
            room_notify: Default::default(),
            // Not handed on by an upgrade (TCP listeners bound for an
            // address only: see `upgrade.rs`).
            kept: None,
        };
        // Spawned once the entry exists (the task reads it).
        let mut accepting: Option<Box<dyn FnOnce() -> tokio::task::AbortHandle + Send>> = None;
        match stream {
            Stream::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                entry.addr = listener.local_addr()?;
                st.by_addr.insert(entry.addr, idx);
                if choice.is_none() {
                    entry.shared = Some(listener.into());
                } else {
                    let me = Arc::clone(self);
                    accepting = Some(Box::new(move || {
                        tokio::spawn(accept_loop(me, idx, listener)).abort_handle()
                    }));
                }
            }
            Stream::Unix(listener, side) => {
                listener.set_nonblocking(true)?;
                entry.unix = Some(side);
                // A Unix-domain client has no address to be sticky to.
                if matches!(choice, PolicyChoice::Kind(PolicyKind::Sticky)) {
                    choice = PolicyChoice::Kind(PolicyKind::RoundRobin);
                }
                if choice.is_none() {
                    entry.shared = Some(listener.into());
                } else {
                    let me = Arc::clone(self);
                    accepting = Some(Box::new(move || {
                        tokio::spawn(accept_loop(me, idx, listener)).abort_handle()
                    }));
                }
            }
        }
        entry.sched = choice.build().map(Scheduler::new);
        for key in keys {
            st.by_key.insert(key, idx);
        }
        st.listeners.push(entry);
        if let Some(spawn) = accepting {
            st.listeners[idx].accept_task = Some(spawn());
        }
        Ok(idx)
    }

    /// Answer a worker's `ListenOn` request; what the primary listens on,
    /// on success (the worker is then ready for it).
    pub(crate) async fn listen_on(
        self: &Arc<Self>,
        id: WorkerId,
        tx: &cluster_ipc::Sender,
        req: ListenOnRequest,
    ) -> Option<Bound> {
        let found = self.find_or_open(&req.target);
        let (result, fds, opened) = match found {
            Ok((idx, bound, fd)) => {
                let ok = ListenOnOk {
                    bound: bound.clone(),
                    fd_attached: fd.is_some(),
                };
                (Ok(ok), fd.into_iter().collect(), Some((idx, bound)))
            }
            Err(f) => (Err(f), Vec::new(), None),
        };
        let msg = ControlMsg::ListenOnReply(ListenOnReply {
            request_id: req.request_id,
            result,
        });
        // As for TCP: the reply is queued before the worker is routable.
        tx.send_control(&msg, fds).await.ok()?;
        let (idx, bound) = opened?;
        if let Some(idx) = idx {
            let mut st = self.lock();
            let st = &mut *st;
            let slot = st.workers.get(&id)?.slot;
            let entry = st.listeners.get_mut(idx)?;
            if let Some(u) = entry.unix.as_mut() {
                u.used = true;
            }
            entry.routes.entry(slot).or_default().push(Route {
                worker: id,
                request_id: req.request_id,
            });
            refresh_row(entry, slot, &st.workers, st.limits.window);
        }
        Some(bound)
    }

    /// The listener entry (stream kinds) or UDP socket for `target`, opened
    /// now if new: the entry's index, what it is bound to, and the socket
    /// for the worker when it is shared (UDP; a stream socket under `none`).
    #[allow(clippy::type_complexity, reason = "one private call site")]
    fn find_or_open(
        self: &Arc<Self>,
        target: &ListenTarget,
    ) -> Result<(Option<usize>, Bound, Option<OwnedFd>), ListenFailure> {
        let mut st = self.lock();
        let st = &mut *st;
        if st.closed {
            return Err(failure(&io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the cluster is shutting down",
            )));
        }
        let io = |e: io::Error| failure(&e);
        let key = match target {
            ListenTarget::Udp(addr) => {
                let (real, fd) = udp::find_or_bind(st, *addr).map_err(io)?;
                return Ok((None, Bound::Udp(real), Some(fd)));
            }
            ListenTarget::Fd(fd) => ListenKey::Fd(*fd),
            ListenTarget::Unix { addr, .. } => ListenKey::Unix(addr.clone()),
            _ => {
                return Err(failure_of(
                    ListenErrorKind::Unsupported,
                    "unsupported listen target",
                ));
            }
        };
        if let Some(found) = udp::find(st, &key) {
            // A descriptor that is a UDP socket.
            let (real, fd) = found.map_err(io)?;
            return Ok((None, Bound::Udp(real), Some(fd)));
        }
        let idx = match st.by_key.get(&key) {
            Some(&idx) => idx,
            None if st.holds(&key) => self.adopt(st, &key).map_err(io)?,
            None => match target {
                ListenTarget::Unix { addr, mode } => {
                    let (listener, side) = unix::bind(addr, *mode).map_err(|e| match e {
                        UnixBindError::TooLong => failure_of(
                            ListenErrorKind::PathTooLong,
                            "the path does not fit in sun_path",
                        ),
                        UnixBindError::Io(e) => failure(&e),
                    })?;
                    self.open_stream(st, Stream::Unix(listener, side), vec![key])
                        .map_err(io)?
                }
                _ => {
                    return Err(failure_of(
                        ListenErrorKind::UnknownDescriptor,
                        "the primary holds no socket under that descriptor",
                    ));
                }
            },
        };
        let entry = &st.listeners[idx];
        let fd = match &entry.shared {
            Some(l) => Some(l.try_clone().map_err(io)?),
            None => None,
        };
        let bound = match &entry.unix {
            Some(u) => Bound::Unix(u.addr.clone()),
            None => Bound::Tcp(entry.addr),
        };
        Ok((Some(idx), bound, fd))
    }
}

/// A failure the OS did not report.
fn failure_of(kind: ListenErrorKind, message: &str) -> ListenFailure {
    ListenFailure {
        kind,
        errno: None,
        message: message.to_owned(),
    }
}
