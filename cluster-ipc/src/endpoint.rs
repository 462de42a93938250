//! The async endpoint: a [`Sender`] and a [`Receiver`] over one channel end,
//! opened by [`handshake`].

mod recv;
mod send;
mod window;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::unix::AsyncFd;

pub use recv::{DEFAULT_RECEIVE_SPIN, Receiver};
pub use send::Sender;
pub use window::Credit;

use crate::control::{ControlMsg, Handshake, PROTOCOL_VERSION};
use crate::error::Error;
use crate::frame::{
    DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_LEN, FrameKind, decode_limited, decode_payload,
};

/// The receive window an endpoint announces unless configured otherwise
/// ([`Config::receive_window`]): 1 MiB of user frames, counted by
/// [`user_frame_charge`](crate::frame::user_frame_charge) (about 16,000
/// small messages, or one large one).
pub const DEFAULT_RECEIVE_WINDOW: u32 = 1024 * 1024;
use crate::sys;

/// Settings of an endpoint. Both ends should use the same frame cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    max_frame_len: u32,
    send_queue_bytes: usize,
    max_depth: u32,
    receive_spin: Duration,
    receive_window: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            send_queue_bytes: 256 * 1024,
            max_depth: DEFAULT_MAX_DEPTH,
            receive_spin: DEFAULT_RECEIVE_SPIN,
            receive_window: DEFAULT_RECEIVE_WINDOW,
        }
    }
}

impl Config {
    /// The largest payload accepted or sent, in bytes. Default: 64 MiB
    /// ([`DEFAULT_MAX_FRAME_LEN`]). A longer announced length is rejected
    /// from the header, before anything is allocated for it.
    pub fn max_frame_len(mut self, bytes: u32) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// The send queue's bound in encoded bytes. Default: 256 KiB (about a
    /// socket buffer: larger batches wait longer for the peer to drain them). Once this many
    /// bytes wait, `send().await` waits and `try_send` hands the message back.
    /// One frame is always accepted into an empty queue, so a queue holds at
    /// most this bound plus one frame (plus the batch being written). The
    /// queue also holds at most 256 descriptors (each is an open descriptor
    /// of this process until it is on the socket).
    pub fn send_queue_bytes(mut self, bytes: usize) -> Self {
        self.send_queue_bytes = bytes.max(1);
        self
    }

    /// How deeply a received user value may nest, in levels (each nested
    /// struct, enum, sequence, tuple, map, option and newtype counts one).
    /// Default: 128 ([`DEFAULT_MAX_DEPTH`]). Decoding a deeper value stops
    /// at the limit with [`Error::NestingTooDeep`] (that frame is consumed,
    /// the channel stays usable) instead of recursing until the stack
    /// overflows: a recursive enum a million levels deep fits in a 1 MB
    /// frame. Each level takes some stack while decoding (a few hundred
    /// bytes in a release build), so raise it only with the stack to match.
    pub fn max_depth(mut self, levels: u32) -> Self {
        self.max_depth = levels;
        self
    }

    /// How long a receive spins (non-blocking reads, yielding between
    /// them) before it parks on the reactor, while messages arrive densely
    /// (see `docs/ipc.md`, "The receive spin"). Default: 20 µs
    /// ([`DEFAULT_RECEIVE_SPIN`]), which makes a request-response round
    /// trip faster than a parked wake-up allows. Zero never spins: for an
    /// endpoint whose messages nobody waits on (acknowledgements,
    /// notices), where the spin's CPU is better left to the work that
    /// sends them.
    pub fn receive_spin(mut self, spin: Duration) -> Self {
        self.receive_spin = spin;
        self
    }

    /// How many bytes of user messages the peer may send ahead of what this
    /// end's program consumed, announced in the handshake. Default: 1 MiB
    /// ([`DEFAULT_RECEIVE_WINDOW`]). Each user frame counts its header and
    /// payload plus a fixed [`MESSAGE_COST`](crate::frame::MESSAGE_COST),
    /// so the window bounds the memory of unconsumed messages, however
    /// small: at most the window plus one frame. A message is consumed when
    /// [`Receiver::recv`] returns it decoded, or when the [`Credit`] of a
    /// [`UserFrame`] is dropped. Control frames take none of it. Zero is
    /// taken as one byte (one message at a time).
    pub fn receive_window(mut self, bytes: u32) -> Self {
        self.receive_window = bytes.max(1);
        self
    }

    /// The configured receive window.
    pub fn window(&self) -> u32 {
        self.receive_window
    }

    /// The configured frame cap.
    pub fn frame_cap(&self) -> u32 {
        self.max_frame_len
    }

    /// The configured nesting limit.
    pub fn depth_limit(&self) -> u32 {
        self.max_depth
    }
}

/// State shared by the halves of one endpoint and its writer task.
struct Shared {
    fd: AsyncFd<OwnedFd>,
    cap: u32,
    max_depth: u32,
    /// How long a receive spins before it parks ([`Config::receive_spin`]).
    receive_spin: Duration,
    /// Set by the receiver when a read brought bytes, taken by the sender's
    /// next send: a send that answers a message is written at once by the
    /// sending task (see `Sender::push`), a stream of sends is batched.
    answer_pending: AtomicBool,
    /// The send queue: the sender's, where the receiver also queues window
    /// updates and applies the peer's.
    queue: Arc<send::Queue>,
}

