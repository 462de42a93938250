//! The frame format and the pure (I/O-free) encoder and decoder.
//!
//! A frame is an 8-byte header followed by a postcard payload:
//!
//! | bytes | field     | meaning                                          |
//! |-------|-----------|--------------------------------------------------|
//! | 0..4  | `len`     | payload length, u32 little-endian, `<= cap`      |
//! | 4     | `kind`    | 0 handshake, 1 control, 2 user, 3 window update  |
//! | 5     | `n_fds`   | descriptors this frame claims from the fd queue  |
//! | 6..8  | reserved  | must be zero                                     |
//!
//! The [`Decoder`] owns the read buffer and the queue of received
//! descriptors. It checks a header before it grows the buffer for the
//! payload, so no announced length can make it allocate past `8 + cap` (or
//! one 256 KiB read, when that is larger), and
//! it grows the buffer as the payload's bytes arrive, so an announced length
//! costs nothing until they do. The buffer starts small (8 KiB), doubles
//! while reads fill it (up to 256 KiB for many small frames, up to the frame
//! for a large one), and goes back to 8 KiB once 4 small reads in a row
//! drained the socket after small frames: an idle channel holds little.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::OwnedFd;

use serde::Serialize;

use crate::depth::Limited;
use crate::error::Error;

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// Default cap on a frame's payload: 64 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 64 * 1024 * 1024;

/// Default limit on how deeply a received value may nest: 128 levels (as
/// `serde_json`'s). Each nested struct, enum, sequence, tuple, map, option
/// and newtype counts one level.
pub const DEFAULT_MAX_DEPTH: u32 = 128;

/// Most descriptors one frame may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_FRAME: usize = 253;

/// Received descriptors that no frame has claimed yet, beyond which the
/// channel fails. A well-behaved sender never has more than two frames'
/// worth in flight ahead of the bytes that claim them.
pub(crate) const MAX_QUEUED_FDS: usize = 4 * MAX_FDS_PER_FRAME;

/// Largest read buffer when no large frame is being received: while reads
/// fill the buffer, it doubles up to this size.
pub(crate) const READ_BUF_LEN: usize = 256 * 1024;

/// Size of the read buffer of a new channel, and of one gone quiet:
/// [`QUIET_READS`] reads in a row that drain the socket with at most half
/// of it, after small frames only, shrink the buffer back to it.
pub(crate) const IDLE_BUF_LEN: usize = 8 * 1024;

/// Small reads in a row that drain the socket before the buffer goes back
/// to [`IDLE_BUF_LEN`] (see `Decoder::quiet_reads`).
pub(crate) const QUIET_READS: u32 = 4;

/// A read buffer grown for a large frame is kept up to this size.
pub(crate) const RETAINED_BUF_LEN: usize = 4 * 1024 * 1024;

/// What a user frame costs against the receiver's window, in bytes: its
/// header and payload, plus [`MESSAGE_COST`] for the bookkeeping a queued
/// message takes beside its bytes (so a window bounds the memory of many
/// tiny messages too). Both ends compute it alike: it is part of the wire.
pub const fn user_frame_charge(payload_len: u32) -> u64 {
    HEADER_LEN as u64 + payload_len as u64 + MESSAGE_COST
}

/// The fixed part of [`user_frame_charge`]: what one queued message costs
/// beyond its bytes.
pub const MESSAGE_COST: u64 = 56;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// The first frame each way: a [`Handshake`](crate::Handshake).
    Handshake,
    /// A [`ControlMsg`](crate::ControlMsg) of the cluster itself.
    Control,
    /// A user message of any serde type.
    User,
    /// A window update: the receiver of user messages grants the sender
    /// more room (a postcard `u64` of bytes, see [`user_frame_charge`]).
    /// Handled inside the endpoint, never returned to its caller.
    Window,
}

