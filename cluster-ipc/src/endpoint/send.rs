//! The sending half: a bounded byte queue that senders append encoded frames
//! to, and a writer task that drains it in as few `sendmsg` calls as it can.
//!
//! Descriptors wait in the queue beside the bytes, each tagged with the
//! offset of its frame. The writer attaches every pending descriptor (up to
//! the kernel's per-message limit) to the next `sendmsg`, which starts at or
//! before the first byte of the frame that claims it; the kernel delivers
//! them with the first byte of that `sendmsg`, so they are always queued at
//! the receiver by the time it parses the frame's header.
//!
//! Two lanes: control frames (and window updates) take no credit and no
//! room, and the writer takes them before the user frames queued with
//! them, so a hand-off, an acknowledgement or a heartbeat never waits
//! behind user messages (at most behind one batch already being written).
//! A user frame first takes credit from the peer's window (see
//! `super::window`); without credit, `send` waits and `try_send` hands the
//! message back.
//!
//! One shortcut: a frame sent after the receiver of the same endpoint read
//! something (an answer, in a request/response or ping-pong exchange) is
//! written by the sending task itself when the queue is empty and no batch is
//! being written, instead of waking the writer task. A stream of sends still
//! goes through the queue and is batched (only the first send after a read
//! can take the shortcut). Frames with descriptors always take the queue.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::Notify;

use super::Shared;
use crate::control::ControlMsg;
use crate::error::{Error, TrySendError};
use crate::frame::{
    Encoded, FrameKind, HEADER_LEN, MAX_FDS_PER_FRAME, PayloadSource, encode_frame,
    user_frame_charge,
};
use crate::sys::{self, Wait};

mod writer;
use writer::writer;

/// The sending half of an endpoint. Clone it to send from several tasks;
/// when the last clone is dropped, the queue is flushed and the write side
/// of the socket is shut down (the peer's receiver then sees the end).
#[derive(Clone)]
pub struct Sender {
    inner: Arc<SendInner>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued_bytes", &self.queued_bytes())
            .finish_non_exhaustive()
    }
}

struct SendInner {
    queue: Arc<Queue>,
    shared: Arc<Shared>,
}

impl Drop for SendInner {
    fn drop(&mut self) {
        self.queue.lock().senders_gone = true;
        self.queue.data_ready.notify_one();
    }
}

pub(super) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the writer: bytes were queued, or the senders are gone.
    data_ready: Notify,
    /// Wakes waiting senders: the queue drained, or the channel closed.
    space_ready: Notify,
    /// Tasks waiting on `space_ready`; the writer skips the notification
    /// (a lock inside `Notify`) when there are none.
    waiters: AtomicUsize,
    limit: usize,
    cap: u32,
}

/// Frames up to this size may be written by the sending task itself (see
/// `Sender::write_directly`); a larger one is left to the writer task, so a
/// short write never leaves much to move to the front of the queue.
const DIRECT_WRITE_MAX: usize = 64 * 1024;

/// Descriptors the queue holds at most (beyond one frame's worth into an
/// empty queue): each is an open descriptor of this process until sent.
const MAX_QUEUED_SEND_FDS: usize = 256;

#[derive(Default)]
struct QueueState {
    /// Control frames (and window updates, and the handshake): no credit,
    /// no bound (what the protocol sends is bounded by its own windows);
    /// the writer takes them first.
    control: Vec<u8>,
    /// Each descriptor of a control frame, with the offset of its frame.
    control_fds: Vec<(usize, OwnedFd)>,
    /// User frames, in order, each with its credit taken.
    bytes: Vec<u8>,
    /// Each descriptor with the offset of the frame that claims it.
    fds: Vec<(usize, OwnedFd)>,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
    senders_gone: bool,
    closed: Option<CloseReason>,
    credit: SendCredit,
}

impl QueueState {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.control.is_empty()
    }

    /// Drops everything queued (the channel closed).
    fn clear(&mut self) {
        self.bytes = Vec::new();
        self.fds.clear();
        self.control = Vec::new();
        self.control_fds.clear();
    }
}

