//! The receiving half: large buffered reads, many frames decoded per read,
//! descriptors queued beside the bytes in arrival order.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::window::{Credit, Grants};
use super::{Incoming, Shared, UserFrame, parse_handshake};
use crate::control::{ControlMsg, Handshake};
use crate::error::Error;
use crate::frame::{
    DecodedFrame, Decoder, FrameKind, decode_limited, decode_payload, user_frame_charge,
};
use crate::sys::{self, RecvError, Wait};

/// The receiving half of an endpoint. One task owns it.
///
/// After an error that came from the peer's bytes (or the end of the
/// stream), the receiver is closed: every later call returns
/// [`Error::Closed`], its buffered bytes and descriptors are dropped, and
/// the read side of the socket is shut down, so the peer's later sends fail
/// ([`Error::PeerClosed`] on its side) instead of filling a buffer that
/// nobody reads. This endpoint's [`Sender`](crate::Sender) still works.
/// A user payload that does not decode as the requested type, or nests
/// deeper than [`Config::max_depth`](crate::Config::max_depth), is not such
/// an error: the frame is consumed (its descriptors closed), and the channel
/// stays usable.
///
/// Read it for as long as this endpoint sends, too: the peer's window
/// updates arrive here (they are applied as the receiver reads, never
/// returned), and a sender out of credit waits for them; once the receiver
/// has seen the end of the stream (or failed, or was dropped), a send
/// without credit fails with [`Error::PeerClosed`] instead of waiting for
/// an update that cannot come. Dropping the receiver also shuts the read
/// side of the socket, so the peer's later sends fail
/// ([`Error::PeerClosed`]) instead of filling a buffer nobody reads.
pub struct Receiver {
    shared: Arc<Shared>,
    decoder: Decoder,
    arrived: Vec<OwnedFd>,
    closed: bool,
    /// Reads to wait (parked) before a wait spins again (see
    /// [`Receiver::spin_read`]): 0 after a spin that caught a message.
    spin_backoff: u32,
    /// The last frame returned was a user message: only then does the next
    /// read spin (see [`Receiver::read`]).
    after_user: bool,
    /// This end's window and the grants given back.
    grants: Arc<Grants>,
    /// Bytes of user frames received so far ([`user_frame_charge`]).
    received: u64,
    /// Bytes of messages consumed by [`Receiver::recv`] and not yet granted
    /// back (granted in batches, without an atomic per message).
    consumed: u64,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Nobody reads the peer's window updates any more.
        self.shared.queue.end_grants();
        if !self.closed {
            // Nobody reads this socket any more: the peer's sends fail
            // instead of filling it and waiting for ever.
            let _ = sys::shutdown_read(self.shared.fd.get_ref().as_fd());
        }
    }
}

/// How long a receive spins (non-blocking reads, yielding between them)
/// before it parks on the reactor, unless configured otherwise
/// ([`Config::receive_spin`](crate::Config::receive_spin)): about three
/// times the turnaround of an answering peer that spins too, and well under
/// the 40-70 µs a parked process takes to be woken on an idle virtual CPU.
pub const DEFAULT_RECEIVE_SPIN: Duration = Duration::from_micros(20);