impl FrameKind {
    /// The byte on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            FrameKind::Handshake => 0,
            FrameKind::Control => 1,
            FrameKind::User => 2,
            FrameKind::Window => 3,
        }
    }

    /// The kind for a wire byte, if it names one.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(FrameKind::Handshake),
            1 => Some(FrameKind::Control),
            2 => Some(FrameKind::User),
            3 => Some(FrameKind::Window),
            _ => None,
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameKind::Handshake => "handshake",
            FrameKind::Control => "control",
            FrameKind::User => "user",
            FrameKind::Window => "window update",
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// What the payload is.
    pub kind: FrameKind,
    /// Descriptors the frame claims from the queue.
    pub n_fds: u8,
}

impl Header {
    /// The header's 8 bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let l = self.len.to_le_bytes();
        [
            l[0],
            l[1],
            l[2],
            l[3],
            self.kind.to_byte(),
            self.n_fds,
            0,
            0,
        ]
    }

    /// Parses and validates a header against the cap. Never allocates.
    #[inline]
    pub fn parse(bytes: &[u8; HEADER_LEN], cap: u32) -> Result<Header, Error> {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = FrameKind::from_byte(bytes[4]).ok_or(Error::MalformedHeader {
            expected: "frame kind 0, 1, 2 or 3",
            found: u64::from(bytes[4]),
        })?;
        let n_fds = bytes[5];
        if usize::from(n_fds) > MAX_FDS_PER_FRAME {
            return Err(Error::MalformedHeader {
                expected: "at most 253 descriptors",
                found: u64::from(n_fds),
            });
        }
        let reserved = u16::from_le_bytes([bytes[6], bytes[7]]);
        if reserved != 0 {
            return Err(Error::MalformedHeader {
                expected: "zero reserved bytes",
                found: u64::from(reserved),
            });
        }
        if len > cap {
            return Err(Error::FrameTooLarge {
                len: u64::from(len),
                cap,
            });
        }
        if kind == FrameKind::Handshake && n_fds != 0 {
            return Err(Error::MalformedHeader {
                expected: "no descriptors on a handshake",
                found: u64::from(n_fds),
            });
        }
        if kind == FrameKind::Window && n_fds != 0 {
            return Err(Error::MalformedHeader {
                expected: "no descriptors on a window update",
                found: u64::from(n_fds),
            });
        }
        Ok(Header { len, kind, n_fds })
    }
}

/// Appends one frame (header and postcard payload of `msg`) to `buf`.
///
/// On error, and when `msg`'s `Serialize` panics, `buf` is left as it was
/// (the frames queued before it stay intact).
pub fn encode_frame<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    kind: FrameKind,
    msg: &T,
    n_fds: usize,
    cap: u32,
) -> Result<(), Error> {
    if n_fds > MAX_FDS_PER_FRAME {
        return Err(Error::TooManyDescriptorsForFrame {
            count: n_fds,
            limit: MAX_FDS_PER_FRAME,
        });
    }
    // Until disarmed, the frame is cut off again on every way out: the
    // errors below, and a panicking `Serialize`.
    let mut frame = Rollback {
        start: buf.len(),
        buf,
        armed: true,
    };
    let start = frame.start;
    frame.buf.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(source) = postcard::serialize_with_flavor(msg, AppendFlavor(frame.buf)) {
        return Err(Error::Encode { kind, source });
    }
    let header = header_for(kind, frame.buf.len() - start - HEADER_LEN, n_fds, cap)?;
    frame.buf[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
    frame.armed = false;
    Ok(())
}

/// The header of a frame of `len` payload bytes, checked against the cap
/// (`n_fds` already checked against [`MAX_FDS_PER_FRAME`]).
fn header_for(kind: FrameKind, len: usize, n_fds: usize, cap: u32) -> Result<Header, Error> {
    if len > cap as usize {
        return Err(Error::FrameTooLarge {
            len: len as u64,
            cap,
        });
    }
    Ok(Header {
        // `len <= cap <= u32::MAX`, checked above; `n_fds <= 253`.
        len: len as u32,
        kind,
        n_fds: n_fds as u8,
    })
}

/// A user payload encoded once, to be sent as is to many peers
/// ([`Sender::send_encoded`](crate::Sender::send_encoded)): a broadcast
/// encodes its message once, not once per worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    payload: Vec<u8>,
}

