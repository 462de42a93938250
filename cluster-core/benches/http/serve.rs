//! The one answer every server of the bench gives, ours and raw alike: read
//! the request head, write a fixed `200` whose body is the worker's tag, close.
//! Only the way a connection reaches this code differs between the variants.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The largest request head a server reads before dropping the connection.
const MAX_HEAD: usize = 2048;

/// A worker's fixed response, built once.
pub(crate) struct Answer(Vec<u8>);

impl Answer {
    /// The response with `tag` (the worker's name) as the body.
    pub(crate) fn new(tag: &str) -> Self {
        Self(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{tag}",
                tag.len()
            )
            .into_bytes(),
        )
    }

    /// Serve one connection: read until the end of the request head, answer,
    /// close. A client that gives up or sends an oversized head is dropped.
    pub(crate) fn serve(&self, stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        self.serve_stream(stream)
    }

    /// [`serve`](Self::serve) on a Unix-domain connection.
    pub(crate) fn serve_unix(&self, stream: UnixStream) -> io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        self.serve_stream(stream)
    }

    fn serve_stream<S: Read + Write>(&self, mut stream: S) -> io::Result<()> {
        let mut buf = [0u8; MAX_HEAD];
        let mut len = 0;
        loop {
            let n = stream.read(&mut buf[len..])?;
            if n == 0 {
                return Ok(());
            }
            let from = len.saturating_sub(3);
            len += n;
            if buf[from..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            if len == buf.len() {
                return Ok(());
            }
        }
        stream.write_all(&self.0)
    }
}

impl Answer {
    /// [`serve`](Self::serve) on a tokio stream: the same steps, awaited.
    pub(crate) async fn serve_async<S>(&self, stream: &mut S) -> io::Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; MAX_HEAD];
        let mut len = 0;
        let read_head = async {
            loop {
                let n = stream.read(&mut buf[len..]).await?;
                if n == 0 {
                    return Ok::<_, io::Error>(false);
                }
                let from = len.saturating_sub(3);
                len += n;
                if buf[from..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    return Ok(true);
                }
                if len == buf.len() {
                    return Ok(false);
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), read_head).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e),
        }
        stream.write_all(&self.0).await
    }
}
