//! The raw OS baselines, bare Rust with no framing library:
//!
//! - hand-off: the bench process accepts on its listener (one blocking
//!   thread) and passes each connection's descriptor, round-robin, over a
//!   socketpair with `SCM_RIGHTS` (one `sendmsg` of one byte) to one of the
//!   bare worker processes, which `recvmsg` it and serve it; no
//!   acknowledgement, no bookkeeping;
//! - shared accept: the bare worker processes inherit one listening socket
//!   and each accepts on it in a loop; the kernel picks;
//! - Unix-domain hand-off: the hand-off loop on a Unix-domain listener
//!   instead of a TCP one.
//!
//! The workers are this bench binary re-executed with `--raw-worker`; the
//! socket they need arrives as their standard input, so no descriptor number
//! travels and nothing but the listener or the socketpair end is inherited.

use std::io::IoSlice;
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, sendmsg};

use crate::serve::Answer;

/// The raw servers' worker processes; killed and reaped on drop.
pub(crate) struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_worker(kind: &str, tag: usize, stdin: OwnedFd) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["--raw-worker", kind, &tag.to_string()])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .spawn()
        .context("could not start a raw worker")
}

/// A raw server: where it listens, and what to stop.
pub(crate) struct RawServer {
    pub(crate) port: u16,
    stop: Option<Arc<AtomicBool>>,
    _children: Children,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            // Wake the accept loop so it sees the flag.
            stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        }
    }
}

/// Start the bare accept-and-pass loop with `n` worker processes.
pub(crate) fn start_handoff(n: usize) -> anyhow::Result<RawServer> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let mut children = Children(Vec::new());
    let mut channels = Vec::new();
    for tag in 0..n {
        let (ours, theirs) = UnixStream::pair()?;
        children
            .0
            .push(spawn_worker("handoff", tag, OwnedFd::from(theirs))?);
        channels.push(ours);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut next = 0;
        for conn in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let fds = [conn.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [IoSlice::new(&[0])];
            let to = channels[next % channels.len()].as_raw_fd();
            next += 1;
            // A dead worker loses its connection: the client counts a failure.
            let _ = sendmsg::<UnixAddr>(to, &iov, &cmsg, MsgFlags::empty(), None);
            // `conn` closes here: the worker holds its own copy now.
        }
    });
    Ok(RawServer {
        port,
        stop: Some(stop),
        _children: children,
    })
}

/// The bare Unix-domain hand-off: where it listens, and what to stop (the
/// socket file is removed on drop).
pub(crate) struct RawUnixServer {
    pub(crate) path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    _children: Children,
}

impl Drop for RawUnixServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Start the bare accept-and-pass loop on the Unix-domain socket `path`,
/// with `n` worker processes.
pub(crate) fn start_unix_handoff(
    n: usize,
    path: std::path::PathBuf,
) -> anyhow::Result<RawUnixServer> {
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let mut children = Children(Vec::new());
    let mut channels = Vec::new();
    for tag in 0..n {
        let (ours, theirs) = UnixStream::pair()?;
        children
            .0
            .push(spawn_worker("handoff-unix", tag, OwnedFd::from(theirs))?);
        channels.push(ours);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut next = 0;
        for conn in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let fds = [conn.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [IoSlice::new(&[0])];
            let to = channels[next % channels.len()].as_raw_fd();
            next += 1;
            let _ = sendmsg::<UnixAddr>(to, &iov, &cmsg, MsgFlags::empty(), None);
        }
    });
    Ok(RawUnixServer {
        path,
        stop,
        _children: children,
    })
}

/// Start `n` bare worker processes accepting on one shared listener.
pub(crate) fn start_shared(n: usize) -> anyhow::Result<RawServer> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let mut children = Children(Vec::new());
    for tag in 0..n {
        let copy = OwnedFd::from(listener.try_clone()?);
        children.0.push(spawn_worker("shared", tag, copy)?);
    }
    Ok(RawServer {
        port,
        stop: None,
        _children: children,
    })
}

/// The body of a raw worker process (`--raw-worker <kind> <tag>`): serve
/// until the channel or the listener goes away.
pub(crate) fn worker_main(kind: &str, tag: &str) -> anyhow::Result<()> {
    let answer = Answer::new(&format!("raw-{tag}"));
    let inherited = std::io::stdin().as_fd().try_clone_to_owned()?;
    match kind {
        "shared" => {
            let listener = TcpListener::from(inherited);
            loop {
                let (conn, _) = listener.accept()?;
                let _ = answer.serve(conn);
            }
        }
        "handoff" => {
            let channel = UnixStream::from(inherited);
            while let Some(conn) = receive_conn(&channel)? {
                let _ = answer.serve(TcpStream::from(conn));
            }
            Ok(())
        }
        "handoff-unix" => {
            let channel = UnixStream::from(inherited);
            while let Some(conn) = receive_conn(&channel)? {
                let _ = answer.serve_unix(UnixStream::from(conn));
            }
            Ok(())
        }
        other => anyhow::bail!("unknown raw worker kind {other}"),
    }
}

/// One passed connection; `None` when the primary's end closed.
fn receive_conn(channel: &UnixStream) -> anyhow::Result<Option<OwnedFd>> {
    loop {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<UnixAddr>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        if msg.bytes == 0 {
            return Ok(None);
        }
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                // SAFETY: the kernel just installed `fd` in this process for
                // us (SCM_RIGHTS, one descriptor per message); nothing else
                // owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                return Ok(Some(owned));
            }
        }
    }
}
