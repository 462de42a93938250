//! The one path by which a listener comes to be, for every kind: a
//! worker's request (`Listen` for a TCP address, `ListenOn` for a
//! Unix-domain socket, a UDP address or a descriptor the primary holds) is
//! a [`ListenKey`]; the listener entry under that key is used if there is
//! one, else a socket the primary holds for it is adopted (one given to
//! `Cluster::inherit_socket`, or one inherited at start from a service
//! manager or an upgrading primary, `activation.rs`), else the primary
//! binds it. Then the worker is answered (the bound address; the socket
//! itself when it is shared) and only then made routable, and its listener
//! is woken (parked connections, the accept task), whatever the kind.
//!
//! Opening is serialised by [`Balancer`]'s `opening` lock (an async one):
//! the balancer's state lock is not held while a socket is bound, and a
//! Unix-domain bind's check of a socket file in the way (a connect, bounded
//! in time) never blocks the network thread (`unix.rs`).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use cluster_ipc::{
    Bound, ControlMsg, ListenErrorKind, ListenFailure, ListenOk, ListenOnOk, ListenOnReply,
    ListenOnRequest, ListenReply, ListenRequest, ListenTarget, UnixAddr,
};
use sched_policy::{PolicyKind, Scheduler};
use tokio::net::TcpSocket;

use super::{Balancer, ListenerEntry, Route, State, handoff, refresh_row, unix, wake};
use crate::event::WorkerId;
use crate::settings::PolicyChoice;

/// How many connections may wait in the kernel's accept queue of a TCP
/// listener the primary binds.
const BACKLOG: u32 = 1024;

/// The name (`LISTEN_FDNAMES`) under which an upgrade hands on a
/// Unix-domain socket whose file the cluster owns: the new primary removes
/// that file at its end (if the path still names it), as this one would
/// have. Any other socket keeps its own name.
pub(crate) const OWNED_FILE: &str = "procwork-owned";

/// What a worker asks to listen on: how a listener is found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ListenKey {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain stream socket.
    Unix(UnixAddr),
    /// A UDP address.
    Udp(SocketAddr),
    /// The socket held under this descriptor number in the primary.
    Fd(RawFd),
}

impl From<&crate::ListenTarget> for ListenKey {
    fn from(target: &crate::ListenTarget) -> Self {
        match target {
            crate::ListenTarget::Tcp(addr) => ListenKey::Tcp(*addr),
            crate::ListenTarget::Unix(addr) => ListenKey::Unix(addr.to_wire()),
            crate::ListenTarget::Udp(addr) => ListenKey::Udp(*addr),
            crate::ListenTarget::Fd(fd) => ListenKey::Fd(*fd),
        }
    }
}

impl ListenKey {
    /// Whether a socket found under `key` answers to this one: the same
    /// key, or, for a TCP or UDP request of port 0 ("any port"), a socket
    /// of that kind on the same IP address.
    pub(crate) fn answers(&self, key: &ListenKey) -> bool {
        match (self, key) {
            (ListenKey::Tcp(have), ListenKey::Tcp(want))
            | (ListenKey::Udp(have), ListenKey::Udp(want)) => {
                have == want || (want.port() == 0 && have.ip() == want.ip())
            }
            _ => self == key,
        }
    }

    /// Whether a listener bound to `bound` may be what this key asked for.
    fn fits(&self, bound: &Bound) -> bool {
        matches!(
            (self, bound),
            (ListenKey::Tcp(_), Bound::Tcp(_))
                | (ListenKey::Unix(_), Bound::Unix(_))
                | (ListenKey::Udp(_), Bound::Udp(_))
                | (ListenKey::Fd(_), _)
        )
    }
}

