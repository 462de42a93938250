//! Across a real child process: the `cluster-ipc-peer` helper adopts its end
//! from `CLUSTER_IPC_FD`, placed there by spawn-core's `inherit_fd`.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::task::{Context, Waker};

use cluster_ipc::{
    CHANNEL_FD_ENV, Config, ControlMsg, DEFAULT_CHILD_FD, Error, Handshake, Incoming, Receiver,
    Sender, TrySendError, channel_pair, handshake,
};
use serde::{Deserialize, Serialize};
use spawn_core::{Child, Command};

use crate::bounded;

/// The helper's user messages (declared the same way in the helper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum PeerMsg {
    Echo(u64),
    WriteTo(String),
    Written(String),
    Blob(Vec<u8>),
}

/// Spawns the helper with the child end of a fresh pair; returns the child
/// and the primary's end. The command (and with it the primary's copy of
/// the child end) is dropped before returning.
fn spawn_peer(args: &[&str]) -> (Child, OwnedFd) {
    let (primary_end, child_end) = channel_pair().unwrap();
    let child = peer_command(child_end)
        .args(args)
        .stdin(spawn_core::Stdio::piped())
        .spawn()
        .unwrap();
    (child, primary_end)
}

/// The helper with `fd` at the conventional channel number, named in
/// `CLUSTER_IPC_FD`, killed if a test drops it.
fn peer_command(fd: OwnedFd) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cluster-ipc-peer"));
    command
        .inherit_fd(DEFAULT_CHILD_FD, fd)
        .env(CHANNEL_FD_ENV, DEFAULT_CHILD_FD.to_string())
        .kill_on_drop(true);
    command
}

async fn open(fd: OwnedFd, cap: u32) -> (Sender, Receiver, Handshake) {
    bounded(handshake(
        fd,
        Handshake::for_this_process(1),
        Config::default().max_frame_len(cap),
    ))
    .await
    .unwrap()
}

async fn recv_user(rx: &mut Receiver) -> (PeerMsg, Vec<OwnedFd>) {
    match bounded(rx.recv::<PeerMsg>()).await.unwrap() {
        Incoming::User(msg, fds) => (msg, fds),
        other => panic!("unexpected {other:?}"),
    }
}

async fn finish(mut child: Child) {
    let close = bounded(child.wait()).await.unwrap();
    assert!(close.success(), "helper closed with {close:?}");
}

#[tokio::test]
async fn the_child_adopts_its_end_and_handshakes() {
    let (child, fd) = spawn_peer(&["echo", "1024"]);
    let pid = child.id().unwrap();
    let (tx, mut rx, peer) = open(fd, 1024).await;
    assert_eq!(peer.pid, pid);
    assert_eq!(peer.worker_id, 1);
    bounded(tx.send_control(&ControlMsg::Heartbeat { seq: 9 }, Vec::new()))
        .await
        .unwrap();
    match bounded(rx.recv_raw()).await.unwrap() {
        Incoming::Control(ControlMsg::Heartbeat { seq: 9 }, fds) => assert!(fds.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
    bounded(tx.send_disconnect()).await.unwrap();
    finish(child).await;
}

#[tokio::test]
async fn descriptors_pass_both_ways_interleaved_with_plain_frames() {
    let (child, fd) = spawn_peer(&["echo", "65536"]);
    let (tx, mut rx, _) = open(fd, 65536).await;
    for round in 0..50u64 {
        // A descriptor to the child: it writes into our pipe...
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let text = format!("round {round}");
        bounded(tx.send_with_fds(PeerMsg::WriteTo(text.clone()), vec![theirs.into()]))
            .await
            .unwrap();
        // ...plain frames around it...
        for k in 0..3 {
            bounded(tx.send(PeerMsg::Echo(round * 10 + k)))
                .await
                .unwrap();
        }
        // ...and sends one of its own back.
        let (msg, fds) = recv_user(&mut rx).await;
        assert_eq!(msg, PeerMsg::Written(text.clone()));
        let mut got = String::new();
        ours.read_to_string(&mut got).unwrap();
        assert_eq!(got, text);
        let [back] = <[OwnedFd; 1]>::try_from(fds).unwrap();
        let mut got = String::new();
        UnixStream::from(back).read_to_string(&mut got).unwrap();
        assert_eq!(got, format!("from-peer:{text}"));
        for k in 0..3 {
            let (msg, fds) = recv_user(&mut rx).await;
            assert_eq!(msg, PeerMsg::Echo(round * 10 + k));
            assert!(fds.is_empty());
        }
    }
    bounded(tx.send_disconnect()).await.unwrap();
    finish(child).await;
}

#[tokio::test]
async fn a_peer_dying_mid_frame_is_peer_closed() {
    let (child, fd) = spawn_peer(&["die-mid-frame"]);
    let (_tx, mut rx, _) = open(fd, 1024).await;
    let err = bounded(rx.recv_raw()).await.unwrap_err();
    match err {
        Error::PeerClosed {
            partial_frame_bytes,
        } => assert!(partial_frame_bytes > 0),
        other => panic!("unexpected {other:?}"),
    }
    finish(child).await;
}

#[tokio::test]
async fn a_message_just_under_the_cap_arrives_intact_both_ways() {
    const CAP: u32 = 4 * 1024 * 1024;
    let (child, fd) = spawn_peer(&["echo", &CAP.to_string()]);
    let (tx, mut rx, _) = open(fd, CAP).await;
    // Payload: variant index (1 byte) + length varint (4 bytes) + the bytes.
    let len = CAP as usize - 5;
    let blob: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let msg = PeerMsg::Blob(blob);
    assert_eq!(postcard::to_allocvec(&msg).unwrap().len(), CAP as usize);
    bounded(tx.send(&msg)).await.unwrap();
    let (back, _) = recv_user(&mut rx).await;
    assert!(back == msg, "the echoed blob differs");
    // One byte more is refused by our encoder, and the channel stays usable.
    let over = PeerMsg::Blob(vec![0; len + 1]);
    let err = bounded(tx.send(&over)).await.unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { len, cap: CAP } if len == u64::from(CAP) + 1),
        "{err:?}"
    );
    bounded(tx.send(PeerMsg::Echo(1))).await.unwrap();
    assert_eq!(recv_user(&mut rx).await.0, PeerMsg::Echo(1));
    bounded(tx.send_disconnect()).await.unwrap();
    finish(child).await;
}

