//! The raw OS baselines measured beside ours: blocking socketpair
//! ping-pong, buffered postcard frames without async, bare `SCM_RIGHTS`
//! loops (one descriptor per `sendmsg`, and batched), and the tokio
//! `UnixStream` floor.

use super::*;

pub(crate) fn rtt_raw(n: u64, size: usize) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["raw-echo", &size.to_string()])?;
    let mut stream = UnixStream::from(fd);
    let mut buf = vec![7u8; size];
    let warm = if size > 4096 { 2 } else { n / 10 + 10 };
    let mut total = Duration::ZERO;
    for i in 0..n + warm {
        let t = Instant::now();
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        if i >= warm {
            total += t.elapsed();
        }
    }
    drop(stream);
    reap(child)?;
    Ok(total.as_secs_f64() / n as f64)
}

pub(crate) fn rtt_tokio_floor(n: u64, size: usize) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (child, fd) = spawn_peer(&["tokio-echo", &size.to_string()])?;
    let secs = runtime()?.block_on(async {
        let std_stream = UnixStream::from(fd);
        std_stream.set_nonblocking(true)?;
        let mut stream = tokio::net::UnixStream::from_std(std_stream)?;
        let mut buf = vec![7u8; size];
        let warm = n / 10 + 10;
        let mut total = Duration::ZERO;
        for i in 0..n + warm {
            let t = Instant::now();
            stream.write_all(&buf).await?;
            stream.read_exact(&mut buf).await?;
            if i >= warm {
                total += t.elapsed();
            }
        }
        anyhow::Ok(total.as_secs_f64() / n as f64)
    })?;
    reap(child)?;
    Ok(secs)
}

pub(crate) fn throughput_raw(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["raw-sink-small", &n.to_string()])?;
    let mut stream = UnixStream::from(fd);
    let mut msg = Small {
        seq: 0,
        text: TEXT.into(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(80 * 1024);
    let t = Instant::now();
    for i in 0..n {
        msg.seq = i;
        let start = buf.len();
        buf.extend_from_slice(&[0; 8]);
        postcard::to_io(&msg, &mut buf)?;
        let len = (buf.len() - start - 8) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buf[start + 4] = 2;
        if buf.len() >= 64 * 1024 {
            stream.write_all(&buf)?;
            buf.clear();
        }
    }
    stream.write_all(&buf)?;
    let mut ack = [0; 8];
    stream.read_exact(&mut ack)?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != n {
        bail!("raw sink counted {} of {n}", u64::from_le_bytes(ack));
    }
    drop(stream);
    reap(child)?;
    Ok(per_s)
}

pub(crate) fn fd_pass_raw(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["raw-fd-sink", &n.to_string()])?;
    let file = std::fs::File::open("/dev/null")?;
    let t = Instant::now();
    for _ in 0..n {
        let dup: OwnedFd = file.try_clone()?.into();
        raw_send_fd(fd.as_raw_fd(), dup.as_raw_fd())?;
    }
    let mut stream = UnixStream::from(fd);
    let mut ack = [0; 8];
    stream.read_exact(&mut ack)?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    drop(stream);
    reap(child)?;
    Ok(per_s)
}

/// Descriptors per `sendmsg` in the batched raw loop: the kernel's
/// `SCM_MAX_FD`, the most the channel's writer attaches to one `sendmsg`.
pub(crate) const FD_BATCH: usize = 253;

/// The batched raw loop: one `sendmsg` of `FD_BATCH` bytes carrying
/// `FD_BATCH` descriptors (fresh `dup`s), as the channel's writer batches
/// a queue of descriptor-carrying frames.
pub(crate) fn fd_pass_raw_batched(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["raw-fd-sink-batched", &n.to_string()])?;
    let file = std::fs::File::open("/dev/null")?;
    let mut dups: Vec<OwnedFd> = Vec::with_capacity(FD_BATCH);
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(FD_BATCH as u64) as usize;
        dups.clear();
        for _ in 0..k {
            dups.push(file.try_clone()?.into());
        }
        let raw: Vec<RawFd> = dups.iter().map(|d| d.as_raw_fd()).collect();
        raw_send_fds(fd.as_raw_fd(), &raw)?;
        sent += k as u64;
    }
    let mut stream = UnixStream::from(fd);
    let mut ack = [0; 8];
    stream.read_exact(&mut ack)?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != n {
        bail!(
            "raw batched sink counted {} of {n}",
            u64::from_le_bytes(ack)
        );
    }
    drop(stream);
    reap(child)?;
    Ok(per_s)
}

