//! The peer process (`--peer <mode>`): adopts its channel end and echoes,
//! drains or answers as the figure being measured needs.

use super::*;

pub(crate) fn peer(args: &[String]) -> anyhow::Result<()> {
    // SAFETY: the bench starts its peer with the channel at `inherit_fd` and the peer
    // starts no program: the descriptor is its channel end, owned by nothing
    // else.
    let fd = unsafe { cluster_ipc::from_env() }?.context("CLUSTER_IPC_FD not set")?;
    let mode = args.first().map(String::as_str).unwrap_or("");
    let count = || -> anyhow::Result<u64> { Ok(args.get(1).context("missing count")?.parse()?) };
    match mode {
        "echo-small" => runtime()?.block_on(echo::<Small>(fd)),
        "echo-blob" => runtime()?.block_on(echo::<Blob>(fd)),
        "sink-small" => {
            let n = count()?;
            runtime()?.block_on(async {
                let (tx, mut rx) = open(fd).await?;
                let mut sum = 0u64;
                for _ in 0..n {
                    match rx.recv::<Small>().await? {
                        Incoming::User(m, _) => sum = sum.wrapping_add(m.seq),
                        other => bail!("unexpected {other:?}"),
                    }
                }
                std::hint::black_box(sum);
                tx.send(n).await?;
                tx.flush().await?;
                drain(rx).await
            })
        }
        "sink-fd" => {
            let n = count()?;
            runtime()?.block_on(async {
                let (tx, mut rx) = open(fd).await?;
                for _ in 0..n {
                    match rx.recv_raw().await? {
                        Incoming::User(_, fds) if fds.len() == 1 => {}
                        other => bail!("unexpected {other:?}"),
                    }
                }
                tx.send(n).await?;
                tx.flush().await?;
                drain(rx).await
            })
        }
        "raw-echo" => {
            let size: usize = count()? as usize;
            let mut stream = UnixStream::from(fd);
            let mut buf = vec![0; size];
            loop {
                match stream.read_exact(&mut buf) {
                    Ok(()) => stream.write_all(&buf)?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "tokio-echo" => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let size: usize = count()? as usize;
            runtime()?.block_on(async {
                let std_stream = UnixStream::from(fd);
                std_stream.set_nonblocking(true)?;
                let mut stream = tokio::net::UnixStream::from_std(std_stream)?;
                let mut buf = vec![0; size];
                loop {
                    match stream.read_exact(&mut buf).await {
                        Ok(_) => stream.write_all(&buf).await?,
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(e.into()),
                    }
                }
            })
        }
        "raw-sink-small" => {
            let n = count()?;
            let mut stream = UnixStream::from(fd);
            let mut buf = vec![0u8; 256 * 1024];
            let (mut start, mut end, mut got, mut sum) = (0, 0, 0u64, 0u64);
            while got < n {
                if end - start < 8
                    || end - start
                        < 8 + u32::from_le_bytes(buf[start..start + 4].try_into()?) as usize
                {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                    let r = stream.read(&mut buf[end..])?;
                    if r == 0 {
                        bail!("primary closed early");
                    }
                    end += r;
                    continue;
                }
                let len = u32::from_le_bytes(buf[start..start + 4].try_into()?) as usize;
                let m: Small = postcard::from_bytes(&buf[start + 8..start + 8 + len])?;
                sum = sum.wrapping_add(m.seq);
                start += 8 + len;
                got += 1;
            }
            std::hint::black_box(sum);
            stream.write_all(&n.to_le_bytes())?;
            stream.read_to_end(&mut Vec::new())?;
            Ok(())
        }
        "raw-fd-sink" => {
            let n = count()?;
            for _ in 0..n {
                if !raw_recv_fd(fd.as_raw_fd())? {
                    bail!("primary closed early");
                }
            }
            let mut stream = UnixStream::from(fd);
            stream.write_all(&n.to_le_bytes())?;
            stream.read_to_end(&mut Vec::new())?;
            Ok(())
        }
        "raw-fd-sink-batched" => {
            let n = count()?;
            let mut got = 0u64;
            while got < n {
                match raw_recv_fds(fd.as_raw_fd())? {
                    0 => bail!("primary closed early"),
                    k => got += k as u64,
                }
            }
            let mut stream = UnixStream::from(fd);
            stream.write_all(&got.to_le_bytes())?;
            stream.read_to_end(&mut Vec::new())?;
            Ok(())
        }
        other => bail!("unknown peer mode {other:?}"),
    }
}

pub(crate) async fn echo<T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(
    fd: OwnedFd,
) -> anyhow::Result<()> {
    let (tx, mut rx) = open(fd).await?;
    loop {
        match rx.recv::<T>().await {
            Ok(Incoming::User(msg, _)) => tx.send(&msg).await?,
            Ok(other) => bail!("unexpected {other:?}"),
            Err(e) if e.is_peer_closed() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) async fn drain(mut rx: Receiver) -> anyhow::Result<()> {
    loop {
        match rx.recv_raw().await {
            Ok(_) => {}
            Err(e) if e.is_peer_closed() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