/// A socket for the cluster to listen on for its workers, already bound
/// (and, for a stream socket, listening): a systemd socket unit's
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
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }

    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            InheritedSocket::Tcp(s) => s.as_fd(),
            InheritedSocket::Unix(s) => s.as_fd(),
            InheritedSocket::Udp(s) => s.as_fd(),
        }
    }

    /// A close-on-exec duplicate of the socket.
    pub(crate) fn duplicate(&self) -> io::Result<OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }

    /// What it is bound to.
    fn bound(&self) -> io::Result<Bound> {
        Ok(match self {
            InheritedSocket::Tcp(s) => Bound::Tcp(s.local_addr()?),
            InheritedSocket::Unix(s) => Bound::Unix(
                unix::addr_of(s)
                    .ok_or_else(|| io::Error::other("an unnamed Unix-domain socket"))?,
            ),
            InheritedSocket::Udp(s) => Bound::Udp(s.local_addr()?),
        })
    }

    /// The keys it is found under: its descriptor number, and its address
    /// when the OS tells it.
    pub(crate) fn keys(&self) -> Vec<ListenKey> {
        let mut keys = vec![ListenKey::Fd(self.raw_fd())];
        keys.extend(match self.bound() {
            Ok(Bound::Tcp(a)) => Some(ListenKey::Tcp(a)),
            Ok(Bound::Unix(a)) => Some(ListenKey::Unix(a)),
            Ok(Bound::Udp(a)) => Some(ListenKey::Udp(a)),
            _ => None,
        });
        keys
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            InheritedSocket::Tcp(s) => s.set_nonblocking(true),
            InheritedSocket::Unix(s) => s.set_nonblocking(true),
            InheritedSocket::Udp(s) => s.set_nonblocking(true),
        }
    }

    /// The path of a Unix-domain socket's file.
    fn path(&self) -> Option<std::path::PathBuf> {
        match self {
            InheritedSocket::Unix(s) => s.local_addr().ok()?.as_pathname().map(Into::into),
            _ => None,
        }
    }
}

/// A socket the primary holds and no listener took yet, with its keys and
/// its name (`LISTEN_FDNAMES`, for one inherited at start).
pub(crate) struct Held {
    pub(crate) keys: Vec<ListenKey>,
    pub(crate) socket: InheritedSocket,
    pub(crate) name: Option<String>,
}

impl Held {
    pub(crate) fn answers(&self, key: &ListenKey) -> bool {
        self.keys.iter().any(|k| k.answers(key))
    }
}

/// A listener opened (or found) for a request: its index, what it is bound
/// to, and a duplicate of the socket for the worker when it is shared.
type Opened = (usize, Bound, Option<OwnedFd>);

impl Balancer {
    /// Give the primary a socket to listen on for its workers; its
    /// descriptor number (the key of a worker's `listen_fd`).
    pub(crate) fn inherit(&self, socket: InheritedSocket) -> RawFd {
        let fd = socket.raw_fd();
        let keys = socket.keys();
        self.lock().given.push(Held {
            keys,
            socket,
            name: None,
        });
        fd
    }

    /// The descriptor number of a socket the primary holds for `key` (given
    /// to it, inherited at start, or already a listener), for a worker's
    /// `listen_fd`.
    pub(crate) fn held_fd(&self, key: &ListenKey) -> Option<RawFd> {
        let st = self.lock();
        if let Some(entry) = st.by_key.get(key).and_then(|&i| st.listeners.get(i)) {
            return entry.socket.as_ref().map(InheritedSocket::raw_fd);
        }
        if let Some(held) = st.given.iter().find(|h| h.answers(key)) {
            return Some(held.socket.raw_fd());
        }
        drop(st);
        crate::primary::activation::held_fd(key)
    }

    /// Duplicates of the sockets given to the primary
    /// (`Cluster::inherit_socket`) that no listener took yet, with their
    /// names (none): what `unused.rs` checks beside the ones inherited at
    /// start.
    pub(crate) fn untaken(&self) -> Vec<(Option<String>, OwnedFd)> {
        self.lock()
            .given
            .iter()
            .filter_map(|h| Some((h.name.clone(), h.socket.duplicate().ok()?)))
            .collect()
    }

    /// Answer a worker's TCP listen request; the bound address on success
    /// (the worker is then ready for that listener).
    pub(crate) async fn listen(
        self: &Arc<Self>,
        id: WorkerId,
        tx: &cluster_ipc::Sender,
        req: ListenRequest,
    ) -> Option<SocketAddr> {
        let key = ListenKey::Tcp(req.addr);
        let bound = self
            .answer(id, tx, req.request_id, key, None, |request_id, result| {
                let result = result.and_then(|(bound, fd_attached)| match bound {
                    Bound::Tcp(addr) => Ok(ListenOk { addr, fd_attached }),
                    _ => Err(failure_of(ListenErrorKind::Unsupported, "not a TCP socket")),
                });
                ControlMsg::ListenReply(ListenReply { request_id, result })
            })
            .await?;
        match bound {
            Bound::Tcp(addr) => Some(addr),
            _ => None,
        }
    }

