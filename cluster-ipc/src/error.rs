//! The one error type of the crate.
//!
//! Every way a channel can fail maps to one variant. Errors that come from the
//! peer's bytes (a malformed header, a frame over the cap, a version mismatch,
//! a truncated descriptor message) are fatal for the receiving half: after one
//! of them, the receiver reports [`Error::Closed`] and reads nothing more, and
//! the read side of the socket is shut down (the peer's sends then fail).

use std::io;

use crate::frame::FrameKind;

/// Everything that can go wrong on a channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end (or died). `partial_frame_bytes` counts the bytes
    /// of a frame it had started but not finished; 0 means a clean close
    /// between frames.
    #[error("peer closed the channel ({partial_frame_bytes} bytes of an unfinished frame)")]
    PeerClosed {
        /// Bytes of an unfinished frame left behind; 0 for a close between frames.
        partial_frame_bytes: usize,
    },
    /// This half was closed earlier (after a fatal error, or the other half
    /// of the local endpoint shut it down), or, for a sender, the runtime
    /// that ran its writer task (the one current at [`handshake`](crate::handshake))
    /// shut down.
    #[error("channel closed")]
    Closed,
    /// A frame announced (or would have) a payload longer than the cap.
    #[error("frame of {len} bytes exceeds the cap of {cap} bytes")]
    FrameTooLarge {
        /// The payload length announced by the header (or produced by the encoder).
        len: u64,
        /// The configured cap.
        cap: u32,
    },
    /// A frame header broke the format.
    #[error("malformed frame header: expected {expected}, found {found}")]
    MalformedHeader {
        /// What the format requires at that place.
        expected: &'static str,
        /// The value found instead.
        found: u64,
    },
    /// A payload did not decode as the type its frame kind (or the caller) named.
    #[error("malformed {kind} payload: expected {expected}")]
    MalformedPayload {
        /// The kind of frame whose payload failed.
        kind: FrameKind,
        /// The type the payload should have held.
        expected: &'static str,
        /// The decoder's error.
        #[source]
        source: postcard::Error,
    },
    /// A payload nested deeper than the receiver's limit
    /// ([`Config::max_depth`](crate::Config::max_depth)): decoding stopped
    /// there instead of recursing until the stack overflows. For a user
    /// frame, as for [`Error::MalformedPayload`], the frame is consumed and
    /// the channel stays usable.
    #[error("{kind} payload nested deeper than the limit of {limit} levels: expected {expected}")]
    NestingTooDeep {
        /// The kind of frame whose payload failed.
        kind: FrameKind,
        /// The type the payload should have held.
        expected: &'static str,
        /// The nesting limit in force.
        limit: u32,
    },
    /// The peer sent a user frame while what it had sent and not had
    /// granted back already filled this end's receive window: it broke the
    /// flow control (a correct peer waits for a window update).
    #[error("peer exceeded the receive window of {window} bytes ({outstanding} bytes outstanding)")]
    WindowExceeded {
        /// The window this end announced.
        window: u64,
        /// Bytes the peer had outstanding when it started the frame.
        outstanding: u64,
    },
    /// A frame of one kind arrived where another was required (the handshake
    /// must come first, and only once).
    #[error("unexpected {found} frame: expected {expected}")]
    UnexpectedFrame {
        /// What the protocol required at that point.
        expected: &'static str,
        /// The kind that arrived.
        found: FrameKind,
    },
    /// A control message arrived at the end that sends it (a worker's
    /// message at a worker, a primary's at the primary): the peer breaks the
    /// protocol. Reported by the receive loops that dispatch control
    /// messages; the channel itself is intact.
    #[error("{message} control message sent the wrong way")]
    MisdirectedControl {
        /// The message's name ([`ControlMsg::name`](crate::ControlMsg::name)).
        message: &'static str,
    },
    /// The peer speaks another version of the protocol.
    #[error("protocol version mismatch: ours is {ours}, the peer's is {theirs}")]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) of this build.
        ours: u32,
        /// The version the peer announced.
        theirs: u32,
    },
    /// A message could not be encoded (a `Serialize` impl failed).
    #[error("could not encode a {kind} payload")]
    Encode {
        /// The kind of frame being encoded.
        kind: FrameKind,
        /// The encoder's error.
        #[source]
        source: postcard::Error,
    },
    /// A frame announced more descriptors than had arrived beside the stream.
    #[error("frame announced {announced} descriptors, only {queued} arrived")]
    MissingDescriptors {
        /// The count in the frame header.
        announced: u8,
        /// Descriptors received and not yet claimed.
        queued: usize,
    },
    /// The kernel truncated the ancillary data (`MSG_CTRUNC`): descriptors were lost.
    #[error("descriptor message truncated by the kernel (MSG_CTRUNC)")]
    DescriptorsTruncated,
    /// The peer sent more descriptors than any frame claimed.
    #[error("{queued} unclaimed descriptors exceed the limit of {limit}")]
    TooManyDescriptors {
        /// Descriptors waiting for a frame.
        queued: usize,
        /// The limit.
        limit: usize,
    },
    /// More descriptors than one frame can carry were given to a send.
    #[error("{count} descriptors exceed the per-frame limit of {limit}")]
    TooManyDescriptorsForFrame {
        /// Descriptors given.
        count: usize,
        /// [`MAX_FDS_PER_FRAME`](crate::MAX_FDS_PER_FRAME).
        limit: usize,
    },
    /// The channel descriptor named by the environment is missing or unusable.
    #[error("invalid inherited channel in ${var}: {reason}")]
    InvalidInheritedChannel {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it.
        reason: &'static str,
        /// The OS error behind it, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// An async endpoint was opened outside a tokio runtime (it needs the
    /// runtime's reactor, with I/O enabled, and spawns its writer task there).
    #[error("no tokio runtime with I/O enabled: {reason}")]
    NoRuntime {
        /// What was missing.
        reason: &'static str,
    },
    /// An operating-system call failed.
    #[error("{op} failed")]
    Io {
        /// The operation (`"sendmsg"`, `"recvmsg"`, `"socketpair"`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an OS error, mapping "the peer is gone" errnos to [`Error::PeerClosed`].
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::PeerClosed {
                partial_frame_bytes: 0,
            },
            _ => Error::Io { op, source },
        }
    }

    /// True when the error means the peer went away.
    pub fn is_peer_closed(&self) -> bool {
        matches!(self, Error::PeerClosed { .. })
    }
}

/// A [`Sender::try_send`](crate::Sender::try_send) that did not happen; the
/// message (and its descriptors) come back to the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The queue is full: wait (`send().await`) or drop the message.
    #[error("send queue is full")]
    Full(T),
    /// The channel is closed; the message can never be sent.
    #[error("channel closed")]
    Closed(T),
    /// The message itself is unsendable (it failed to encode, or is over the cap).
    #[error("message rejected")]
    Rejected(T, #[source] Box<Error>),
}

impl<T> TrySendError<T> {
    /// Gives back the unsent message.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) | TrySendError::Rejected(v, _) => v,
        }
    }
}