/// A frame that arrived: a control message or a user message, each with the
/// descriptors attached to it (closed when dropped unclaimed).
///
/// `U` is [`UserFrame`] (the payload still encoded, for a loop that
/// dispatches without knowing the user type) or the user type itself.
#[derive(Debug)]
pub enum Incoming<U = UserFrame> {
    /// A message of the cluster machinery.
    Control(ControlMsg, Vec<OwnedFd>),
    /// A user message.
    User(U, Vec<OwnedFd>),
}

/// A user message whose payload has not been decoded yet.
///
/// It holds its room in the receiver's window (its [`Credit`]) until it is
/// dropped, or until the credit is taken out with [`UserFrame::take_credit`]
/// to be held for as long as the message waits for the program.
#[derive(Debug)]
pub struct UserFrame {
    payload: Vec<u8>,
    max_depth: u32,
    credit: Credit,
}

impl UserFrame {
    pub(crate) fn from_payload(payload: Vec<u8>, max_depth: u32, credit: Credit) -> Self {
        UserFrame {
            payload,
            max_depth,
            credit,
        }
    }

    /// Takes this message's room in the receiver's window out of the frame:
    /// dropping the returned [`Credit`] gives it back to the peer. (The
    /// frame keeps none.)
    pub fn take_credit(&mut self) -> Credit {
        std::mem::replace(&mut self.credit, Credit::none())
    }

    /// Decodes the payload as `T`. Trailing bytes are an error, and so is a
    /// value nested deeper than the receiving endpoint's
    /// [`Config::max_depth`] ([`Error::NestingTooDeep`]).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode_limited(FrameKind::User, &self.payload, self.max_depth)
    }

    /// The encoded (postcard) payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.payload
    }
}

/// Opens an endpoint on a channel end and exchanges handshakes.
///
/// Sends `ours` (its `version` should be [`PROTOCOL_VERSION`]; see
/// [`Handshake::new`]; its `window` is replaced by `config`'s
/// [`receive_window`](Config::receive_window)), then waits for the peer's. Returns the two halves and
/// the peer's handshake. A peer at another version gives
/// [`Error::VersionMismatch`]; any other first frame gives
/// [`Error::UnexpectedFrame`].
///
/// Must run inside a tokio runtime: the sender's writer is a task spawned on
/// it. Outside any runtime it returns [`Error::NoRuntime`]. Once that
/// runtime shuts down, the [`Sender`] fails with [`Error::Closed`] (what was
/// queued and not yet written is lost).
///
/// # Panics
///
/// Inside tokio, when the runtime was built without I/O (`enable_io`).
pub async fn handshake(
    fd: OwnedFd,
    ours: Handshake,
    config: Config,
) -> Result<(Sender, Receiver, Handshake), Error> {
    let ours = Handshake {
        window: config.receive_window,
        ..ours
    };
    let (tx, mut rx) = open(fd, config)?;
    tx.send_frame(FrameKind::Handshake, &ours, Vec::new())
        .await?;
    // On the socket before the peer's is read: a side that refuses the
    // peer's handshake and ends still has sent its own (the receive may
    // find the peer's frame at once, before the writer task ran). A failed
    // write is not this call's error: the peer may have sent its handshake
    // and gone, which the receiver reports after it; the sender keeps the
    // error for the next send.
    let _ = tx.flush().await;
    let theirs = rx.recv_handshake().await?;
    tx.set_peer_window(theirs.window);
    Ok((tx, rx, theirs))
}

fn open(fd: OwnedFd, config: Config) -> Result<(Sender, Receiver), Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime {
            reason: "not called from a runtime context",
        });
    }
    sys::set_nonblocking(std::os::fd::AsFd::as_fd(&fd)).map_err(|source| Error::Io {
        op: "fcntl(O_NONBLOCK)",
        source,
    })?;
    // Readable interest only: the writer registers its own descriptor for
    // writability while (and only while) the socket is full, so the peer's
    // reads do not wake this process with EPOLLOUT edges it does not need.
    let fd = sys::register(fd, tokio::io::Interest::READABLE).map_err(|(_, source)| Error::Io {
        op: "epoll registration",
        source,
    })?;
    let queue = send::Queue::new(config.send_queue_bytes, config.max_frame_len);
    let shared = Arc::new(Shared {
        fd,
        cap: config.max_frame_len,
        max_depth: config.max_depth,
        receive_spin: config.receive_spin,
        answer_pending: AtomicBool::new(false),
        queue,
    });
    let write_fd = shared
        .fd
        .get_ref()
        .try_clone()
        .map_err(|source| Error::Io { op: "dup", source })?;
    let grants = Arc::new(window::Grants::new(
        config.receive_window,
        Arc::downgrade(&shared),
    ));
    let tx = Sender::start(Arc::clone(&shared), write_fd);
    let rx = Receiver::new(shared, grants);
    Ok((tx, rx))
}

/// Checks the peer's handshake payload: the version first, then the rest.
pub(crate) fn parse_handshake(payload: &[u8]) -> Result<Handshake, Error> {
    let malformed = |source| Error::MalformedPayload {
        kind: FrameKind::Handshake,
        expected: "Handshake",
        source,
    };
    let (theirs, _) = postcard::take_from_bytes::<u32>(payload).map_err(malformed)?;
    if theirs != PROTOCOL_VERSION {
        return Err(Error::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    decode_payload(FrameKind::Handshake, payload)
}
