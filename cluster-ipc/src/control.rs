//! The control grammar: everything the cluster itself says on a channel.
//!
//! These types are the wire. Their postcard encoding is pinned byte for byte
//! by the snapshot tests in `src/control/tests.rs`; the rules for changing
//! them are in `docs/ipc.md` (append variants at the end, never reorder,
//! never change a variant's fields without bumping [`PROTOCOL_VERSION`]).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The protocol version announced in the handshake. Bumped on any change
/// that an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 3;

/// The first frame each way: who is talking and which protocol it speaks.
///
/// `version` is the first field on the wire, so any future handshake still
/// starts with it and a mismatch is detected before anything else is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The worker this channel belongs to (the same number from both ends).
    pub worker_id: u64,
    /// The sender's process id.
    pub pid: u32,
    /// A number the primary chose for this one launch and gave the worker
    /// out of band (in its environment); `0` when unused. Both ends send the
    /// same token, and each may refuse a peer whose token differs: a process
    /// that inherited a channel it was not launched for cannot pass as the
    /// worker. The handshake carries it; checking it is the caller's (it
    /// knows the expected value).
    pub token: u64,
    /// The sender's receive window: how many bytes of user frames
    /// (counted by [`user_frame_charge`](crate::frame::user_frame_charge))
    /// the peer may have sent and not yet had granted back with a window
    /// update. The endpoint fills it in from its
    /// [`Config::receive_window`](crate::Config::receive_window).
    pub window: u32,
}

impl Handshake {
    /// A handshake at this build's protocol version, with token `0`.
    pub fn new(worker_id: u64, pid: u32) -> Self {
        Handshake {
            version: PROTOCOL_VERSION,
            worker_id,
            pid,
            token: 0,
            window: crate::endpoint::DEFAULT_RECEIVE_WINDOW,
        }
    }

    /// The same handshake with this launch token (see [`Handshake::token`]).
    pub fn with_token(self, token: u64) -> Self {
        Handshake { token, ..self }
    }

    /// A handshake for this process (`std::process::id()`).
    pub fn for_this_process(worker_id: u64) -> Self {
        Handshake::new(worker_id, std::process::id())
    }
}

/// What the cluster machinery says, as opposed to user messages.
///
/// Descriptors travel beside the frame: [`ControlMsg::NewConnection`] carries
/// the accepted socket, and a [`ControlMsg::ListenReply`] whose
/// [`ListenOk::fd_attached`] is true carries the listening socket.
///
/// Not `#[non_exhaustive]`, on purpose: a receive loop matches every variant
/// (those of the wrong direction too), so a new message is a compile error
/// wherever it must be handled instead of falling into a catch-all arm. A
/// new variant is a wire change anyway ([`PROTOCOL_VERSION`] goes up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlMsg {
    /// Worker → primary: the worker is up and its receive loop runs.
    Online,
    /// Worker → primary: please listen on an address for me.
    Listen(ListenRequest),
    /// Primary → worker: the answer to a [`ControlMsg::Listen`].
    ListenReply(ListenReply),
    /// Worker → primary: the worker now serves connections for this address.
    Listening {
        /// The address, with any port 0 resolved.
        addr: SocketAddr,
    },
    /// Primary → worker: an accepted connection; its socket is attached.
    NewConnection {
        /// Primary-assigned id of the connection.
        conn_id: u64,
        /// The `request_id` of the listen request it was accepted for.
        listener_id: u64,
        /// The client's address.
        peer: SocketAddr,
        /// The hand-off deadline, in nanoseconds of `CLOCK_MONOTONIC`
        /// (one clock for every process of the machine): a worker refuses
        /// the connection if it would hand it to its user after this
        /// instant, since the primary may have taken it back by then.
        deadline_ns: u64,
    },
    /// Worker → primary: the worker took (or refused) a connection.
    ConnectionAck {
        /// The connection.
        conn_id: u64,
        /// False when the worker refused it (the primary may re-route it).
        accepted: bool,
    },
    /// Worker → primary: a handed-over connection was closed.
    ConnectionClosed {
        /// The connection.
        conn_id: u64,
    },
    /// Either way: no new work; finish what is in flight, then close.
    ///
    /// Control frames overtake user messages queued before them, so the
    /// count says where the disconnect stands among them: the receiver
    /// delivers the first `after_messages` user messages of the channel
    /// (counted from the handshake), and only then ends its stream of
    /// messages.
    Disconnect {
        /// User messages the sender had queued on this channel before it.
        after_messages: u64,
    },
    /// Worker → primary: liveness, once per heartbeat interval. Not
    /// answered: the primary only counts the time since the last one, and a
    /// worker learns that its primary is gone from the channel closing.
    Heartbeat {
        /// Sequence number, from 1, one more per heartbeat.
        seq: u64,
    },
    /// Worker → primary: please listen on something other than a TCP
    /// address for me (a Unix-domain path, a UDP address, a descriptor the
    /// primary holds).
    ListenOn(ListenOnRequest),
    /// Primary → worker: the answer to a [`ControlMsg::ListenOn`].
    ListenOnReply(ListenOnReply),
    /// Primary → worker: an accepted Unix-domain connection (it has no IP
    /// peer); its socket is attached.
    NewUnixConnection {
        /// Primary-assigned id of the connection (acknowledged and closed
        /// like a [`ControlMsg::NewConnection`]'s).
        conn_id: u64,
        /// The `request_id` of the listen request it was accepted for.
        listener_id: u64,
        /// The hand-off deadline, as for a [`ControlMsg::NewConnection`].
        deadline_ns: u64,
    },
}

