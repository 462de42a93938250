//! The OS seam: socketpair, `sendmsg`/`recvmsg` with `SCM_RIGHTS`, and
//! descriptor checks. Every `unsafe` block of the crate lives here, except
//! `from_env`'s adoption of the inherited descriptor number.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::error::Error;
use crate::frame::MAX_FDS_PER_FRAME;

/// Room for one `SCM_RIGHTS` message of `MAX_FDS_PER_FRAME` descriptors,
/// 8-byte aligned as `cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuf([u8; cmsg_space(MAX_FDS_PER_FRAME)]);

const fn cmsg_space(n_fds: usize) -> usize {
    // CMSG_SPACE(n * sizeof(int)) on Linux: header plus data, each rounded to
    // the size of `long`.
    let align = mem::size_of::<libc::c_long>();
    let hdr = mem::size_of::<libc::cmsghdr>();
    let data = n_fds * mem::size_of::<RawFd>();
    hdr.div_ceil(align) * align + data.div_ceil(align) * align
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A connected `AF_UNIX`/`SOCK_STREAM` pair, both ends close-on-exec and blocking.
pub(crate) fn socketpair() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    cvt(ret).map_err(|source| Error::Io {
        op: "socketpair",
        source,
    })?;
    // SAFETY: the kernel just returned these two descriptors, owned by nobody else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&pair.0, &pair.1] {
        // Best effort: the kernel caps it at net.core.wmem_max.
        let _ = set_send_buffer(fd.as_fd(), SEND_BUFFER_BYTES);
    }
    Ok(pair)
}

/// Registers a channel end with the current tokio reactor.
///
/// Panics (inside tokio) when the runtime was built without I/O.
pub(crate) fn register(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, (OwnedFd, io::Error)> {
    // SAFETY: an `OwnedFd` is open, owned by the AsyncFd from here on, and its
    // `as_raw_fd` always returns the same number until it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts())
}

/// Shuts down the write side of a socket (the peer reads end of stream).
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

/// Shuts down the read side of a socket: the peer's later writes fail with
/// `EPIPE` instead of filling a buffer that nobody reads.
pub(crate) fn shutdown_read(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) }).map(drop)
}

/// The send buffer asked for on each end of a new pair. On a Unix stream
/// socket the sender's buffer bounds the bytes in flight; a larger one means
/// fewer wake-ups per large message.
const SEND_BUFFER_BYTES: libc::c_int = 1024 * 1024;

fn set_send_buffer(fd: BorrowedFd<'_>, bytes: libc::c_int) -> io::Result<()> {
    // SAFETY: `bytes` is a valid int option value of the given size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const bytes).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

/// Whether a `sendmsg`/`recvmsg` may block the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Block until the call can proceed (the blocking endpoint).
    Block,
    /// `MSG_DONTWAIT`: fail with `WouldBlock` instead (the async endpoint,
    /// whatever the descriptor's own mode).
    DontWait,
}

/// Sets `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    update_status_flags(fd, |flags| flags | libc::O_NONBLOCK)
}

/// Clears `O_NONBLOCK`.
pub(crate) fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    update_status_flags(fd, |flags| flags & !libc::O_NONBLOCK)
}

fn update_status_flags(
    fd: BorrowedFd<'_>,
    update: impl FnOnce(libc::c_int) -> libc::c_int,
) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid descriptor; no pointers involved.
    unsafe {
        let flags = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        let new = update(flags);
        if new != flags {
            cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new))?;
        }
    }
    Ok(())
}

/// Sets `FD_CLOEXEC` on a raw descriptor number (which need not be open:
/// the error says so).
pub(crate) fn set_cloexec_raw(fd: RawFd) -> io::Result<()> {
    update_fd_flags(fd, |flags| flags | libc::FD_CLOEXEC)
}

fn update_fd_flags(fd: RawFd, update: impl FnOnce(libc::c_int) -> libc::c_int) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD take no pointers; a closed number gives EBADF.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        let new = update(flags);
        if new != flags {
            cvt(libc::fcntl(fd, libc::F_SETFD, new))?;
        }
    }
    Ok(())
}

