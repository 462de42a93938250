//! A blocking endpoint: the same wire, without a runtime, for simple workers
//! and tools. One value owns both directions; sends are buffered until
//! [`BlockingChannel::flush`] (or [`BlockingChannel::send`], which flushes).
//!
//! Flow control as in the async endpoint: a user message waits for credit
//! from the peer's window. Having one thread, a channel out of credit reads
//! the socket itself until the peer's window update comes, keeping the
//! frames it reads on the way for the next [`BlockingChannel::recv`]. A
//! message returned by `recv` or `recv_raw` is consumed at once: its room
//! is granted back (a small write, in batches of a quarter window).

use std::collections::VecDeque;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::{ControlMsg, Handshake};
use crate::endpoint::Credit;
use crate::endpoint::{Config, Incoming, UserFrame, parse_handshake};
use crate::error::Error;
use crate::frame::{
    DecodedFrame, Decoder, FrameKind, Header, decode_limited, decode_payload, encode_frame,
    next_send, user_frame_charge,
};
use crate::sys::{self, RecvError, Wait};

/// Both halves of a channel end, blocking. Speaks the same wire as the
/// async [`Sender`](crate::Sender)/[`Receiver`](crate::Receiver), so either
/// side may use either.
#[derive(Debug)]
pub struct BlockingChannel {
    fd: OwnedFd,
    decoder: Decoder,
    arrived: Vec<OwnedFd>,
    out: Vec<u8>,
    out_fds: Vec<(usize, OwnedFd)>,
    cap: u32,
    max_depth: u32,
    closed: bool,
    /// A write failed: the stream may end inside a frame, so nothing more
    /// is sent (the error, kept to be given again).
    send_failed: Option<(io::ErrorKind, Option<i32>)>,
    /// Frames read while waiting for credit, for the next receive.
    stash: VecDeque<Stashed>,
    /// The peer's window, and what user frames took of it and got back.
    peer_window: u64,
    charged: u64,
    granted_in: u64,
    /// This end's window; what the peer sent of it, what was granted back,
    /// and what was consumed and not yet granted.
    window: u64,
    received: u64,
    granted_out: u64,
    consumed: u64,
}

