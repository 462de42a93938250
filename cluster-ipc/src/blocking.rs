//! A blocking endpoint: the same wire, without a runtime, for simple workers
//! and tools. One value owns both directions; sends are buffered until
//! [`BlockingChannel::flush`] (or [`BlockingChannel::send`], which flushes).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::{ControlMsg, Handshake};
use crate::endpoint::{Config, Incoming, UserFrame, parse_handshake};
use crate::error::Error;
use crate::frame::{
    DecodedFrame, Decoder, FrameKind, decode_limited, decode_payload, encode_frame, next_send,
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
        };
        channel.feed_frame(FrameKind::Handshake, &ours, Vec::new())?;
        channel.flush()?;
        let frame = channel.next_frame()?;
        if frame.header.kind != FrameKind::Handshake {
            return Err(channel.fail(Error::UnexpectedFrame {
                expected: "a handshake",
                found: frame.header.kind,
            }));
        }
        let theirs =
            parse_handshake(channel.decoder.bytes(frame.payload)).map_err(|e| channel.fail(e))?;
        Ok((channel, theirs))
    }

    fn feed_frame<T: Serialize + ?Sized>(
        &mut self,
        kind: FrameKind,
        msg: &T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        self.check_sendable()?;
        let offset = self.out.len();
        encode_frame(&mut self.out, kind, msg, fds.len(), self.cap)?;
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
        let frame = self.next_frame()?;
        match frame.header.kind {
            FrameKind::User => {
                let bytes = self.decoder.bytes(frame.payload);
                let msg = decode_limited(FrameKind::User, bytes, self.max_depth)?;
                Ok(Incoming::User(msg, frame.fds))
            }
            _ => self.control(frame),
        }
    }

    /// Blocks for the next frame; a user payload stays encoded.
    pub fn recv_raw(&mut self) -> Result<Incoming<UserFrame>, Error> {
        let frame = self.next_frame()?;
        match frame.header.kind {
            FrameKind::User => {
                let payload = self.decoder.bytes(frame.payload).to_vec();
                let user = UserFrame::from_payload(payload, self.max_depth);
                Ok(Incoming::User(user, frame.fds))
            }
            _ => self.control(frame),
        }
    }

    fn control<U>(&mut self, frame: DecodedFrame) -> Result<Incoming<U>, Error> {
        if frame.header.kind != FrameKind::Control {
            return Err(self.fail(Error::UnexpectedFrame {
                expected: "a control or user frame",
                found: frame.header.kind,
            }));
        }
        match decode_payload::<ControlMsg>(FrameKind::Control, self.decoder.bytes(frame.payload)) {
            Ok(msg) => Ok(Incoming::Control(msg, frame.fds)),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.closed = true;
        self.decoder = Decoder::new(self.cap);
        // As the async receiver does: the peer's later sends fail.
        let _ = sys::shutdown_read(self.fd.as_fd());
        e
    }

    fn next_frame(&mut self) -> Result<DecodedFrame, Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Ok(frame),
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