impl ControlMsg {
    /// The variant's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ControlMsg::Online => "Online",
            ControlMsg::Listen(_) => "Listen",
            ControlMsg::ListenReply(_) => "ListenReply",
            ControlMsg::Listening { .. } => "Listening",
            ControlMsg::NewConnection { .. } => "NewConnection",
            ControlMsg::ConnectionAck { .. } => "ConnectionAck",
            ControlMsg::ConnectionClosed { .. } => "ConnectionClosed",
            ControlMsg::Disconnect { .. } => "Disconnect",
            ControlMsg::Heartbeat { .. } => "Heartbeat",
            ControlMsg::ListenOn(_) => "ListenOn",
            ControlMsg::ListenOnReply(_) => "ListenOnReply",
            ControlMsg::NewUnixConnection { .. } => "NewUnixConnection",
        }
    }
}

/// A worker's request that the primary listen on its behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenRequest {
    /// Worker-chosen id, echoed in the reply.
    pub request_id: u64,
    /// The address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// The kind of socket.
    pub kind: SocketKind,
}

/// The kind of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SocketKind {
    /// A TCP stream listener.
    Tcp,
}

/// The primary's answer to a [`ListenRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenReply {
    /// The request answered.
    pub request_id: u64,
    /// What happened.
    pub result: Result<ListenOk, ListenFailure>,
}

/// A listen that worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenOk {
    /// The bound address (a requested port 0 resolved to the real port).
    pub addr: SocketAddr,
    /// How connections reach the worker, as the primary's policy chose:
    /// true when the listening socket is attached to this frame and the
    /// worker accepts on it (Node's `SCHED_NONE`); false when the primary
    /// accepts and hands each connection over with
    /// [`ControlMsg::NewConnection`] (Node's `SCHED_RR`).
    pub fd_attached: bool,
}

/// A listen that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenFailure {
    /// The class of failure.
    pub kind: ListenErrorKind,
    /// The OS error number, when the OS reported one.
    pub errno: Option<i32>,
    /// A human-readable description.
    pub message: String,
}

/// The class of a failed listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ListenErrorKind {
    /// The address is taken (`EADDRINUSE`).
    AddrInUse,
    /// The address is not local (`EADDRNOTAVAIL`).
    AddrNotAvailable,
    /// Not allowed (`EACCES`, a privileged port).
    PermissionDenied,
    /// The socket kind or mode is not supported by this primary.
    Unsupported,
    /// Anything else; see `errno` and `message`.
    Other,
    /// A directory of the Unix-domain socket's path does not exist
    /// (`ENOENT`).
    NotFound,
    /// The Unix-domain socket's path (or abstract name) does not fit in
    /// `sun_path` (107 bytes and a terminating NUL on Linux).
    PathTooLong,
    /// The primary holds no listening socket under that descriptor number.
    UnknownDescriptor,
}

/// A worker's request that the primary listen on something other than a
/// TCP address ([`ControlMsg::ListenOn`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenOnRequest {
    /// Worker-chosen id, echoed in the reply (the same id space as
    /// [`ListenRequest::request_id`]).
    pub request_id: u64,
    /// What to listen on.
    pub target: ListenTarget,
}

/// What a [`ListenOnRequest`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ListenTarget {
    /// A Unix-domain stream socket.
    Unix {
        /// Where.
        addr: UnixAddr,
        /// The permission bits the primary sets on the socket file after
        /// binding it (filesystem paths only); `None` leaves what the umask
        /// gave.
        mode: Option<u32>,
    },
    /// A UDP socket, shared by every worker that binds this address.
    Udp(SocketAddr),
    /// A listening socket the primary already holds, by its descriptor
    /// number in the primary (Node's `listen({ fd })`).
    Fd(i32),
}

/// The address of a Unix-domain socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnixAddr {
    /// A filesystem path, as the OS's bytes.
    Path(Vec<u8>),
    /// A name in Linux's abstract namespace (without the leading NUL).
    Abstract(Vec<u8>),
}

/// The primary's answer to a [`ListenOnRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenOnReply {
    /// The request answered.
    pub request_id: u64,
    /// What happened.
    pub result: Result<ListenOnOk, ListenFailure>,
}

/// A [`ListenOnRequest`] that worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenOnOk {
    /// What the primary listens on.
    pub bound: Bound,
    /// True when the socket itself is attached to this frame (UDP always; a
    /// stream socket under the shared-listener mode).
    pub fd_attached: bool,
}

/// What a listening socket of the primary is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Bound {
    /// A TCP listener (a descriptor target may be one): its connections
    /// come as [`ControlMsg::NewConnection`].
    Tcp(SocketAddr),
    /// A Unix-domain stream listener: its connections come as
    /// [`ControlMsg::NewUnixConnection`].
    Unix(UnixAddr),
    /// A UDP socket (a requested port 0 resolved).
    Udp(SocketAddr),
}

#[cfg(test)]
mod tests;