/// A frame read ahead (while waiting for credit), its bytes copied out of
/// the decoder's buffer.
#[derive(Debug)]
struct Stashed {
    header: Header,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl BlockingChannel {
    /// Puts the descriptor in blocking mode and exchanges handshakes (see
    /// [`handshake`](crate::handshake)). Returns the channel and the peer's
    /// handshake.
    pub fn handshake(
        fd: OwnedFd,
        ours: Handshake,
        config: Config,
    ) -> Result<(Self, Handshake), Error> {
        sys::set_blocking(fd.as_fd()).map_err(|source| Error::Io {
            op: "fcntl(O_NONBLOCK)",
            source,
        })?;
        let cap = config.frame_cap();
        let mut channel = BlockingChannel {
            fd,
            decoder: Decoder::new(cap),
            arrived: Vec::new(),
            out: Vec::new(),
            out_fds: Vec::new(),
            cap,
            max_depth: config.depth_limit(),
            closed: false,
            send_failed: None,
            stash: VecDeque::new(),
            peer_window: 0,
            charged: 0,
            granted_in: 0,
            window: u64::from(config.window()),
            received: 0,
            granted_out: 0,
            consumed: 0,
        };
        let ours = Handshake {
            window: config.window(),
            ..ours
        };
        channel.feed_frame(FrameKind::Handshake, &ours, Vec::new())?;
        // A failed write is not this call's error: the peer may have sent
        // its handshake (and more) and gone, which reading tells; the
        // sending direction keeps the error for the next send (as the
        // async `handshake` does).
        let _ = channel.flush();
        let frame = channel.next_frame()?;
        if frame.header.kind != FrameKind::Handshake {
            return Err(channel.fail(Error::UnexpectedFrame {
                expected: "a handshake",
                found: frame.header.kind,
            }));
        }
        let theirs =
            parse_handshake(channel.decoder.bytes(frame.payload)).map_err(|e| channel.fail(e))?;
        channel.peer_window = u64::from(theirs.window);
        Ok((channel, theirs))
    }

    /// Waits (reading the socket, keeping what it reads) until the peer's
    /// window has room for a user frame.
    fn wait_for_credit(&mut self) -> Result<(), Error> {
        while self.charged.saturating_sub(self.granted_in) >= self.peer_window {
            // Frames buffered here took credit the peer cannot grant back
            // before it has them.
            self.flush()?;
            let Some(frame) = self.read_frame_or_update()? else {
                continue;
            };
            let stashed = Stashed {
                header: frame.header,
                payload: self.decoder.bytes(frame.payload).to_vec(),
                fds: frame.fds,
            };
            self.stash.push_back(stashed);
        }
        Ok(())
    }

    /// The next frame: one read ahead first, else from the socket.
    fn next_incoming(&mut self) -> Result<Stashed, Error> {
        if let Some(frame) = self.stash.pop_front() {
            return Ok(frame);
        }
        let frame = self.next_frame()?;
        Ok(Stashed {
            header: frame.header,
            payload: self.decoder.bytes(frame.payload).to_vec(),
            fds: frame.fds,
        })
    }

    /// A user message of `charge` bytes was consumed: grant in batches.
    fn consume(&mut self, charge: u64) -> Result<(), Error> {
        self.consumed += charge;
        if self.consumed >= (self.window / 4).max(1) {
            let bytes = std::mem::take(&mut self.consumed);
            self.granted_out += bytes;
            if self.send_failed.is_none() {
                // Only the grant goes now; buffered user frames wait for
                // the caller's flush, as before.
                let mut grant = Vec::new();
                encode_frame(&mut grant, FrameKind::Window, &bytes, 0, self.cap)?;
                let fds = std::mem::take(&mut self.out_fds);
                let out = std::mem::replace(&mut self.out, grant);
                let result = self.write_all();
                self.out = out;
                self.out_fds = fds;
                result?;
            }
        }
        Ok(())
    }

    fn feed_frame<T: Serialize + ?Sized>(
        &mut self,
        kind: FrameKind,
        msg: &T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        self.check_sendable()?;
        if kind == FrameKind::User {
            self.wait_for_credit()?;
        }
        let offset = self.out.len();
        encode_frame(&mut self.out, kind, msg, fds.len(), self.cap)?;
        if kind == FrameKind::User {
            let payload_len = self.out.len() - offset - crate::frame::HEADER_LEN;
            // At most the cap: the encoder checked.
            self.charged += user_frame_charge(payload_len as u32);
        }
        self.out_fds.extend(fds.into_iter().map(|fd| (offset, fd)));
        Ok(())
    }

    /// Buffers a user message (with descriptors, possibly none) without
    /// writing; [`BlockingChannel::flush`] writes everything buffered.
    pub fn feed<T: Serialize>(&mut self, msg: T, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.feed_frame(FrameKind::User, &msg, fds)
    }

    /// Buffers a control message (with descriptors, possibly none).
    pub fn feed_control(&mut self, msg: &ControlMsg, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.feed_frame(FrameKind::Control, msg, fds)
    }

    /// Sends a user message now (buffers it, then flushes).
    pub fn send<T: Serialize>(&mut self, msg: T) -> Result<(), Error> {
        self.feed(msg, Vec::new())?;
        self.flush()
    }

    /// Sends a control message now.
    pub fn send_control(&mut self, msg: &ControlMsg, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.feed_control(msg, fds)?;
        self.flush()
    }

    /// Writes everything buffered, descriptors attached as the async sender
    /// does (each in a `sendmsg` that starts at or before its frame).
    ///
    /// A failed write closes the sending direction, as in the async
    /// [`Sender`](crate::Sender): part of a frame may be on the stream, and
    /// a frame written after it would be misread. What was buffered is
    /// dropped (its descriptors closed), and every later `feed`, `send` and
    /// `flush` returns the same error. Receiving still works.
    pub fn flush(&mut self) -> Result<(), Error> {
        let result = self.check_sendable().and_then(|()| self.write_all());
        self.out.clear();
        self.out_fds.clear();
        result
    }

    /// The error of an earlier failed write, if any.
    fn check_sendable(&self) -> Result<(), Error> {
        match self.send_failed {
            None => Ok(()),
            Some((kind, errno)) => Err(Error::io(
                "sendmsg",
                errno.map_or_else(|| kind.into(), io::Error::from_raw_os_error),
            )),
        }
    }

    fn write_all(&mut self) -> Result<(), Error> {
        let (bytes, fds) = (&self.out, &self.out_fds);
        let mut pos = 0;
        let mut next_fd = 0;
        let mut raw: Vec<RawFd> = Vec::new();
        while pos < bytes.len() {
            let (chunk, attach) = next_send(bytes.len(), pos, next_fd, fds);
            raw.clear();
            raw.extend(fds[attach.clone()].iter().map(|(_, fd)| fd.as_raw_fd()));
            match sys::send_with_fds(self.fd.as_fd(), &bytes[chunk], &raw, Wait::Block) {
                Ok(n) => {
                    pos += n;
                    next_fd = attach.end;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.send_failed = Some((e.kind(), e.raw_os_error()));
                    return Err(Error::io("sendmsg", e));
                }
            }
        }
        Ok(())
    }

    /// Blocks for the next frame; a user payload is decoded as `T`.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Incoming<T>, Error> {
        let frame = self.next_incoming()?;
        match frame.header.kind {
            FrameKind::User => {
                self.consume(user_frame_charge(frame.header.len))?;
                let msg = decode_limited(FrameKind::User, &frame.payload, self.max_depth)?;
                Ok(Incoming::User(msg, frame.fds))
            }
            _ => self.control(frame),
        }
    }