impl Encoded {
    /// Encodes `msg` (postcard, as a user frame's payload).
    pub fn new<T: Serialize + ?Sized>(msg: &T) -> Result<Self, Error> {
        let payload = postcard::to_stdvec(msg).map_err(|source| Error::Encode {
            kind: FrameKind::User,
            source,
        })?;
        Ok(Encoded { payload })
    }

    /// The encoded payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.payload
    }
}

/// What a frame's payload is made from: a value to encode, or bytes
/// encoded already.
pub(crate) trait PayloadSource {
    /// Appends one frame of this payload to `buf` (see [`encode_frame`]).
    fn append_frame(
        &self,
        buf: &mut Vec<u8>,
        kind: FrameKind,
        n_fds: usize,
        cap: u32,
    ) -> Result<(), Error>;
}

impl<T: Serialize + ?Sized> PayloadSource for T {
    #[inline(always)]
    fn append_frame(
        &self,
        buf: &mut Vec<u8>,
        kind: FrameKind,
        n_fds: usize,
        cap: u32,
    ) -> Result<(), Error> {
        encode_frame(buf, kind, self, n_fds, cap)
    }
}

impl PayloadSource for &Encoded {
    fn append_frame(
        &self,
        buf: &mut Vec<u8>,
        kind: FrameKind,
        n_fds: usize,
        cap: u32,
    ) -> Result<(), Error> {
        (**self).append_frame(buf, kind, n_fds, cap)
    }
}

impl PayloadSource for Encoded {
    fn append_frame(
        &self,
        buf: &mut Vec<u8>,
        kind: FrameKind,
        n_fds: usize,
        cap: u32,
    ) -> Result<(), Error> {
        if n_fds > MAX_FDS_PER_FRAME {
            return Err(Error::TooManyDescriptorsForFrame {
                count: n_fds,
                limit: MAX_FDS_PER_FRAME,
            });
        }
        let header = header_for(kind, self.payload.len(), n_fds, cap)?;
        buf.extend_from_slice(&header.to_bytes());
        buf.extend_from_slice(&self.payload);
        Ok(())
    }
}

/// Truncates `buf` back to `start` when dropped armed, so that half a frame
/// never stays in a queue that other frames are appended to (the peer would
/// read it as a malformed header): not after an error, and not after a
/// `Serialize` impl that panicked midway.
struct Rollback<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.buf.truncate(self.start);
        }
    }
}

/// The next `sendmsg` of a batch of encoded frames: the bytes to write and
/// the descriptors to attach, as ranges of the batch and of `fds` (each
/// descriptor tagged with the offset of the frame that claims it), given
/// that the bytes before `pos` and the descriptors before `next_fd` are sent.
///
/// Every pending descriptor that fits the kernel's per-message limit is
/// attached, and the bytes stop before the first frame whose descriptors do
/// not fit; so each descriptor travels in a `sendmsg` that starts at or
/// before its frame, and the kernel delivers it with that call's first byte.
/// A short write keeps this true: the descriptors go with its first byte,
/// and the rest of the bytes start no later than the next unsent frame.
pub(crate) fn next_send<T>(
    len: usize,
    pos: usize,
    next_fd: usize,
    fds: &[(usize, T)],
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let attach_end = (next_fd + MAX_FDS_PER_FRAME).min(fds.len());
    let end = match fds.get(attach_end) {
        Some(&(offset, _)) if offset > pos => offset,
        _ => len,
    };
    (pos..end, next_fd..attach_end)
}

/// Slices up to this length are appended byte by byte (see `AppendFlavor`).
const SHORT_EXTEND: usize = 16;

