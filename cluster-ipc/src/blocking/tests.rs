//! The blocking endpoint against the async one, across two threads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::*;
use crate::{DEFAULT_MAX_FRAME_LEN, channel_pair, handshake};

#[test]
fn a_blocking_worker_talks_to_an_async_primary() {
    let (primary_end, worker_end) = channel_pair().unwrap();
    let worker = std::thread::spawn(move || {
        let (mut ch, peer) =
            BlockingChannel::handshake(worker_end, Handshake::new(4, 40), Config::default())
                .unwrap();
        assert_eq!(peer.worker_id, 4);
        ch.send_control(&ControlMsg::Online, Vec::new()).unwrap();
        loop {
            match ch.recv::<String>().unwrap() {
                Incoming::User(text, fds) => {
                    let [fd] = <[OwnedFd; 1]>::try_from(fds).unwrap();
                    UnixStream::from(fd).write_all(text.as_bytes()).unwrap();
                    for i in 0..100u32 {
                        ch.feed(i, Vec::new()).unwrap();
                    }
                    ch.flush().unwrap();
                }
                Incoming::Control(ControlMsg::Disconnect { .. }, _) => return,
                Incoming::Control(other, _) => panic!("unexpected {other:?}"),
            }
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let primary = async {
        let bounded = |f| tokio::time::timeout(Duration::from_secs(20), f);
        let (tx, mut rx, peer) = bounded(handshake(
            primary_end,
            Handshake::new(4, 1),
            Config::default(),
        ))
        .await
        .unwrap()
        .unwrap();
        assert_eq!(peer.pid, 40);
        assert!(matches!(
            rx.recv_raw().await.unwrap(),
            Incoming::Control(ControlMsg::Online, _)
        ));
        let (mut mine, theirs) = UnixStream::pair().unwrap();
        tx.send_with_fds("hello", vec![theirs.into()])
            .await
            .unwrap();
        for i in 0..100u32 {
            match tokio::time::timeout(Duration::from_secs(20), rx.recv::<u32>())
                .await
                .unwrap()
                .unwrap()
            {
                Incoming::User(got, _) => assert_eq!(got, i),
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut text = String::new();
        mine.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        tx.send_disconnect().await.unwrap();
        tx.flush().await.unwrap();
    };
    // The whole conversation is bounded, every await of it included.
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), primary).await })
        .expect("the conversation did not finish in time");
    worker.join().unwrap();
}

#[test]
fn a_blocking_end_sees_the_peer_close() {
    let (a, b) = channel_pair().unwrap();
    let peer = std::thread::spawn(move || {
        let (ch, _) =
            BlockingChannel::handshake(b, Handshake::new(1, 2), Config::default()).unwrap();
        drop(ch);
    });
    let (mut ch, _) =
        BlockingChannel::handshake(a, Handshake::new(1, 1), Config::default()).unwrap();
    peer.join().unwrap();
    let err = ch.recv_raw().unwrap_err();
    assert!(
        matches!(
            err,
            Error::PeerClosed {
                partial_frame_bytes: 0
            }
        ),
        "{err:?}"
    );
    assert!(matches!(ch.recv_raw().unwrap_err(), Error::Closed));
}

#[test]
fn a_write_that_failed_midway_fails_every_later_send() {
    let (ours, theirs) = channel_pair().unwrap();
    let mut peer = UnixStream::from(theirs);
    // The peer's handshake is waiting before ours is sent, so one thread
    // does both sides.
    let mut hello = Vec::new();
    encode_frame(
        &mut hello,
        FrameKind::Handshake,
        &Handshake::new(1, 2),
        0,
        DEFAULT_MAX_FRAME_LEN,
    )
    .unwrap();
    peer.write_all(&hello).unwrap();
    // A send timeout makes a blocking `sendmsg` on a full socket fail
    // (EAGAIN) instead of waiting; the socket itself stays usable.
    let timeout_handle = UnixStream::from(ours.try_clone().unwrap());
    timeout_handle
        .set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut ch, _) =
        BlockingChannel::handshake(ours, Handshake::new(1, 1), Config::default()).unwrap();
    // Far more than the socket buffers hold while the peer reads nothing:
    // the first `sendmsg` writes part of the frame, the next one times out.
    let err = ch.send(vec![7u8; 16 << 20]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    // The peer drains what arrived (the handshake and part of the frame),
    // so the socket has room again.
    peer.set_nonblocking(true).unwrap();
    let mut sink = vec![0; 1 << 20];
    let mut received = 0;
    loop {
        match peer.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(received > hello.len(), "no part of the frame was written");
    // A later frame would follow the partial one: it is refused instead.
    for _ in 0..2 {
        let err = ch.send(1u32).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }
    assert!(ch.feed(2u32, Vec::new()).is_err());
    assert!(ch.flush().is_err());
    match peer.read(&mut sink) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the peer got more bytes: {other:?}"),
    }
}