/// After a spin that caught nothing, this many reads park at once before
/// one spins again: a peer that answers slower than the spin costs at most
/// one spin per this many messages.
const SPIN_RETRY: u32 = 16;

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("buffered", &self.decoder.buffered())
            .field("queued_fds", &self.decoder.queued_fds())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    pub(super) fn new(shared: Arc<Shared>, grants: Arc<Grants>) -> Receiver {
        let cap = shared.cap;
        Receiver {
            shared,
            decoder: Decoder::new(cap),
            arrived: Vec::new(),
            closed: false,
            spin_backoff: 0,
            after_user: false,
            grants,
            received: 0,
            consumed: 0,
        }
    }

    /// Counts a user frame against this end's window: a peer that sent
    /// past it broke the protocol (the channel fails).
    #[inline]
    fn admit_user(&mut self, payload_len: u32) -> Result<u64, Error> {
        let outstanding = self.received.saturating_sub(self.grants.granted());
        if outstanding >= self.grants.window() {
            return Err(self.fail(Error::WindowExceeded {
                window: self.grants.window(),
                outstanding,
            }));
        }
        let charge = user_frame_charge(payload_len);
        self.received += charge;
        Ok(charge)
    }

    /// A message of `charge` bytes was consumed here: grant in batches.
    #[inline]
    fn consumed(&mut self, charge: u64) {
        self.consumed += charge;
        if self.consumed >= self.grants.threshold() {
            self.grants.grant(std::mem::take(&mut self.consumed));
        }
    }

    /// Applies a window update from the peer.
    #[cold]
    fn window_update(&mut self, frame: &DecodedFrame) -> Result<(), Error> {
        match decode_payload::<u64>(FrameKind::Window, self.decoder.bytes(frame.payload.clone())) {
            Ok(bytes) => {
                self.shared.queue.on_grant(bytes);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Waits for the next frame, whatever its kind. A user payload stays
    /// encoded ([`UserFrame::decode`] it once its type is known).
    ///
    /// Cancel-safe (for `select!`): what was read before the future is
    /// dropped stays buffered, bytes and descriptors, for the next call.
    pub async fn recv_raw(&mut self) -> Result<Incoming<UserFrame>, Error> {
        if let Some(frame) = self.take_buffered()? {
            return self.undecoded(frame);
        }
        let frame = Box::pin(self.read_frame()).await?;
        self.undecoded(frame)
    }

    /// A frame taken off the buffer, its user payload left encoded.
    fn undecoded(&mut self, frame: DecodedFrame) -> Result<Incoming<UserFrame>, Error> {
        self.after_user = frame.header.kind == FrameKind::User;
        match frame.header.kind {
            FrameKind::User => {
                let charge = self.admit_user(frame.header.len)?;
                let payload = self.decoder.bytes(frame.payload).to_vec();
                let credit = Credit::new(Arc::clone(&self.grants), charge);
                let frame_of = UserFrame::from_payload(payload, self.shared.max_depth, credit);
                Ok(Incoming::User(frame_of, frame.fds))
            }
            _ => self
                .control(frame)
                .map(|(msg, fds)| Incoming::Control(msg, fds)),
        }
    }

    /// Waits for the next frame and decodes a user payload as `T` straight
    /// from the read buffer. Control frames come through as
    /// [`Incoming::Control`]. Cancel-safe like [`Receiver::recv_raw`].
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Incoming<T>, Error> {
        // The fast path decodes before any await, so the frame never goes
        // into the future's state (copying it in and out of there costs a
        // store-forwarding stall per message).
        if let Some(frame) = self.take_buffered()? {
            return self.decode(frame);
        }
        let frame = Box::pin(self.read_frame()).await?;
        self.decode(frame)
    }

    /// Decodes a frame taken off the buffer.
    #[inline(always)]
    fn decode<T: DeserializeOwned>(&mut self, frame: DecodedFrame) -> Result<Incoming<T>, Error> {
        self.after_user = frame.header.kind == FrameKind::User;
        match frame.header.kind {
            FrameKind::User => {
                let charge = self.admit_user(frame.header.len)?;
                // Consumed here, whether it decodes or not.
                self.consumed(charge);
                let bytes = self.decoder.bytes(frame.payload);
                let msg = decode_limited(FrameKind::User, bytes, self.shared.max_depth)?;
                Ok(Incoming::User(msg, frame.fds))
            }
            _ => self
                .control(frame)
                .map(|(msg, fds)| Incoming::Control(msg, fds)),
        }
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.decoder.buffered()
    }

    #[cold]
    #[inline(never)]
    fn control(&mut self, frame: DecodedFrame) -> Result<(ControlMsg, Vec<OwnedFd>), Error> {
        if frame.header.kind != FrameKind::Control {
            return Err(self.fail(Error::UnexpectedFrame {
                expected: "a control or user frame",
                found: frame.header.kind,
            }));
        }
        match decode_payload::<ControlMsg>(FrameKind::Control, self.decoder.bytes(frame.payload)) {
            Ok(msg) => Ok((msg, frame.fds)),
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) async fn recv_handshake(&mut self) -> Result<Handshake, Error> {
        let frame = match self.take_buffered()? {
            Some(frame) => frame,
            None => Box::pin(self.read_frame()).await?,
        };
        if frame.header.kind != FrameKind::Handshake {
            return Err(self.fail(Error::UnexpectedFrame {
                expected: "a handshake",
                found: frame.header.kind,
            }));
        }
        parse_handshake(self.decoder.bytes(frame.payload)).map_err(|e| self.fail(e))
    }

    #[cold]
    fn fail(&mut self, e: Error) -> Error {
        self.closed = true;
        // No window update can arrive any more.
        self.shared.queue.end_grants();
        self.decoder = Decoder::new(self.shared.cap);
        // The peer learns it (its sends fail) rather than blocking on a
        // socket nobody reads; a failure means the socket is gone already.
        let _ = sys::shutdown_read(self.shared.fd.get_ref().as_fd());
        e
    }

    /// Takes the next complete frame if one is buffered: the fast path, one
    /// header parse, inlined into the caller's future. Otherwise the caller
    /// awaits the boxed `read_frame` (which keeps the future small). A frame
    /// leaves the buffer only in the poll that completes the caller's future,
    /// so dropping that future loses nothing.
    #[inline(always)]
    fn take_buffered(&mut self) -> Result<Option<DecodedFrame>, Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) if frame.header.kind == FrameKind::Window => {
                    self.window_update(&frame)?;
                }
                Ok(frame) => return Ok(frame),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    async fn read_frame(&mut self) -> Result<DecodedFrame, Error> {
        loop {
            match self.read().await {
                // The end of the stream, or ECONNRESET (the peer closed with
                // our bytes unread): either way it is gone.
                Ok(0) | Err(Error::PeerClosed { .. }) => {
                    let partial_frame_bytes = self.decoder.buffered();
                    return Err(self.fail(Error::PeerClosed {
                        partial_frame_bytes,
                    }));
                }
                Ok(_) => {}
                Err(e) => return Err(self.fail(e)),
            }
            if let Some(frame) = self.take_buffered()? {
                return Ok(frame);
            }
        }
    }

    /// One read into the decoder; 0 at the end of the stream.
    ///
    /// After a user message, spins first (see `spin_read`) unless a recent
    /// spin caught nothing, then parks on the reactor. After a control
    /// message (a hand-off, an ack, a notice: traffic nobody waits on
    /// message by message) it parks at once: spinning there only takes CPU
    /// from the work that sends them (a round-robin hand-off ran 0.64× the
    /// bare one with both ends spinning, 0.88× with neither).
    ///
    /// A spin that caught a message keeps the next wait spinning; one that
    /// missed makes the next [`SPIN_RETRY`] reads park at once. So an idle channel spins once and parks, burning
    /// nothing, and a busy one spins at most its spin per message while its
    /// messages keep arriving within that time, and one spin per
    /// [`SPIN_RETRY`] messages otherwise.
    async fn read(&mut self) -> Result<usize, Error> {
        if self.after_user && self.spin_backoff == 0 && !self.shared.receive_spin.is_zero() {
            match self.spin_read().await {
                Some(result) => return result,
                None => self.spin_backoff = SPIN_RETRY,
            }
        }
        let result = self.park_read().await;
        self.spin_backoff = self.spin_backoff.saturating_sub(1);
        result
    }

    /// Tries a non-blocking read, yielding the CPU between tries, for up
    /// to the spin: a peer that answers within that time is read without
    /// the wake-up of a parked process (tens of µs on an idle CPU, more
    /// than the whole exchange). Each try also yields to the runtime's
    /// other tasks (this endpoint's writer among them), and the thread to
    /// other threads (a peer sharing this CPU runs at once). `None` when
    /// nothing came.
    async fn spin_read(&mut self) -> Option<Result<usize, Error>> {
        let start = Instant::now();
        let mut task_turn = false;
        loop {
            let space = match self.decoder.read_space() {
                Ok(space) => space,
                Err(e) => return Some(Err(e)),
            };
            let fd = self.shared.fd.get_ref().as_fd();
            match sys::recv_with_fds(fd, space, &mut self.arrived, Wait::DontWait) {
                Ok(n) => return Some(self.commit(n)),
                Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(RecvError::Truncated) => return Some(Err(Error::DescriptorsTruncated)),
                Err(RecvError::Io(e)) => return Some(Err(Error::io("recvmsg", e))),
            }
            if start.elapsed() >= self.shared.receive_spin {
                return None;
            }
            // Alternately the thread (a peer on this CPU answers at once)
            // and the task (this runtime's other tasks run, this
            // endpoint's writer among them).
            if task_turn {
                tokio::task::yield_now().await;
            } else {
                std::thread::yield_now();
            }
            task_turn = !task_turn;
        }
    }

    /// Commits `n` bytes read and the descriptors that came with them.
    fn commit(&mut self, n: usize) -> Result<usize, Error> {
        self.decoder.commit(n);
        self.decoder.push_fds(self.arrived.drain(..))?;
        if n > 0 {
            self.shared.answer_pending.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// One read, parked on the reactor until the socket is readable.
    async fn park_read(&mut self) -> Result<usize, Error> {
        loop {
            let mut guard = self
                .shared
                .fd
                .readable()
                .await
                .map_err(|e| Error::io("recvmsg", e))?;
            let space = self.decoder.read_space()?;
            let want = space.len();
            let arrived = &mut self.arrived;
            let result = guard.try_io(|fd| {
                match sys::recv_with_fds(fd.get_ref().as_fd(), space, arrived, Wait::DontWait) {
                    Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
                    other => Ok(other),
                }
            });
            let result = match result {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => Err(RecvError::Io(e)),
                Err(_would_block) => continue,
            };
            match result {
                Ok(n) => {
                    if n > 0 && n < want && self.arrived.is_empty() {
                        // A short read drained the socket: skip the read
                        // that would only say EAGAIN (as tokio's TcpStream
                        // does). Not after descriptors arrived: the kernel
                        // ends a read after a descriptor-carrying message
                        // even when more bytes wait. (With SO_PASSCRED, which
                        // this crate never sets, it would also end a read where
                        // the writing process changes: do not set it.)
                        guard.clear_ready();
                    }
                    drop(guard);
                    return self.commit(n);
                }
                Err(RecvError::Truncated) => return Err(Error::DescriptorsTruncated),
                Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(RecvError::Io(e)) => return Err(Error::io("recvmsg", e)),
            }
        }
    }
}