    /// Answer a worker's `ListenOn` request; what the primary listens on,
    /// on success (the worker is then ready for it).
    pub(crate) async fn listen_on(
        self: &Arc<Self>,
        id: WorkerId,
        tx: &cluster_ipc::Sender,
        req: ListenOnRequest,
    ) -> Option<Bound> {
        let (key, mode) = match req.target {
            ListenTarget::Udp(addr) => (ListenKey::Udp(addr), None),
            ListenTarget::Fd(fd) => (ListenKey::Fd(fd), None),
            ListenTarget::Unix { addr, mode } => (ListenKey::Unix(addr), mode),
            _ => {
                let failure = failure_of(ListenErrorKind::Unsupported, "unsupported listen target");
                let msg = ControlMsg::ListenOnReply(ListenOnReply {
                    request_id: req.request_id,
                    result: Err(failure),
                });
                let _ = tx.send_control(&msg, Vec::new()).await;
                return None;
            }
        };
        self.answer(id, tx, req.request_id, key, mode, |request_id, result| {
            let result = result.map(|(bound, fd_attached)| ListenOnOk { bound, fd_attached });
            ControlMsg::ListenOnReply(ListenOnReply { request_id, result })
        })
        .await
    }

    /// The one answer to a listen request of any kind: open (or find) the
    /// listener, send the reply `reply` makes (the socket attached when
    /// shared), then make the worker routable there and wake the listener.
    /// The reply is queued before the worker becomes routable, so it
    /// reaches the worker before any connection of this listener.
    async fn answer(
        self: &Arc<Self>,
        id: WorkerId,
        tx: &cluster_ipc::Sender,
        request_id: u64,
        key: ListenKey,
        mode: Option<u32>,
        reply: impl FnOnce(u64, Result<(Bound, bool), ListenFailure>) -> ControlMsg,
    ) -> Option<Bound> {
        let (result, fds, opened) = match self.open(&key, mode).await {
            Ok((idx, bound, fd)) => (
                Ok((bound.clone(), fd.is_some())),
                fd.into_iter().collect(),
                Some((idx, bound)),
            ),
            Err(failure) => (Err(failure), Vec::new(), None),
        };
        tx.send_control(&reply(request_id, result), fds)
            .await
            .ok()?;
        let (idx, bound) = opened?;
        self.add_route(id, idx, request_id)?;
        Some(bound)
    }

    /// `id` listens on listener `idx` from now on: its route, its row in
    /// the scheduler, and the listener woken (its parked connections go to
    /// the worker that just came, its accept task resumes).
    fn add_route(&self, id: WorkerId, idx: usize, request_id: u64) -> Option<()> {
        let mut st = self.lock();
        let st = &mut *st;
        let slot = st.workers.get(&id)?.slot;
        let entry = st.listeners.get_mut(idx)?;
        entry.routes.entry(slot).or_default().push(Route {
            worker: id,
            request_id,
        });
        refresh_row(entry, slot, &st.workers, st.limits.window);
        wake(st, idx);
        Some(())
    }

    /// The listener for `key`: found, or adopted from the sockets the
    /// primary holds, or bound now (`mode`: the permission bits of a new
    /// Unix-domain socket file).
    async fn open(
        self: &Arc<Self>,
        key: &ListenKey,
        mode: Option<u32>,
    ) -> Result<Opened, ListenFailure> {
        let _one_at_a_time = self.opening.lock().await;
        let given = {
            let mut st = self.lock();
            if st.closed {
                return Err(shutting_down());
            }
            if let Some(&idx) = st.by_key.get(key) {
                return opened(&st, idx, key);
            }
            st.given
                .iter()
                .position(|h| h.answers(key))
                .map(|at| st.given.swap_remove(at))
        };
        let held = match given.or_else(|| crate::primary::activation::take(key)) {
            Some(held) => held,
            None => {
                let socket = bind(key, mode).await?;
                let keys = socket.0.keys();
                let file = socket.1;
                let mut st = self.lock();
                let idx = self
                    .add_entry(&mut st, socket.0, keys, key, None, file)
                    .map_err(|e| failure(&e))?;
                return opened(&st, idx, key);
            }
        };
        // A socket file handed on by an upgrading primary as the cluster's
        // own is this primary's to remove at its end.
        let file = match (&held.name, held.socket.path()) {
            (Some(name), Some(path)) if name == OWNED_FILE => unix::SocketFile::of(&path).ok(),
            _ => None,
        };
        let mut st = self.lock();
        let idx = self
            .add_entry(&mut st, held.socket, held.keys, key, held.name, file)
            .map_err(|e| failure(&e))?;
        opened(&st, idx, key)
    }