/// The sending side's view of the peer's window.
#[derive(Default, Debug)]
struct SendCredit {
    /// The peer's window, from its handshake (0 until it arrived).
    window: u64,
    /// Bytes of user frames queued so far ([`user_frame_charge`]).
    charged: u64,
    /// Bytes the peer granted back so far.
    granted: u64,
    /// User frames queued so far.
    frames: u64,
    /// The peer can grant nothing more (its end of the stream came, or
    /// this end's receiver failed): a user frame without credit fails.
    ended: bool,
}

impl SendCredit {
    /// Whether a user frame may start: what is outstanding is under the
    /// peer's window.
    fn available(&self) -> bool {
        self.charged.saturating_sub(self.granted) < self.window
    }
}

#[derive(Debug, Clone, Copy)]
enum CloseReason {
    PeerClosed,
    Io(io::ErrorKind, Option<i32>),
    /// The writer task ended otherwise (its runtime shut down).
    WriterStopped,
}

impl CloseReason {
    /// The reason a failed write closes the queue for.
    fn from_write_error(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => CloseReason::PeerClosed,
            kind => CloseReason::Io(kind, e.raw_os_error()),
        }
    }

    fn to_error(self) -> Error {
        match self {
            CloseReason::PeerClosed => Error::PeerClosed {
                partial_frame_bytes: 0,
            },
            CloseReason::WriterStopped => Error::Closed,
            CloseReason::Io(kind, errno) => Error::Io {
                op: "sendmsg",
                source: errno.map_or_else(|| kind.into(), io::Error::from_raw_os_error),
            },
        }
    }
}

impl Queue {
    pub(super) fn new(limit: usize, cap: u32) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            data_ready: Notify::new(),
            space_ready: Notify::new(),
            waiters: AtomicUsize::new(0),
            limit,
            cap,
        })
    }

    /// Sends a window update on the control lane (nothing once this end
    /// stopped sending: its peer learns of the end of the stream instead).
    ///
    /// With the writer idle and nothing queued, the caller writes it to
    /// `fd` itself (16 bytes, non-blocking): a receive loop that always
    /// finds another message never yields to the writer task of its own
    /// runtime, so a queued update would wait until the loop ran dry, and
    /// the peer, out of credit by then, with it (`ipc.throughput_small` at
    /// 0.6x the rate without flow control).
    pub(super) fn push_window_update(&self, bytes: u64, fd: BorrowedFd<'_>) {
        let mut st = self.lock();
        if st.closed.is_some() || st.senders_gone {
            return;
        }
        let was_empty = st.is_empty();
        // A u64 always encodes, far under any cap.
        if encode_frame(&mut st.control, FrameKind::Window, &bytes, 0, self.cap).is_err() {
            return;
        }
        if was_empty && !st.writing {
            // A failure closed the queue; the receiver sees the socket's
            // state on its next read.
            let _ = self.write_directly(st, fd);
            return;
        }
        drop(st);
        if was_empty {
            self.data_ready.notify_one();
        }
    }

    /// Writes the one frame in the queue from the calling thread, without
    /// waking the writer task.
    ///
    /// Called with the lock held, the queue holding nothing but this frame
    /// (without descriptors) and no batch being written, so the frame
    /// follows every earlier one on the stream. What the socket does not
    /// take stays queued for the writer task; an error closes the queue as
    /// the writer would.
    fn write_directly(
        &self,
        mut st: MutexGuard<'_, QueueState>,
        fd: BorrowedFd<'_>,
    ) -> Result<(), CloseReason> {
        // The queue holds this one frame, in one of the two lanes.
        let lane = if st.control.is_empty() {
            &mut st.bytes
        } else {
            &mut st.control
        };
        match sys::send_with_fds(fd, lane, &[], Wait::DontWait) {
            Ok(n) if n == lane.len() => {
                lane.clear();
                Ok(())
            }
            Ok(n) => {
                lane.drain(..n);
                drop(st);
                self.data_ready.notify_one();
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                drop(st);
                self.data_ready.notify_one();
                Ok(())
            }
            Err(e) => {
                let reason = CloseReason::from_write_error(&e);
                st.closed = Some(reason);
                st.clear();
                drop(st);
                // The writer ends when it next looks at the queue; senders
                // waiting for room or a flush learn it now.
                self.data_ready.notify_one();
                self.space_ready.notify_waiters();
                Err(reason)
            }
        }
    }

    /// The peer granted `bytes` more: senders waiting for credit go on.
    pub(super) fn on_grant(&self, bytes: u64) {
        let mut st = self.lock();
        st.credit.granted = st.credit.granted.saturating_add(bytes);
        drop(st);
        self.wake_waiters();
    }

    /// The peer will grant nothing more (this end's receiver saw the end of
    /// the stream, or failed): senders waiting for credit fail instead of
    /// waiting for ever.
    pub(super) fn end_grants(&self) {
        self.lock().credit.ended = true;
        self.wake_waiters();
    }

    /// The peer's window, from its handshake.
    pub(super) fn set_peer_window(&self, window: u32) {
        self.lock().credit.window = u64::from(window);
        self.wake_waiters();
    }

    /// Wakes the tasks waiting for room or for a flush, if any.
    fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.space_ready.notify_waiters();
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panicking `Serialize` impl cannot leave the queue inconsistent:
        // `encode_frame` cuts off what it wrote, on unwind too.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a task as waiting on `space_ready` for as long as it lives.