#[tokio::test]
async fn a_frame_over_the_cap_is_rejected_from_its_header_and_the_channel_closes() {
    const CAP: u32 = 1024 * 1024;
    let (child, fd) = spawn_peer(&["over-cap", &CAP.to_string()]);
    let (tx, mut rx, _) = open(fd, CAP).await;
    let err = bounded(rx.recv_raw()).await.unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { len, cap: CAP } if len == u64::from(CAP) + 1),
        "{err:?}"
    );
    assert!(
        rx.buffered_bytes() == 0,
        "the receiver dropped what it had buffered"
    );
    // Closing our end lets the helper read to the end and exit cleanly.
    drop((tx, rx));
    finish(child).await;
}

#[tokio::test]
async fn descriptors_the_peer_cannot_install_are_a_truncation_error() {
    // The helper leaves itself no free descriptor number, so the kernel
    // truncates the ancillary data (MSG_CTRUNC) of our frame; it exits 0
    // only if it saw `DescriptorsTruncated` and then a closed channel.
    let (child, fd) = spawn_peer(&["no-room-for-fds"]);
    let (tx, mut rx, _) = open(fd, 1024).await;
    // The helper's handshake read is over once it says so: our descriptors
    // cannot be read together with our handshake.
    assert_eq!(recv_user(&mut rx).await.0, PeerMsg::Echo(0));
    let (_mine, theirs) = UnixStream::pair().unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    bounded(tx.send_with_fds(PeerMsg::Echo(1), vec![theirs.into(), null.into()]))
        .await
        .unwrap();
    bounded(tx.flush()).await.unwrap();
    finish(child).await;
}

#[tokio::test]
async fn a_full_queue_gives_backpressure_not_unbounded_memory() {
    const LIMIT: usize = 64 * 1024;
    let (mut child, fd) = spawn_peer(&["stall"]);
    let (tx, mut rx, _) = bounded(handshake(
        fd,
        Handshake::for_this_process(1),
        Config::default().send_queue_bytes(LIMIT),
    ))
    .await
    .unwrap();
    // Read, as an endpoint that sends must be: the peer's window updates
    // (none here) and the end of its stream arrive there.
    tokio::spawn(async move { while rx.recv_raw().await.is_ok() {} });
    let msg = PeerMsg::Blob(vec![1; 1000]);
    let frame_len = 8 + postcard::to_allocvec(&msg).unwrap().len();
    // The peer's window (it never reads: no update comes) or the socket
    // buffers and our queue fill: bounded by a count, never by time.
    let mut full = None;
    for i in 0..100_000 {
        match tx.try_send(msg.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(back)) => {
                full = Some(back);
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(tx.queued_bytes() <= LIMIT + frame_len);
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(
        full,
        Some(msg.clone()),
        "try_send never reported a full window or queue"
    );
    assert!(tx.queued_bytes() <= LIMIT + frame_len);
    // `send().await` waits rather than queueing more.
    let mut pending = std::pin::pin!(tx.send(msg.clone()));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(pending.as_mut().poll(&mut cx).is_pending());
    // The helper exits: the queue closes and hands messages back as closed.
    drop(child.take_stdin());
    finish(child).await;
    let err = bounded(pending).await.unwrap_err();
    assert!(err.is_peer_closed(), "{err:?}");
    assert!(matches!(tx.try_send(msg), Err(TrySendError::Closed(_))));
}

#[tokio::test]
async fn a_worker_refuses_an_inherited_stdio_descriptor() {
    // Descriptor 1 of the helper is a Unix stream socket, so only its number
    // is wrong: 0-2 are stdio.
    // (`spawn`, not `output`: tokio's `output` would make stdout a pipe.)
    let (stdout_end, ours) = UnixStream::pair().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cluster-ipc-peer"))
        .args(["echo", "1024"])
        .env(cluster_ipc::CHANNEL_FD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(OwnedFd::from(stdout_end))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // A helper that adopted it anyway fails at once on its handshake.
    drop(ours);
    let output = bounded(child.wait_with_output()).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("descriptor must be 3 or above"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn a_worker_refuses_an_inherited_descriptor_that_is_not_a_socket() {
    // A pipe where the channel should be.
    let (read_end, write_end) = std::io::pipe().unwrap();
    let output = peer_command(OwnedFd::from(read_end))
        .args(["echo", "1024"])
        .output();
    let output = bounded(output).await.unwrap();
    drop(write_end);
    assert!(!output.close.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a socket"), "stderr: {stderr}");
}
