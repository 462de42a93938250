//! The frames on a worker's channel (the seam to the IPC layer).
//!
//! A frame is `len: u32 LE`, `kind: u8`, then `len` bytes of postcard: a
//! [`Control`] message of the cluster itself, or a user message. No announced
//! length above [`MAX_FRAME_LEN`] is ever allocated.

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// The largest frame accepted.
pub(crate) const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

const KIND_CONTROL: u8 = 0;
const KIND_USER: u8 = 1;

/// What the cluster machinery says. Dispatched in one place on each side
/// (`primary::driver::read_loop`, `worker::receive_loop`), where listening and
/// connection hand-off plug in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Control {
    /// Worker → primary: up and receiving.
    Online,
    /// Worker → primary: it listens on this address.
    Listening { addr: SocketAddr },
    /// Either way: no new work, finish and close.
    Disconnect,
    /// Worker → primary: still alive.
    Heartbeat { seq: u64 },
}

/// One received frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Control(Control),
    /// A user message, still encoded.
    User(Vec<u8>),
}

impl Incoming {
    pub(crate) fn decode_user<M: DeserializeOwned>(bytes: &[u8]) -> Result<M> {
        postcard::from_bytes(bytes).map_err(|source| Error::Decode {
            len: bytes.len(),
            source,
        })
    }
}

/// The sending half.
#[derive(Debug)]
pub(crate) struct FrameWriter<W> {
    io: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub(crate) fn new(io: W) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(256),
        }
    }

    pub(crate) async fn send_control(&mut self, msg: &Control) -> Result<()> {
        self.send(KIND_CONTROL, msg).await
    }

    pub(crate) async fn send_user<M: Serialize>(&mut self, msg: &M) -> Result<()> {
        self.send(KIND_USER, msg).await
    }

    async fn send<T: Serialize + ?Sized>(&mut self, kind: u8, msg: &T) -> Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        let buf = std::mem::take(&mut self.buf);
        let mut buf = postcard::to_extend(msg, buf).map_err(Error::Encode)?;
        let len = buf.len() - 5;
        if len > MAX_FRAME_LEN {
            self.buf = buf;
            return Err(Error::FrameTooLarge {
                len,
                cap: MAX_FRAME_LEN,
            });
        }
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        buf[..4].copy_from_slice(&len32.to_le_bytes());
        let res = self.io.write_all(&buf).await.map_err(Error::Io);
        self.buf = buf;
        res
    }

    pub(crate) async fn close(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// The receiving half.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    io: R,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        Self { io }
    }

    /// The next frame, or `None` at a clean end of stream (between frames).
    pub(crate) async fn recv(&mut self) -> Result<Option<Incoming>> {
        let mut header = [0u8; 5];
        let mut got = 0;
        while got < header.len() {
            let n = self.io.read(&mut header[got..]).await.map_err(Error::Io)?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
            got += n;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(Error::FrameTooLarge {
                len,
                cap: MAX_FRAME_LEN,
            });
        }
        let mut body = vec![0u8; len];
        self.io.read_exact(&mut body).await.map_err(Error::Io)?;
        match header[4] {
            KIND_CONTROL => postcard::from_bytes(&body)
                .map(|c| Some(Incoming::Control(c)))
                .map_err(|source| Error::Decode { len, source }),
            KIND_USER => Ok(Some(Incoming::User(body))),
            _ => Err(Error::Decode {
                len,
                source: postcard::Error::DeserializeBadEnum,
            }),
        }
    }
}