/// A postcard output that appends to a borrowed `Vec` (so a failed encode
/// can be truncated away without losing the frames queued before it).
struct AppendFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendFlavor<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= SHORT_EXTEND {
            // Varints and short strings: a byte loop is cheaper than the
            // call to `memcpy` that `extend_from_slice` makes.
            self.0.reserve(data.len());
            for &byte in data {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// One complete frame taken off the decoder: its header, where its payload
/// lies in the decoder's buffer (valid until the next `read_space`), and the
/// descriptors it claimed.
#[derive(Debug)]
pub(crate) struct DecodedFrame {
    pub(crate) header: Header,
    pub(crate) payload: std::ops::Range<usize>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// A whole frame as [`Decoder::drain_frames`] returns it: the header, the
/// payload bytes, and the descriptors the frame claimed.
pub type FrameParts = (Header, Vec<u8>, Vec<OwnedFd>);

/// The receiving state of a channel, without I/O: a read buffer, and the
/// descriptors that arrived beside the byte stream, in arrival order.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    cap: u32,
    /// The length of the last slice [`Decoder::read_space`] gave.
    last_space: usize,
    /// The last read filled the space it was given: the socket may hold
    /// more, so the next read gets twice the room.
    grow_next: bool,
    /// Reads in a row that drained the socket with at most half of
    /// [`IDLE_BUF_LEN`], no frame larger than that taken since the first:
    /// at [`QUIET_READS`] the channel is quiet, and its buffer goes back to
    /// [`IDLE_BUF_LEN`]. One such read is no sign (a reader faster than a
    /// flood of small messages drains the socket a little at a time), and
    /// a large frame keeps its buffer for the next (a stream of 1 MiB
    /// messages does not allocate, zero and fault in 1 MiB per message).
    quiet_reads: u32,
}

impl Decoder {
    /// A decoder that rejects payloads longer than `cap`.
    pub fn new(cap: u32) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            cap,
            last_space: 0,
            grow_next: false,
            quiet_reads: 0,
        }
    }

    /// Bytes received and not yet consumed as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes currently allocated for the read buffer.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Descriptors received and not yet claimed by a frame.
    pub fn queued_fds(&self) -> usize {
        self.fds.len()
    }

    /// Adds descriptors that arrived beside the stream.
    pub fn push_fds(&mut self, fds: impl IntoIterator<Item = OwnedFd>) -> Result<(), Error> {
        self.fds.extend(fds);
        if self.fds.len() > MAX_QUEUED_FDS {
            let queued = self.fds.len();
            self.fds.clear();
            return Err(Error::TooManyDescriptors {
                queued,
                limit: MAX_QUEUED_FDS,
            });
        }
        Ok(())
    }

