//! Test helper: a worker process for `cluster-ipc`'s multi-process tests.
//!
//! It adopts its channel from `CLUSTER_IPC_FD` and behaves as the first
//! argument says:
//!
//! - `echo <cap>`: handshake, then answer every user frame (see
//!   [`PeerMsg`]) and echo heartbeats until `Disconnect` or the end.
//! - `die-mid-frame`: handshake by hand, write half a frame, exit.
//! - `over-cap <cap>`: handshake by hand, announce a frame of `cap + 1`
//!   bytes, then read until the primary closes; exit 0 on that end.
//! - `stall`: handshake, then never read; exit when stdin closes.
//! - `no-room-for-fds`: lower `RLIMIT_NOFILE` so that no descriptor can be
//!   installed, handshake (blocking), say `Echo(0)` (the primary then
//!   knows the handshake read is over), then expect the next frame to fail
//!   with `DescriptorsTruncated` (`MSG_CTRUNC`) and the channel to be closed
//!   after it; exit 0 only then.
//!
//! Not part of the library's API: the tests reach it through
//! `CARGO_BIN_EXE_cluster-ipc-peer`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use cluster_ipc::frame::{FrameKind, encode_frame};
use cluster_ipc::{BlockingChannel, Config, ControlMsg, Error, Handshake, Incoming};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The user messages of the tests (the tests declare the same enum).
#[derive(Debug, Serialize, Deserialize)]
enum PeerMsg {
    /// Echoed back as is.
    Echo(u64),
    /// With one descriptor: write `text` into it, answer `Written` with a
    /// pipe of the peer's own attached that holds `from-peer:<text>`.
    WriteTo(String),
    /// The answer to `WriteTo`.
    Written(String),
    /// Echoed back as is (large payloads).
    Blob(Vec<u8>),
}

fn main() -> Result<(), BoxError> {
    // SAFETY: this program is only ever started by the tests, through
    // `inherit_fd`, and starts no program of its own: the descriptor is
    // its channel end and nothing else owns it.
    let fd = unsafe { cluster_ipc::from_env() }?.ok_or("CLUSTER_IPC_FD is not set")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cap =
        |i: usize| -> Result<u32, BoxError> { Ok(args.get(i).ok_or("missing cap")?.parse()?) };
    match args.first().map(String::as_str) {
        Some("echo") => run_async(echo(fd, cap(1)?)),
        Some("stall") => run_async(stall(fd)),
        Some("die-mid-frame") => die_mid_frame(fd),
        Some("over-cap") => over_cap(fd, cap(1)?),
        Some("no-room-for-fds") => no_room_for_fds(fd),
        _ => Err("unknown mode".into()),
    }
}

fn run_async(fut: impl Future<Output = Result<(), BoxError>>) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(fut)
}

async fn echo(fd: OwnedFd, cap: u32) -> Result<(), BoxError> {
    let config = Config::default().max_frame_len(cap);
    let (tx, mut rx, _) =
        cluster_ipc::handshake(fd, Handshake::for_this_process(1), config).await?;
    loop {
        let incoming = match rx.recv::<PeerMsg>().await {
            Ok(incoming) => incoming,
            Err(e) if e.is_peer_closed() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match incoming {
            Incoming::User(PeerMsg::WriteTo(text), fds) => {
                let [fd] = <[OwnedFd; 1]>::try_from(fds).map_err(|_| "want one fd")?;
                std::fs::File::from(fd).write_all(text.as_bytes())?;
                let (mut ours, theirs) = UnixStream::pair()?;
                ours.write_all(format!("from-peer:{text}").as_bytes())?;
                drop(ours);
                tx.send_with_fds(PeerMsg::Written(text), vec![theirs.into()])
                    .await?;
            }
            Incoming::User(msg, fds) => tx.send_with_fds(msg, fds).await?,
            Incoming::Control(ControlMsg::Disconnect { .. }, _) => {
                tx.flush().await?;
                return Ok(());
            }
            Incoming::Control(msg, fds) => tx.send_control(&msg, fds).await?,
        }
    }
}

async fn stall(fd: OwnedFd) -> Result<(), BoxError> {
    let (_tx, _rx, _) =
        cluster_ipc::handshake(fd, Handshake::for_this_process(1), Config::default()).await?;
    // Never read the channel; wait for the test to close our stdin.
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    Ok(())
}

fn raw_handshake(fd: OwnedFd) -> Result<UnixStream, BoxError> {
    let mut stream = UnixStream::from(fd);
    let mut frame = Vec::new();
    encode_frame(
        &mut frame,
        FrameKind::Handshake,
        &Handshake::for_this_process(1),
        0,
        u32::MAX,
    )?;
    stream.write_all(&frame)?;
    Ok(stream)
}

fn die_mid_frame(fd: OwnedFd) -> Result<(), BoxError> {
    let mut stream = raw_handshake(fd)?;
    let mut frame = Vec::new();
    encode_frame(
        &mut frame,
        FrameKind::User,
        &PeerMsg::Blob(vec![7; 100]),
        0,
        u32::MAX,
    )?;
    stream.write_all(&frame[..frame.len() / 2])?;
    std::process::exit(0);
}

fn over_cap(fd: OwnedFd, cap: u32) -> Result<(), BoxError> {
    let mut stream = raw_handshake(fd)?;
    let len = (cap + 1).to_le_bytes();
    let result = (|| {
        stream.write_all(&[len[0], len[1], len[2], len[3], 2, 0, 0, 0])?;
        stream.write_all(&[0; 64])?;
        // Whatever the primary sent (its handshake), then the end of the stream.
        stream.read_to_end(&mut Vec::new()).map(drop)
    })();
    match result {
        Ok(()) => Ok(()),
        // The primary may close as soon as it has read the header: our later
        // writes then fail (EPIPE), or our read sees the reset (ECONNRESET).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn no_room_for_fds(fd: OwnedFd) -> Result<(), BoxError> {
    // With the soft limit at the lowest free number, every number below it
    // is taken and none above it may be used: the kernel cannot install a
    // received descriptor. Done before the handshake, so that no read can
    // take in the primary's descriptors early.
    let lowest_free = std::fs::File::open("/dev/null")?.as_raw_fd();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    limit.rlim_cur = lowest_free as libc::rlim_t;
    // SAFETY: `limit` is a valid rlimit; lowering the soft limit is allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let (mut channel, _) =
        BlockingChannel::handshake(fd, Handshake::for_this_process(1), Config::default())?;
    // Our handshake read is over: the primary's descriptors cannot arrive
    // within it.
    channel.send(PeerMsg::Echo(0))?;
    match channel.recv_raw() {
        Err(Error::DescriptorsTruncated) => {}
        other => return Err(format!("expected DescriptorsTruncated, got {other:?}").into()),
    }
    match channel.recv_raw() {
        Err(Error::Closed) => Ok(()),
        other => Err(format!("expected Closed, got {other:?}").into()),
    }
}