/// Checks that a raw descriptor number is an `AF_UNIX` stream socket.
pub(crate) fn check_unix_stream(fd: RawFd) -> Result<(), (&'static str, Option<io::Error>)> {
    // SAFETY: fstat writes into a zeroed `stat` we own.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(("descriptor is not open", Some(io::Error::last_os_error())));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(("descriptor is not a socket", None));
    }
    for (opt, want, reason) in [
        (
            libc::SO_TYPE,
            libc::SOCK_STREAM,
            "socket is not SOCK_STREAM",
        ),
        (libc::SO_DOMAIN, libc::AF_UNIX, "socket is not AF_UNIX"),
    ] {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value`/`len` are valid out-pointers sized for an int option.
        let ret = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut value).cast(), &mut len)
        };
        if ret < 0 {
            return Err(("getsockopt failed", Some(io::Error::last_os_error())));
        }
        if value != want {
            return Err((reason, None));
        }
    }
    Ok(())
}

/// The peer of the stream socket at `fd`, which is only looked at (not
/// owned): the pid its `SO_PEERCRED` names (for a socketpair, the process
/// that created it), and whether its other end is closed (`POLLHUP`, from
/// a `poll` that does not wait).
pub(crate) fn peer_of_raw(fd: RawFd) -> io::Result<(u32, bool)> {
    // SAFETY: a `ucred` is plain integers; zeroed is a valid value.
    let mut cred: libc::ucred = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred`/`len` are valid out-pointers sized for SO_PEERCRED.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    })?;
    let mut poll_fd = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`; a timeout of 0 never blocks.
    cvt(unsafe { libc::poll(&mut poll_fd, 1, 0) })?;
    // A pid is positive.
    Ok((cred.pid as u32, poll_fd.revents & libc::POLLHUP != 0))
}

/// Waits up to `timeout` for the stream socket at `fd` (looked at, not
/// owned) to see its other end closed (`POLLHUP`): whether it did.
pub(crate) fn wait_hangup(fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // No events asked for: `poll` returns for a hang-up or an error
        // only (always reported), or at the timeout.
        let mut poll_fd = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid `pollfd`, a bounded timeout.
        match cvt(unsafe { libc::poll(&mut poll_fd, 1, ms) }) {
            Ok(_) => return Ok(poll_fd.revents & libc::POLLHUP != 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !left.is_zero() => {}
            Err(e) => return Err(e),
        }
    }
}

/// One `sendmsg` of `bytes` with `fds` attached (if any). Never raises
/// SIGPIPE.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[RawFd],
    wait: Wait,
) -> io::Result<usize> {
    debug_assert!(fds.len() <= MAX_FDS_PER_FRAME);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut cmsg = CmsgBuf([0; cmsg_space(MAX_FDS_PER_FRAME)]);
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = mem::size_of_val(fds);
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
        // SAFETY: msg_control points at an aligned buffer of msg_controllen
        // bytes, big enough for one cmsghdr carrying `fds`; CMSG_FIRSTHDR is
        // therefore non-null and CMSG_DATA has room for `data_len` bytes.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(hdr),
                data_len,
            );
        }
    }
    let mut flags = libc::MSG_NOSIGNAL;
    if wait == Wait::DontWait {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `msg` points at live iovec/control buffers for the whole call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `recvmsg` into `buf`; descriptors that arrive are pushed to `fds`
/// (close-on-exec, owned at once so none can leak). Returns the byte count
/// (0 at end of stream). `MSG_CTRUNC` is an error, after closing whatever
/// did arrive.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    wait: Wait,
) -> Result<usize, RecvError> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = CmsgBuf([0; cmsg_space(MAX_FDS_PER_FRAME)]);
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of::<CmsgBuf>() as _;
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if wait == Wait::DontWait {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `msg` points at live iovec/control buffers for the whole call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(RecvError::Io(io::Error::last_os_error()));
    }
    if msg.msg_controllen > 0 {
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of
        // well-formed cmsghdrs; CMSG_FIRSTHDR/NXTHDR stay inside it.
        unsafe {
            let mut hdr = libc::CMSG_FIRSTHDR(&msg);
            while !hdr.is_null() {
                if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(hdr);
                    let len = (*hdr).cmsg_len as usize - (data as usize - hdr as usize);
                    let count = len / mem::size_of::<RawFd>();
                    for i in 0..count {
                        let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        // The kernel installed this descriptor for us alone.
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
                hdr = libc::CMSG_NXTHDR(&msg, hdr);
            }
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        fds.clear();
        return Err(RecvError::Truncated);
    }
    Ok(n as usize)
}

/// A failed `recv_with_fds`.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The OS call failed.
    Io(io::Error),
    /// `MSG_CTRUNC`: the ancillary data did not fit.
    Truncated,
}