    /// Blocks for the next frame; a user payload stays encoded (and is
    /// consumed: its frame holds no credit).
    pub fn recv_raw(&mut self) -> Result<Incoming<UserFrame>, Error> {
        let frame = self.next_incoming()?;
        match frame.header.kind {
            FrameKind::User => {
                self.consume(user_frame_charge(frame.header.len))?;
                let user = UserFrame::from_payload(frame.payload, self.max_depth, Credit::none());
                Ok(Incoming::User(user, frame.fds))
            }
            _ => self.control(frame),
        }
    }

    fn control<U>(&mut self, frame: Stashed) -> Result<Incoming<U>, Error> {
        if frame.header.kind != FrameKind::Control {
            return Err(self.fail(Error::UnexpectedFrame {
                expected: "a control or user frame",
                found: frame.header.kind,
            }));
        }
        match decode_payload::<ControlMsg>(FrameKind::Control, &frame.payload) {
            Ok(msg) => Ok(Incoming::Control(msg, frame.fds)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Applies a window update, or counts a user frame against this end's
    /// window; other frames pass.
    fn account(
        &mut self,
        header: &Header,
        update: Option<Result<u64, Error>>,
    ) -> Result<(), Error> {
        match header.kind {
            FrameKind::Window => {
                let bytes = update.unwrap_or(Ok(0))?;
                self.granted_in = self.granted_in.saturating_add(bytes);
            }
            FrameKind::User => {
                let outstanding = self.received.saturating_sub(self.granted_out);
                if outstanding >= self.window {
                    return Err(Error::WindowExceeded {
                        window: self.window,
                        outstanding,
                    });
                }
                self.received += user_frame_charge(header.len);
            }
            _ => {}
        }
        Ok(())
    }

    fn fail(&mut self, e: Error) -> Error {
        self.closed = true;
        self.decoder = Decoder::new(self.cap);
        // As the async receiver does: the peer's later sends fail.
        let _ = sys::shutdown_read(self.fd.as_fd());
        e
    }

    fn next_frame(&mut self) -> Result<DecodedFrame, Error> {
        loop {
            if let Some(frame) = self.read_frame_or_update()? {
                return Ok(frame);
            }
        }
    }

    /// The next frame other than a window update; `None` right after a
    /// window update was applied (a sender waiting for credit looks again).
    fn read_frame_or_update(&mut self) -> Result<Option<DecodedFrame>, Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let header = frame.header;
                    let update = (header.kind == FrameKind::Window).then(|| {
                        let payload = self.decoder.bytes(frame.payload.clone());
                        decode_payload::<u64>(FrameKind::Window, payload)
                    });
                    if let Err(e) = self.account(&header, update) {
                        return Err(self.fail(e));
                    }
                    if header.kind != FrameKind::Window {
                        return Ok(Some(frame));
                    }
                    return Ok(None);
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
            let space = match self.decoder.read_space() {
                Ok(space) => space,
                Err(e) => return Err(self.fail(e)),
            };
            match sys::recv_with_fds(self.fd.as_fd(), space, &mut self.arrived, Wait::Block) {
                Ok(0) => {
                    let partial_frame_bytes = self.decoder.buffered();
                    return Err(self.fail(Error::PeerClosed {
                        partial_frame_bytes,
                    }));
                }
                Ok(n) => {
                    self.decoder.commit(n);
                    if let Err(e) = self.decoder.push_fds(self.arrived.drain(..)) {
                        return Err(self.fail(e));
                    }
                }
                Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(RecvError::Io(e)) => {
                    let e = match Error::io("recvmsg", e) {
                        Error::PeerClosed { .. } => Error::PeerClosed {
                            partial_frame_bytes: self.decoder.buffered(),
                        },
                        other => other,
                    };
                    return Err(self.fail(e));
                }
                Err(RecvError::Truncated) => return Err(self.fail(Error::DescriptorsTruncated)),
            }
        }
    }
}

#[cfg(test)]
mod tests;