    /// Make `socket` a listener entry, found under `keys` and `requested`
    /// (its accept task started when its connections are handed over); its
    /// index. Closed at once if the cluster closed meanwhile.
    fn add_entry(
        self: &Arc<Self>,
        st: &mut State,
        socket: InheritedSocket,
        keys: Vec<ListenKey>,
        requested: &ListenKey,
        name: Option<String>,
        file: Option<unix::SocketFile>,
    ) -> io::Result<usize> {
        if st.closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the cluster is shutting down",
            ));
        }
        socket.set_nonblocking()?;
        let bound = socket.bound()?;
        let mut choice = st
            .choice
            .clone()
            .unwrap_or(PolicyChoice::Kind(PolicyKind::RoundRobin));
        // A Unix-domain client has no address to be sticky to.
        if matches!(socket, InheritedSocket::Unix(_))
            && matches!(choice, PolicyChoice::Kind(PolicyKind::Sticky))
        {
            choice = PolicyChoice::Kind(PolicyKind::RoundRobin);
        }
        let shared = choice.is_none() || matches!(socket, InheritedSocket::Udp(_));
        let idx = st.listeners.len();
        // Spawned before the entry is in, but it reads the entry under the
        // lock held here, so it finds it.
        let accept_task = match shared {
            true => None,
            false => Some(handoff::spawn_accept(Arc::clone(self), idx, &socket)?),
        };
        st.listeners.push(ListenerEntry {
            bound,
            socket: Some(socket),
            name,
            file,
            shared,
            sched: match shared {
                true => None,
                false => choice.build().map(Scheduler::new),
            },
            routes: BTreeMap::new(),
            accept_task,
            parked: Default::default(),
            waiting: false,
            room_notify: Default::default(),
        });
        for key in keys.into_iter().chain([requested.clone()]) {
            st.by_key.insert(key, idx);
        }
        Ok(idx)
    }
}

/// What a request for `key` gets from listener `idx`.
fn opened(st: &State, idx: usize, key: &ListenKey) -> Result<Opened, ListenFailure> {
    let entry = &st.listeners[idx];
    if !key.fits(&entry.bound) {
        return Err(failure_of(
            ListenErrorKind::Unsupported,
            "another kind of socket is held there",
        ));
    }
    let fd = match (&entry.socket, entry.shared) {
        (Some(socket), true) => Some(socket.duplicate().map_err(|e| failure(&e))?),
        (None, _) => return Err(shutting_down()),
        (Some(_), false) => None,
    };
    Ok((idx, entry.bound.clone(), fd))
}

/// Bind what `key` names: a TCP address (`SO_REUSEADDR`, a large
/// backlog), a Unix-domain socket (`unix.rs`: the stale file, the mode) or
/// a UDP address; with the socket file this cluster then owns.
async fn bind(
    key: &ListenKey,
    mode: Option<u32>,
) -> Result<(InheritedSocket, Option<unix::SocketFile>), ListenFailure> {
    let io = |e: io::Error| failure(&e);
    match key {
        ListenKey::Tcp(addr) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(io)?;
            socket.set_reuseaddr(true).map_err(io)?;
            socket.bind(*addr).map_err(io)?;
            let listener = socket.listen(BACKLOG).map_err(io)?.into_std().map_err(io)?;
            Ok((InheritedSocket::Tcp(listener), None))
        }
        ListenKey::Udp(addr) => {
            let socket = std::net::UdpSocket::bind(addr).map_err(io)?;
            Ok((InheritedSocket::Udp(socket), None))
        }
        ListenKey::Unix(addr) => {
            let (listener, file) = unix::bind(addr, mode).await?;
            Ok((InheritedSocket::Unix(listener), file))
        }
        ListenKey::Fd(_) => Err(failure_of(
            ListenErrorKind::UnknownDescriptor,
            "the primary holds no socket under that descriptor",
        )),
    }
}

fn shutting_down() -> ListenFailure {
    failure(&io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "the cluster is shutting down",
    ))
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

/// A failure the OS did not report.
pub(super) fn failure_of(kind: ListenErrorKind, message: &str) -> ListenFailure {
    ListenFailure {
        kind,
        errno: None,
        message: message.to_owned(),
    }
}
