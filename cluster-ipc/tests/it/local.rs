//! Both ends in one process: handshake rules, version mismatch, closing,
//! descriptor passing and a long stream of frames.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use cluster_ipc::frame::{FrameKind, encode_frame};
use cluster_ipc::{
    Config, ControlMsg, Error, Handshake, Incoming, PROTOCOL_VERSION, channel_pair, handshake,
};

use crate::{bounded, raw_handshake};

/// Opens both ends of a fresh pair in this process.
async fn open_pair() -> (
    (cluster_ipc::Sender, cluster_ipc::Receiver),
    (cluster_ipc::Sender, cluster_ipc::Receiver),
) {
    let (a, b) = channel_pair().unwrap();
    let other = tokio::spawn(handshake(b, Handshake::new(1, 2), Config::default()));
    let (tx_a, rx_a, _) = bounded(handshake(a, Handshake::new(1, 1), Config::default()))
        .await
        .unwrap();
    let (tx_b, rx_b, _) = bounded(other).await.unwrap().unwrap();
    ((tx_a, rx_a), (tx_b, rx_b))
}

#[tokio::test]
async fn version_mismatch_is_a_typed_error() {
    let (ours, theirs) = channel_pair().unwrap();
    let mut theirs = UnixStream::from(theirs);
    let mut frame = Vec::new();
    let future = Handshake {
        version: PROTOCOL_VERSION + 1,
        worker_id: 1,
        pid: 1,
        token: 0,
        window: 4096,
    };
    encode_frame(&mut frame, FrameKind::Handshake, &future, 0, 1024).unwrap();
    theirs.write_all(&frame).unwrap();
    let err = bounded(handshake(ours, Handshake::new(1, 1), Config::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::VersionMismatch { ours, theirs } if ours == PROTOCOL_VERSION && theirs == PROTOCOL_VERSION + 1),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_first_frame_other_than_the_handshake_is_refused() {
    let (ours, theirs) = channel_pair().unwrap();
    let mut theirs = UnixStream::from(theirs);
    let mut frame = Vec::new();
    encode_frame(&mut frame, FrameKind::Control, &ControlMsg::Online, 0, 1024).unwrap();
    theirs.write_all(&frame).unwrap();
    let err = bounded(handshake(ours, Handshake::new(1, 1), Config::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnexpectedFrame {
                found: FrameKind::Control,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_the_receiver() {
    let (ours, theirs) = channel_pair().unwrap();
    let mut theirs = UnixStream::from(theirs);
    let mut frame = Vec::new();
    encode_frame(
        &mut frame,
        FrameKind::Handshake,
        &Handshake::new(2, 2),
        0,
        1024,
    )
    .unwrap();
    frame.extend_from_slice(&[5, 0, 0, 0, 7, 0, 0, 0, 1, 2, 3, 4, 5]);
    theirs.write_all(&frame).unwrap();
    let (_tx, mut rx, peer) = bounded(handshake(ours, Handshake::new(2, 1), Config::default()))
        .await
        .unwrap();
    assert_eq!(peer.worker_id, 2);
    let err = bounded(rx.recv_raw()).await.unwrap_err();
    assert!(
        matches!(err, Error::MalformedHeader { found: 7, .. }),
        "{err:?}"
    );
    let err = bounded(rx.recv_raw()).await.unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    // The peer learns it: its writes fail rather than fill our buffer.
    let err = theirs.write_all(&[0; 64]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err:?}");
}

#[tokio::test]
async fn dropping_every_sender_ends_the_peers_stream() {
    let ((tx, _rx), (_tx_b, mut rx_b)) = open_pair().await;
    let tx2 = tx.clone();
    tx.send(&1u32).await.unwrap();
    drop(tx);
    tx2.send(&2u32).await.unwrap();
    drop(tx2);
    for want in [1u32, 2] {
        match bounded(rx_b.recv::<u32>()).await.unwrap() {
            Incoming::User(got, _) => assert_eq!(got, want),
            other => panic!("unexpected {other:?}"),
        }
    }
    let err = bounded(rx_b.recv::<u32>()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PeerClosed {
                partial_frame_bytes: 0
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn descriptors_arrive_with_their_frames_among_many_plain_ones() {
    let ((tx, _rx), (_tx_b, mut rx_b)) = open_pair().await;
    let sender = tokio::spawn(async move {
        for i in 0u32..2000 {
            if i % 7 == 0 {
                let (mut mine, theirs) = UnixStream::pair().unwrap();
                mine.write_all(&i.to_le_bytes()).unwrap();
                let n_extra = (i % 3) as usize;
                let mut fds = vec![theirs.into()];
                fds.extend((0..n_extra).map(|_| std::fs::File::open("/dev/null").unwrap().into()));
                tx.send_with_fds(&i, fds).await.unwrap();
            } else {
                tx.send(&i).await.unwrap();
            }
        }
    });
    for i in 0u32..2000 {
        match bounded(rx_b.recv::<u32>()).await.unwrap() {
            Incoming::User(got, fds) => {
                assert_eq!(got, i);
                if i % 7 == 0 {
                    assert_eq!(fds.len(), 1 + (i % 3) as usize);
                    let mut stream = UnixStream::from(fds.into_iter().next().unwrap());
                    let mut bytes = [0; 4];
                    stream.read_exact(&mut bytes).unwrap();
                    assert_eq!(u32::from_le_bytes(bytes), i);
                } else {
                    assert!(fds.is_empty());
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    bounded(sender).await.unwrap();
}

#[tokio::test]
async fn opening_outside_a_runtime_is_an_error() {
    let (a, _b) = channel_pair().unwrap();
    let result = std::thread::spawn(move || {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(handshake(a, Handshake::new(1, 1), Config::default()));
        fut.as_mut().poll(&mut cx)
    })
    .join()
    .unwrap();
    assert!(
        matches!(result, std::task::Poll::Ready(Err(Error::NoRuntime { .. }))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_burst_of_descriptor_frames_arrives_without_later_traffic() {
    // The kernel ends a read after each descriptor-carrying message; the
    // receiver must read on without waiting for new bytes to wake it.
    let ((tx, _rx), (_tx_b, mut rx_b)) = open_pair().await;
    for i in 0u32..600 {
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        bounded(tx.send_with_fds(i, vec![fd])).await.unwrap();
    }
    bounded(tx.flush()).await.unwrap();
    for i in 0u32..600 {
        match bounded(rx_b.recv::<u32>()).await.unwrap() {
            Incoming::User(got, fds) => {
                assert_eq!(got, i);
                assert_eq!(fds.len(), 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn the_halves_can_move_between_tasks_and_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<cluster_ipc::Sender>();
    send_sync::<cluster_ipc::Receiver>();
    send::<cluster_ipc::BlockingChannel>();
    send::<Incoming<cluster_ipc::UserFrame>>();
}

/// A socket whose peer end is handed over in a frame, and whose reads
/// reach the end of the stream once every copy of that end is closed.
fn watched_end() -> (tokio::net::UnixStream, std::os::fd::OwnedFd) {
    let (mine, theirs) = UnixStream::pair().unwrap();
    mine.set_nonblocking(true).unwrap();
    (
        tokio::net::UnixStream::from_std(mine).unwrap(),
        theirs.into(),
    )
}

/// Waits until every copy of the peer of `mine` is closed.
async fn closed_everywhere(mine: &mut tokio::net::UnixStream) {
    use tokio::io::AsyncReadExt;
    let mut byte = [0; 1];
    assert_eq!(bounded(mine.read(&mut byte)).await.unwrap(), 0);
}

#[tokio::test]
async fn a_user_frame_that_does_not_decode_closes_its_descriptors() {
    let ((tx, _rx), (_tx_b, mut rx_b)) = open_pair().await;
    let (mut mine, theirs) = watched_end();
    bounded(tx.send_with_fds("not a number", vec![theirs]))
        .await
        .unwrap();
    bounded(tx.send(7u32)).await.unwrap();
    let err = bounded(rx_b.recv::<u32>()).await.unwrap_err();
    assert!(matches!(err, Error::MalformedPayload { .. }), "{err:?}");
    closed_everywhere(&mut mine).await;
    // The channel stays usable.
    match bounded(rx_b.recv::<u32>()).await.unwrap() {
        Incoming::User(7, fds) => assert!(fds.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn dropping_an_endpoint_closes_the_descriptors_of_frames_never_returned() {
    let ((tx, _rx), (tx_b, mut rx_b)) = open_pair().await;
    let (mut first, theirs_first) = watched_end();
    let (mut second, theirs_second) = watched_end();
    bounded(tx.send_with_fds(1u32, vec![theirs_first]))
        .await
        .unwrap();
    bounded(tx.send_with_fds(2u32, vec![theirs_second]))
        .await
        .unwrap();
    bounded(tx.flush()).await.unwrap();
    let Incoming::User(1, fds) = bounded(rx_b.recv::<u32>()).await.unwrap() else {
        panic!("the first frame comes first");
    };
    drop(fds);
    closed_everywhere(&mut first).await;
    // The second frame was never returned: wherever it waits (the read
    // buffer or the socket), dropping the endpoint closes its descriptor.
    drop((tx_b, rx_b));
    closed_everywhere(&mut second).await;
}

#[tokio::test]
async fn a_recv_cancelled_midway_through_a_frame_loses_nothing() {
    let (ours, theirs) = channel_pair().unwrap();
    let mut theirs = UnixStream::from(theirs);
    let bytes = raw_handshake();
    theirs.write_all(&bytes).unwrap();
    let (_tx, mut rx, _) = bounded(handshake(ours, Handshake::new(1, 1), Config::default()))
        .await
        .unwrap();
    let text = "x".repeat(100);
    let mut frame = Vec::new();
    encode_frame(&mut frame, FrameKind::User, &text, 0, 1024).unwrap();
    let (first, second) = frame.split_at(frame.len() / 2);
    theirs.write_all(first).unwrap();
    // Cancel receives (as a losing `select!` branch would) until one has
    // taken in the first half; bounded by a count.
    for _ in 0..2000 {
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(5), rx.recv_raw());
        assert!(cancelled.await.is_err(), "half a frame is no frame");
        if rx.buffered_bytes() > 0 {
            break;
        }
    }
    assert_eq!(rx.buffered_bytes(), first.len());
    theirs.write_all(second).unwrap();
    match bounded(rx.recv::<String>()).await.unwrap() {
        Incoming::User(got, _) => assert_eq!(got, text),
        other => panic!("unexpected {other:?}"),
    }
}

/// A message whose `Serialize` panics after writing part of itself.
struct PanicsMidway;

impl serde::Serialize for PanicsMidway {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&u64::MAX)?;
        panic!("this Serialize panics midway");
    }
}

#[tokio::test]
async fn a_message_whose_serialize_panics_does_not_corrupt_the_queue() {
    let ((tx, _rx), (_tx_b, mut rx_b)) = open_pair().await;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = tx.try_send(PanicsMidway);
    }));
    assert!(panicked.is_err());
    bounded(tx.send(5u32)).await.unwrap();
    match bounded(rx_b.recv::<u32>()).await.unwrap() {
        Incoming::User(got, _) => assert_eq!(got, 5),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_sender_that_outlives_its_runtime_fails_instead_of_hanging() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ((tx, _rx), _other_end) = first.block_on(open_pair());
    // The writer task dies with its runtime.
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let sent = bounded(tx.send(1u32)).await;
        assert!(matches!(sent, Err(Error::Closed)), "{sent:?}");
        let flushed = bounded(tx.flush()).await;
        assert!(matches!(flushed, Err(Error::Closed)), "{flushed:?}");
        assert!(matches!(
            tx.try_send(2u32),
            Err(cluster_ipc::TrySendError::Closed(2))
        ));
    });
}

#[tokio::test]
async fn answers_written_by_the_sending_task_stay_whole_when_the_socket_fills() {
    // Each answer follows a read, so the sending task writes it itself
    // (while the socket has room); the peer reads no answer until it has
    // sent every request, so the socket fills mid-answer and the writer task
    // must finish that frame before the ones queued behind it.
    const N: u32 = 100;
    const ANSWER_LEN: usize = 60 * 1024;
    let (ours, theirs) = channel_pair().unwrap();
    let (consumed_tx, consumed_rx) = std::sync::mpsc::channel::<u32>();
    let peer = std::thread::spawn(move || {
        // A window that takes every answer, so they never wait for credit.
        let window = Config::default().receive_window(16 << 20);
        let (mut ch, _) =
            cluster_ipc::BlockingChannel::handshake(theirs, Handshake::new(1, 2), window).unwrap();
        for i in 0..N {
            ch.send(i).unwrap();
            // One request per read on the other side: the next is sent
            // once this one was taken.
            let got = consumed_rx
                .recv_timeout(crate::LIMIT)
                .expect("the request was not taken in time");
            assert_eq!(got, i);
        }
        for i in 0..N {
            match ch.recv::<Vec<u8>>().unwrap() {
                Incoming::User(answer, _) => {
                    assert_eq!(answer.len(), ANSWER_LEN);
                    assert!(answer.iter().all(|&b| b == i as u8), "answer {i} garbled");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    // A queue that holds every answer, so sends never wait for the peer.
    let config = Config::default().send_queue_bytes(16 << 20);
    let (tx, mut rx, _) = bounded(handshake(ours, Handshake::new(1, 1), config))
        .await
        .unwrap();
    for i in 0..N {
        match bounded(rx.recv::<u32>()).await.unwrap() {
            Incoming::User(got, _) => assert_eq!(got, i),
            other => panic!("unexpected {other:?}"),
        }
        consumed_tx.send(i).unwrap();
        bounded(tx.send(vec![i as u8; ANSWER_LEN])).await.unwrap();
    }
    bounded(tx.flush()).await.unwrap();
    bounded(tokio::task::spawn_blocking(move || peer.join()))
        .await
        .unwrap()
        .unwrap();
}

/// A recursive user type: each `Node` nests one level deeper.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Nest {
    Leaf,
    Node(Box<Nest>),
}

/// Bytes sent as they are: a tuple of `u8`s is its bytes in postcard.
struct RawPayload(Vec<u8>);

impl serde::Serialize for RawPayload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

#[test]
fn a_million_levels_of_nesting_are_an_error_for_that_frame_only() {
    // On a thread with the default 2 MiB stack (the runtime polls on it):
    // decoding the nested payload once aborted the process.
    let worker = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let ((tx, _rx), (_tx_b, mut rx_b)) = open_pair().await;
                // `Node` a million times, then `Leaf`: 1 MB.
                let mut deep = vec![1u8; 1_000_000];
                deep.push(0);
                bounded(tx.send(&RawPayload(deep))).await.unwrap();
                bounded(tx.send(&Nest::Node(Box::new(Nest::Leaf))))
                    .await
                    .unwrap();
                let err = bounded(rx_b.recv::<Nest>()).await.unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::NestingTooDeep {
                            limit: cluster_ipc::DEFAULT_MAX_DEPTH,
                            ..
                        }
                    ),
                    "{err:?}"
                );
                // The channel stays usable: the next frame decodes.
                match bounded(rx_b.recv::<Nest>()).await.unwrap() {
                    Incoming::User(msg, _) => assert_eq!(msg, Nest::Node(Box::new(Nest::Leaf))),
                    other => panic!("unexpected {other:?}"),
                }
            });
        })
        .unwrap();
    worker.join().expect("the receiving thread panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_ping_pong_with_descriptors_keeps_each_descriptor_with_its_frame() {
    // Answers come within the receive spin, so most reads are the spin's
    // non-blocking ones: every descriptor must still arrive with its frame.
    const ROUNDS: u64 = 300;
    let ((tx_a, mut rx_a), (tx_b, mut rx_b)) = open_pair().await;
    let echo = tokio::spawn(async move {
        for _ in 0..ROUNDS {
            match bounded(rx_b.recv::<u64>()).await.unwrap() {
                Incoming::User(seq, fds) => {
                    assert_eq!(fds.len(), 1, "frame {seq} without its descriptor");
                    bounded(tx_b.send_with_fds(seq, fds)).await.unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    use std::os::unix::fs::MetadataExt;
    let (probe, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
    let probe_ino = std::fs::File::from(std::os::fd::OwnedFd::from(probe.try_clone().unwrap()))
        .metadata()
        .unwrap()
        .ino();
    for seq in 0..ROUNDS {
        let fd = probe.try_clone().unwrap();
        bounded(tx_a.send_with_fds(seq, vec![fd.into()]))
            .await
            .unwrap();
        match bounded(rx_a.recv::<u64>()).await.unwrap() {
            Incoming::User(back, fds) => {
                assert_eq!(back, seq);
                assert_eq!(fds.len(), 1, "answer {seq} without its descriptor");
                let back = std::fs::File::from(fds.into_iter().next().unwrap());
                assert_eq!(back.metadata().unwrap().ino(), probe_ino, "answer {seq}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    bounded(echo).await.unwrap();
}

#[tokio::test]
async fn queued_control_frames_keep_their_order_with_answers_written_at_once() {
    // `try_queue_control` leaves the frame to the writer task; an answer
    // sent after it (which may be written by the sending task) must not
    // overtake it.
    let ((tx_a, mut rx_a), (tx_b, mut rx_b)) = open_pair().await;
    bounded(tx_a.send(1u32)).await.unwrap();
    assert!(matches!(
        bounded(rx_b.recv::<u32>()).await.unwrap(),
        Incoming::User(1, _)
    ));
    for conn_id in 0..3 {
        tx_b.try_queue_control(ControlMsg::ConnectionAck {
            conn_id,
            accepted: true,
        })
        .unwrap();
    }
    bounded(tx_b.send(2u32)).await.unwrap();
    for conn_id in 0..3 {
        match bounded(rx_a.recv::<u32>()).await.unwrap() {
            Incoming::Control(ControlMsg::ConnectionAck { conn_id: got, .. }, _) => {
                assert_eq!(got, conn_id)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(
        bounded(rx_a.recv::<u32>()).await.unwrap(),
        Incoming::User(2, _)
    ));
}