/// Room for one `SCM_RIGHTS` message of `FD_BATCH` descriptors.
#[repr(C, align(8))]
struct CmsgBatch([u8; 1024 + 64]);

/// One blocking `sendmsg` of one byte per descriptor, all of `fds` attached.
pub(crate) fn raw_send_fds(sock: RawFd, fds: &[RawFd]) -> anyhow::Result<()> {
    let mut bytes = [0u8; FD_BATCH];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: fds.len(),
    };
    let mut cmsg = CmsgBatch([0; 1024 + 64]);
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: a zeroed msghdr is an empty message; we point it at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as _;
    // SAFETY: the control buffer is aligned and holds CMSG_SPACE(payload)
    // bytes (at most 253 descriptors: 1012 bytes and a header).
    unsafe {
        let hdr = libc::CMSG_FIRSTHDR(&msg);
        (*hdr).cmsg_level = libc::SOL_SOCKET;
        (*hdr).cmsg_type = libc::SCM_RIGHTS;
        (*hdr).cmsg_len = libc::CMSG_LEN(payload) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(hdr).cast::<RawFd>(),
            fds.len(),
        );
    }
    // SAFETY: `msg` points at live buffers for the call.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } != fds.len() as isize {
        return Err(std::io::Error::last_os_error()).context("sendmsg");
    }
    Ok(())
}

/// One blocking `recvmsg` of up to `FD_BATCH` bytes; closes every
/// descriptor that came with them. Returns the bytes read (0 at the end).
pub(crate) fn raw_recv_fds(sock: RawFd) -> anyhow::Result<usize> {
    let mut bytes = [0u8; FD_BATCH];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: FD_BATCH,
    };
    let mut cmsg = CmsgBatch([0; 1024 + 64]);
    // SAFETY: a zeroed msghdr is an empty message; we point it at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len() as _;
    // SAFETY: `msg` points at live buffers for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("recvmsg");
    }
    // SAFETY: the kernel wrote well-formed cmsghdrs into the control buffer;
    // each SCM_RIGHTS one holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*hdr).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
                for i in 0..count {
                    drop(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    Ok(n as usize)
}

#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// One blocking `sendmsg` of one byte with one descriptor.
pub(crate) fn raw_send_fd(sock: RawFd, fd: RawFd) -> anyhow::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: a zeroed msghdr is an empty message; we point it at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: the control buffer is aligned and holds CMSG_SPACE(4) bytes.
    unsafe {
        let hdr = libc::CMSG_FIRSTHDR(&msg);
        (*hdr).cmsg_level = libc::SOL_SOCKET;
        (*hdr).cmsg_type = libc::SCM_RIGHTS;
        (*hdr).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` points at live buffers for the call.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } != 1 {
        return Err(std::io::Error::last_os_error()).context("sendmsg");
    }
    Ok(())
}

/// One blocking `recvmsg` of one byte; closes the descriptor that came with it.
pub(crate) fn raw_recv_fd(sock: RawFd) -> anyhow::Result<bool> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: a zeroed msghdr is an empty message; we point it at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = 64;
    // SAFETY: `msg` points at live buffers for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("recvmsg");
    }
    // SAFETY: the kernel wrote well-formed cmsghdrs into the control buffer.
    unsafe {
        let hdr = libc::CMSG_FIRSTHDR(&msg);
        if !hdr.is_null() && (*hdr).cmsg_type == libc::SCM_RIGHTS {
            drop(OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(hdr).cast::<RawFd>(),
            )));
        }
    }
    Ok(n == 1)
}