///
/// Registered before the waiter re-checks the queue: a writer that frees
/// room after that check sees the count and notifies.
struct Waiting<'a>(&'a Queue);

impl<'a> Waiting<'a> {
    fn register(queue: &'a Queue) -> Self {
        queue.waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(queue)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

enum Push {
    Queued,
    Full,
}

impl Sender {
    pub(super) fn start(shared: Arc<Shared>, write_fd: OwnedFd) -> Sender {
        let queue = Arc::clone(&shared.queue);
        tokio::spawn(writer(Arc::clone(&shared), write_fd, Arc::clone(&queue)));
        Sender {
            inner: Arc::new(SendInner { queue, shared }),
        }
    }

    fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// The peer's window, from its handshake: user frames may go now.
    pub(super) fn set_peer_window(&self, window: u32) {
        self.queue().set_peer_window(window);
    }

    /// Encodes and queues one frame, unless the queue is full.
    #[inline]
    fn push<T: PayloadSource + ?Sized>(
        &self,
        kind: FrameKind,
        msg: &T,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<Push, Error> {
        self.push_with(kind, msg, fds, true)
    }

    /// [`Sender::push`]; `direct: false` never takes the answer shortcut.
    #[inline]
    fn push_with<T: PayloadSource + ?Sized>(
        &self,
        kind: FrameKind,
        msg: &T,
        fds: &mut Vec<OwnedFd>,
        direct: bool,
    ) -> Result<Push, Error> {
        let queue = self.queue();
        let mut guard = queue.lock();
        let st = &mut *guard;
        if let Some(reason) = st.closed {
            return Err(reason.to_error());
        }
        let user = kind == FrameKind::User;
        if user && !st.credit.available() {
            if st.credit.ended {
                // No window update will ever come.
                return Err(Error::PeerClosed {
                    partial_frame_bytes: 0,
                });
            }
            return Ok(Push::Full);
        }
        if user
            && !st.bytes.is_empty()
            && (st.bytes.len() >= queue.limit || st.fds.len() + fds.len() > MAX_QUEUED_SEND_FDS)
        {
            return Ok(Push::Full);
        }
        let was_empty = st.is_empty();
        let (buf, buf_fds) = if user {
            (&mut st.bytes, &mut st.fds)
        } else {
            (&mut st.control, &mut st.control_fds)
        };
        let offset = buf.len();
        msg.append_frame(buf, kind, fds.len(), queue.cap)?;
        let frame_len = buf.len() - offset;
        if user {
            // `frame_len - HEADER_LEN <= cap <= u32::MAX`: the encoder checked.
            st.credit.charged += user_frame_charge((frame_len - HEADER_LEN) as u32);
            st.credit.frames += 1;
        }
        if !fds.is_empty() {
            buf_fds.extend(fds.drain(..).map(|fd| (offset, fd)));
        } else if direct
            && was_empty
            && !st.writing
            && frame_len <= DIRECT_WRITE_MAX
            && self
                .inner
                .shared
                .answer_pending
                .swap(false, Ordering::Relaxed)
        {
            return self.write_directly(guard);
        }
        drop(guard);
        if was_empty {
            queue.data_ready.notify_one();
        }
        Ok(Push::Queued)
    }

    /// Writes the one frame in the queue from the sending task, without
    /// waking the writer task: an answer to a message that just arrived
    /// (request and response, ping-pong) goes out one task switch earlier.
    /// See [`Queue::write_directly`].
    #[cold]
    #[inline(never)]
    fn write_directly(&self, st: MutexGuard<'_, QueueState>) -> Result<Push, Error> {
        let fd = self.inner.shared.fd.get_ref().as_fd();
        match self.queue().write_directly(st, fd) {
            Ok(()) => Ok(Push::Queued),
            Err(reason) => Err(reason.to_error()),
        }
    }

    pub(super) async fn send_frame<T: PayloadSource + ?Sized>(
        &self,
        kind: FrameKind,
        msg: &T,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        if fds.len() > MAX_FDS_PER_FRAME {
            return Err(Error::TooManyDescriptorsForFrame {
                count: fds.len(),
                limit: MAX_FDS_PER_FRAME,
            });
        }
        // Fast path: no waiter registration while there is room.
        if let Push::Queued = self.push(kind, msg, &mut fds)? {
            return Ok(());
        }
        // The waiting path is rare; boxing it keeps this future small, so
        // the fast path moves and initialises little.
        Box::pin(self.wait_and_push(kind, msg, fds)).await
    }

    /// [`Sender::send_frame`] without descriptors: no `Vec` goes into the
    /// future's state (copying one in and out of it costs a store-forwarding
    /// stall per message on the fast path).
    async fn send_frame_without_fds<T: PayloadSource + ?Sized>(
        &self,
        kind: FrameKind,
        msg: &T,
    ) -> Result<(), Error> {
        let mut no_fds = Vec::new();
        if let Push::Queued = self.push(kind, msg, &mut no_fds)? {
            return Ok(());
        }
        Box::pin(self.wait_and_push(kind, msg, no_fds)).await
    }

    async fn wait_and_push<T: PayloadSource + ?Sized>(
        &self,
        kind: FrameKind,
        msg: &T,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        let _waiting = Waiting::register(self.queue());
        loop {
            let mut space = pin!(self.queue().space_ready.notified());
            space.as_mut().enable();
            match self.push(kind, msg, &mut fds)? {
                Push::Queued => return Ok(()),
                Push::Full => space.await,
            }
        }
    }

    fn try_send_frame<T: PayloadSource, M>(
        &self,
        kind: FrameKind,
        msg: T,
        mut fds: Vec<OwnedFd>,
        give_back: impl FnOnce(T, Vec<OwnedFd>) -> M,
    ) -> Result<(), TrySendError<M>> {
        match self.push(kind, &msg, &mut fds) {
            Ok(Push::Queued) => Ok(()),
            Ok(Push::Full) => Err(TrySendError::Full(give_back(msg, fds))),
            Err(Error::PeerClosed { .. } | Error::Io { .. } | Error::Closed) => {
                Err(TrySendError::Closed(give_back(msg, fds)))
            }
            Err(e) => Err(TrySendError::Rejected(give_back(msg, fds), Box::new(e))),
        }
    }

    /// Sends a user message, waiting while the queue is full.
    ///
    /// `T` may be a reference (`send(&msg)`). Returns once the frame is
    /// queued; the writer task puts it on the socket. (An answer, the first
    /// send after this endpoint's receiver read something, is written at
    /// once by this call when the queue is empty; a failure of that write
    /// closes the sender and is returned here, as a later call would.)
    ///
    /// Cancel-safe (for `select!`): the frame is queued whole at the moment
    /// the future completes, or not at all if it is dropped before.
    pub async fn send<T: Serialize>(&self, msg: T) -> Result<(), Error> {
        self.send_frame_without_fds(FrameKind::User, &msg).await
    }

    /// Sends a user message with descriptors attached. The descriptors are
    /// closed on this side once they are on the socket (or on error).
    ///
    /// Cancel-safe like [`Sender::send`]; a future dropped before it
    /// completes closes the descriptors unsent.
    pub async fn send_with_fds<T: Serialize>(
        &self,
        msg: T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        self.send_frame(FrameKind::User, &msg, fds).await
    }

    /// Sends a user message encoded already (once for many peers: see
    /// [`Encoded`]), waiting for credit and room as [`Sender::send`] does.
    /// Cancel-safe like [`Sender::send`].
    pub async fn send_encoded(&self, msg: &Encoded) -> Result<(), Error> {
        self.send_frame_without_fds(FrameKind::User, msg).await
    }

    /// Queues a user message encoded already if there is credit and room;
    /// `Err(TrySendError::Full(()))` otherwise (the caller keeps `msg`).
    pub fn try_send_encoded(&self, msg: &Encoded) -> Result<(), TrySendError<()>> {
        self.try_send_frame(FrameKind::User, msg, Vec::new(), |_, _| ())
    }

    /// Queues a user message if there is room, or hands it back.
    pub fn try_send<T: Serialize>(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.try_send_frame(FrameKind::User, msg, Vec::new(), |m, _| m)
    }

    /// Queues a user message with descriptors if there is room, or hands both back.
    pub fn try_send_with_fds<T: Serialize>(
        &self,
        msg: T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), TrySendError<(T, Vec<OwnedFd>)>> {
        self.try_send_frame(FrameKind::User, msg, fds, |m, f| (m, f))
    }

    /// Sends a control message (with descriptors, possibly none), waiting
    /// while the queue is full. Cancel-safe like
    /// [`Sender::send_with_fds`].
    pub async fn send_control(&self, msg: &ControlMsg, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.send_frame(FrameKind::Control, msg, fds).await
    }

    /// Queues a control message if there is room, or hands it and its
    /// descriptors back.
    pub fn try_send_control(
        &self,
        msg: ControlMsg,
        fds: Vec<OwnedFd>,
    ) -> Result<(), TrySendError<(ControlMsg, Vec<OwnedFd>)>> {
        self.try_send_frame(FrameKind::Control, msg, fds, |m, f| (m, f))
    }

    /// Queues a control message (without descriptors) for the writer task
    /// if there is room, or hands it back; unlike
    /// [`Sender::try_send_control`], never written by this call, even as an
    /// answer. Frames queued close together then leave in one `sendmsg`
    /// and reach the peer in one read: a worker's acknowledgements and
    /// close notices, which nobody waits on, coalesce this way.
    pub fn try_queue_control(&self, msg: ControlMsg) -> Result<(), TrySendError<ControlMsg>> {
        match self.push_with(FrameKind::Control, &msg, &mut Vec::new(), false) {
            Ok(Push::Queued) => Ok(()),
            Ok(Push::Full) => Err(TrySendError::Full(msg)),
            Err(Error::PeerClosed { .. } | Error::Io { .. } | Error::Closed) => {
                Err(TrySendError::Closed(msg))
            }
            Err(e) => Err(TrySendError::Rejected(msg, Box::new(e))),
        }
    }

    /// Waits until everything queued so far has been written to the socket.
    /// Cancel-safe: dropping the future changes nothing.
    pub async fn flush(&self) -> Result<(), Error> {
        let _waiting = Waiting::register(self.queue());
        loop {
            let mut space = pin!(self.queue().space_ready.notified());
            space.as_mut().enable();
            {
                let st = self.queue().lock();
                if let Some(reason) = st.closed {
                    return Err(reason.to_error());
                }
                if st.is_empty() && !st.writing {
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Encoded bytes waiting in the queue, both lanes (not counting a
    /// batch being written).
    pub fn queued_bytes(&self) -> usize {
        let st = self.queue().lock();
        st.bytes.len() + st.control.len()
    }

    /// Sends [`ControlMsg::Disconnect`], counting the user messages queued
    /// before it: the control frame overtakes them, and the count lets the
    /// peer deliver them all before it ends its stream of messages.
    /// Cancel-safe like [`Sender::send_control`].
    pub async fn send_disconnect(&self) -> Result<(), Error> {
        // Control frames are never refused for room: this queues at once.
        let mut guard = self.queue().lock();
        if let Some(reason) = guard.closed {
            return Err(reason.to_error());
        }
        let msg = ControlMsg::Disconnect {
            after_messages: guard.credit.frames,
        };
        let was_empty = guard.is_empty();
        encode_frame(
            &mut guard.control,
            FrameKind::Control,
            &msg,
            0,
            self.queue().cap,
        )?;
        drop(guard);
        if was_empty {
            self.queue().data_ready.notify_one();
        }
        Ok(())
    }
}