    /// Copies as many received bytes in as fit without passing the memory
    /// bound, and returns how many (tests and fuzzing; the channel reads
    /// straight into [`Decoder::read_space`]). Returns 0 only when complete
    /// frames fill the buffer: take them first.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<usize, Error> {
        let space = self.read_space()?;
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        Ok(n)
    }

    /// The slice to read into next. Compacts, and sizes the buffer by what
    /// arrives: 8 KiB at first; doubling while reads fill it, up to 256 KiB
    /// (many small frames in one read); for a frame whose header has
    /// arrived, doubling when full, never past the whole frame (the header
    /// is checked first, so never past `HEADER_LEN + cap`); and back to
    /// 8 KiB when 4 reads in a row of at most 4 KiB drained the socket
    /// after small frames only. So the buffer holds at most twice the bytes received
    /// (or 8 KiB, when fewer): a header announcing a large frame costs
    /// nothing until the frame's bytes come, and an idle channel holds
    /// 8 KiB.
    pub fn read_space(&mut self) -> Result<&mut [u8], Error> {
        let mut frame = 0;
        if self.buffered() >= HEADER_LEN {
            let header = self.peek_header()?;
            frame = HEADER_LEN + header.len as usize;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > RETAINED_BUF_LEN {
                // A very large frame is gone: give its memory back. Smaller
                // large buffers are kept while large frames come (see
                // `large_taken`).
                self.buf = Vec::new();
            } else if self.buf.len() > IDLE_BUF_LEN && self.quiet_reads >= QUIET_READS {
                // Small reads drained the socket, and only small frames
                // came: quiet, so give the room back.
                self.buf.truncate(IDLE_BUF_LEN);
                self.buf.shrink_to_fit();
            }
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let len = self.buf.len();
        let want = if len == 0 {
            IDLE_BUF_LEN
        } else if self.end == len || self.grow_next {
            // Full, or the last read filled its room: double, up to the
            // frame or a plain read's largest size.
            (2 * len).min(READ_BUF_LEN.max(frame))
        } else {
            len
        };
        self.grow_next = false;
        if want > len {
            self.buf.reserve_exact(want - len);
            self.buf.resize(want, 0);
        }
        self.last_space = self.buf.len() - self.end;
        Ok(&mut self.buf[self.end..])
    }

    /// Marks `n` bytes of the last [`Decoder::read_space`] as received.
    pub fn commit(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.buf.len());
        self.grow_next = n > 0 && n == self.last_space;
        if n <= IDLE_BUF_LEN / 2 && !self.grow_next {
            self.quiet_reads = self.quiet_reads.saturating_add(1);
        } else {
            self.quiet_reads = 0;
        }
    }

    #[inline]
    fn peek_header(&self) -> Result<Header, Error> {
        let mut bytes = [0; HEADER_LEN];
        bytes.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        Header::parse(&bytes, self.cap)
    }

    /// Takes the next complete frame, if one has arrived. Always inlined:
    /// returned through memory, its result stalls the receive fast path.
    #[inline(always)]
    pub(crate) fn next_frame(&mut self) -> Result<Option<DecodedFrame>, Error> {
        if self.buffered() < HEADER_LEN {
            return Ok(None);
        }
        let header = self.peek_header()?;
        let total = HEADER_LEN + header.len as usize;
        if self.buffered() < total {
            return Ok(None);
        }
        let n_fds = usize::from(header.n_fds);
        if self.fds.len() < n_fds {
            return Err(Error::MissingDescriptors {
                announced: header.n_fds,
                queued: self.fds.len(),
            });
        }
        let fds = if n_fds == 0 {
            Vec::new()
        } else {
            self.fds.drain(..n_fds).collect()
        };
        let payload = self.start + HEADER_LEN..self.start + total;
        self.start += total;
        if total > IDLE_BUF_LEN {
            self.quiet_reads = 0;
        }
        Ok(Some(DecodedFrame {
            header,
            payload,
            fds,
        }))
    }

    /// The bytes of a payload range returned by `next_frame`.
    #[inline]
    pub(crate) fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Decodes everything buffered into whole frames, for tests and fuzzing:
    /// each frame's header and payload, and the descriptors it claimed.
    pub fn drain_frames(&mut self) -> Result<Vec<FrameParts>, Error> {
        let mut out = Vec::new();
        while let Some(frame) = self.next_frame()? {
            let payload = self.bytes(frame.payload).to_vec();
            out.push((frame.header, payload, frame.fds));
        }
        Ok(out)
    }
}

/// Decodes a whole payload as `T`, rejecting trailing bytes, at the default
/// nesting limit ([`DEFAULT_MAX_DEPTH`]).
#[inline]
pub(crate) fn decode_payload<'de, T: serde::Deserialize<'de>>(
    kind: FrameKind,
    bytes: &'de [u8],
) -> Result<T, Error> {
    decode_limited(kind, bytes, DEFAULT_MAX_DEPTH)
}

/// Decodes a whole payload as `T`, rejecting trailing bytes and values
/// nested deeper than `max_depth` levels (which would otherwise recurse
/// until the stack overflows).
#[inline]
pub(crate) fn decode_limited<'de, T: serde::Deserialize<'de>>(
    kind: FrameKind,
    bytes: &'de [u8],
    max_depth: u32,
) -> Result<T, Error> {
    let tripped = Cell::new(false);
    let failed = |source| {
        if tripped.get() {
            Error::NestingTooDeep {
                kind,
                expected: std::any::type_name::<T>(),
                limit: max_depth,
            }
        } else {
            Error::MalformedPayload {
                kind,
                expected: std::any::type_name::<T>(),
                source,
            }
        }
    };
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(Limited::new(&mut de, max_depth, &tripped)).map_err(failed)?;
    let rest = de.finalize().map_err(failed)?;
    if !rest.is_empty() {
        return Err(failed(postcard::Error::DeserializeBadEncoding));
    }
    Ok(value)
}

#[cfg(test)]
pub(crate) mod tests;
