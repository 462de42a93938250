//! Flow control: user messages take credit from the receiver's window and
//! get it back as the receiving program consumes them; control frames take
//! none and are never held back by user messages; a peer past the window, a
//! dropped receiver and a peer that wrote its handshake and left are typed
//! outcomes, never a stall.

use std::io::Write;
use std::os::unix::net::UnixStream;

use cluster_ipc::frame::{FrameKind, encode_frame, user_frame_charge};
use cluster_ipc::{
    BlockingChannel, Config, ControlMsg, Error, Handshake, Incoming, TrySendError, channel_pair,
    handshake,
};

use crate::{bounded, raw_handshake};

/// A pair whose side B announces `window` bytes. Side A only sends: a task
/// reads its receiver, as every endpoint that sends must be read (the
/// peer's window updates arrive there).
async fn pair_with_window(window: u32, config_a: Config) -> (cluster_ipc::Sender, Side) {
    let (a, b) = channel_pair().unwrap();
    let config_b = Config::default().receive_window(window);
    let other = tokio::spawn(handshake(b, Handshake::new(1, 2), config_b));
    let (tx_a, mut rx_a, _) = bounded(handshake(a, Handshake::new(1, 1), config_a))
        .await
        .unwrap();
    tokio::spawn(async move { while rx_a.recv_raw().await.is_ok() {} });
    let (tx_b, rx_b, _) = bounded(other).await.unwrap().unwrap();
    (tx_a, (tx_b, rx_b))
}

type Side = (cluster_ipc::Sender, cluster_ipc::Receiver);

#[tokio::test]
async fn a_receiver_that_holds_its_messages_stops_the_sender_but_not_control() {
    const WINDOW: u32 = 4096;
    let (tx, (_tx_b, mut rx)) = pair_with_window(WINDOW, Config::default()).await;
    let payload = vec![7u8; 100];
    // Each message costs its header, payload (a 1-byte length and 100
    // bytes) and the fixed cost; the sender may start one while less than
    // the window is outstanding.
    let charge = user_frame_charge(101);
    let fits = u64::from(WINDOW).div_ceil(charge);
    let mut sent = 0u64;
    loop {
        match tx.try_send(&payload) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(_)) => break,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(sent <= fits, "the sender passed the window");
    }
    assert_eq!(sent, fits);
    // The receiver takes every admitted message and keeps them (their
    // credits held): the sender stays out of credit...
    let mut held = Vec::new();
    for _ in 0..sent {
        match bounded(rx.recv_raw()).await.unwrap() {
            Incoming::User(mut frame, _) => held.push(frame.take_credit()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(tx.try_send(&payload), Err(TrySendError::Full(_))));
    // ...while a send waits for credit, control frames go at once and
    // arrive.
    let blocked = tokio::spawn({
        let tx = tx.clone();
        let payload = payload.clone();
        async move { tx.send(&payload).await }
    });
    for seq in 1..=100 {
        bounded(tx.send_control(&ControlMsg::Heartbeat { seq }, Vec::new()))
            .await
            .unwrap();
    }
    for seq in 1..=100 {
        match bounded(rx.recv_raw()).await.unwrap() {
            Incoming::Control(ControlMsg::Heartbeat { seq: got }, _) => assert_eq!(got, seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!blocked.is_finished(), "a send went past the window");
    // Consuming the held messages grants their room back: the waiting send
    // completes and its message arrives.
    drop(held);
    bounded(blocked).await.unwrap().unwrap();
    match bounded(rx.recv::<Vec<u8>>()).await.unwrap() {
        Incoming::User(got, _) => assert_eq!(got, payload),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn control_queued_after_user_messages_leaves_first() {
    // A queue of user messages the peer's window admits but the socket has
    // not taken yet: a control frame queued after them is written first.
    let queue = Config::default().send_queue_bytes(64 << 20);
    let (tx, (_tx_b, mut rx)) = pair_with_window(64 << 20, queue).await;
    let big = vec![1u8; 512 * 1024];
    for _ in 0..8 {
        tx.try_send(&big)
            .unwrap_or_else(|_| panic!("the queue refused"));
    }
    bounded(tx.send_control(&ControlMsg::Heartbeat { seq: 1 }, Vec::new()))
        .await
        .unwrap();
    let mut users_before = 0;
    loop {
        match bounded(rx.recv::<Vec<u8>>()).await.unwrap() {
            Incoming::User(_, _) => users_before += 1,
            Incoming::Control(ControlMsg::Heartbeat { seq: 1 }, _) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // At most the batch being written when it was queued went first.
    assert!(
        users_before < 8,
        "the control frame waited behind every message"
    );
}

#[tokio::test]
async fn a_disconnect_counts_the_messages_it_overtakes() {
    let (tx, (_tx_b, mut rx)) = pair_with_window(1 << 20, Config::default()).await;
    for i in 0..5u32 {
        bounded(tx.send(i)).await.unwrap();
    }
    bounded(tx.send_disconnect()).await.unwrap();
    let mut users = 0;
    let mut after = None;
    while users < 5 || after.is_none() {
        match bounded(rx.recv::<u32>()).await.unwrap() {
            Incoming::User(got, _) => {
                assert_eq!(got, users);
                users += 1;
            }
            Incoming::Control(ControlMsg::Disconnect { after_messages }, _) => {
                after = Some(after_messages);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(after, Some(5));
}

#[tokio::test]
async fn a_peer_past_the_window_is_a_typed_error() {
    let (ours, theirs) = channel_pair().unwrap();
    let mut theirs = UnixStream::from(theirs);
    let config = Config::default().receive_window(1000);
    let opened = tokio::spawn(handshake(ours, Handshake::new(1, 1), config));
    // The peer speaks the wire by hand and ignores the window it was given.
    let mut bytes = raw_handshake();
    for _ in 0..100 {
        encode_frame(&mut bytes, FrameKind::User, &[0u8; 32], 0, 1024).unwrap();
    }
    theirs.write_all(&bytes).unwrap();
    let (_tx, mut rx, _) = bounded(opened).await.unwrap().unwrap();
    // The program holds every message (their credits with them), so
    // nothing is granted back.
    let mut held = Vec::new();
    let error = loop {
        match bounded(rx.recv_raw()).await {
            Ok(Incoming::User(frame, _)) => held.push(frame),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    let admitted = held.len();
    assert!(
        matches!(error, Error::WindowExceeded { window: 1000, .. }),
        "{error:?}"
    );
    assert!(admitted > 0 && admitted < 100, "{admitted} admitted");
    assert!(matches!(rx.recv::<u8>().await, Err(Error::Closed)));
}

#[tokio::test]
async fn dropping_a_receiver_makes_the_peers_sends_fail_instead_of_waiting() {
    let (a, b) = channel_pair().unwrap();
    let other = tokio::spawn(handshake(b, Handshake::new(1, 2), Config::default()));
    let (_tx_a, rx_a, _) = bounded(handshake(a, Handshake::new(1, 1), Config::default()))
        .await
        .unwrap();
    let (tx_b, _rx_b, _) = bounded(other).await.unwrap().unwrap();
    drop(rx_a);
    // Nobody reads A's socket any more: B learns it from its sends, which
    // would otherwise fill the socket and wait for ever.
    let big = vec![0u8; 64 * 1024];
    let error = bounded(async {
        loop {
            if let Err(e) = tx_b.send(&big).await {
                break e;
            }
            if let Err(e) = tx_b.flush().await {
                break e;
            }
        }
    })
    .await;
    assert!(error.is_peer_closed(), "{error:?}");
}

#[test]
fn a_blocking_handshake_reads_what_a_peer_sent_before_it_left() {
    // The peer writes its handshake and a message, then closes before
    // reading ours: our write fails (EPIPE), but what it sent is read.
    let (ours, theirs) = channel_pair().unwrap();
    let mut theirs = UnixStream::from(theirs);
    let mut bytes = Vec::new();
    encode_frame(
        &mut bytes,
        FrameKind::Handshake,
        &Handshake::new(9, 2),
        0,
        1024,
    )
    .unwrap();
    encode_frame(&mut bytes, FrameKind::User, &42u32, 0, 1024).unwrap();
    theirs.write_all(&bytes).unwrap();
    drop(theirs);
    let (mut channel, peer) =
        BlockingChannel::handshake(ours, Handshake::new(9, 1), Config::default())
            .expect("the peer's handshake was sent before it left");
    assert_eq!(peer.worker_id, 9);
    match channel.recv::<u32>().unwrap() {
        Incoming::User(got, _) => assert_eq!(got, 42),
        other => panic!("unexpected {other:?}"),
    }
    assert!(channel.recv::<u32>().unwrap_err().is_peer_closed());
}

#[test]
fn a_blocking_sender_out_of_credit_reads_until_the_grant_comes() {
    const N: u32 = 2_000;
    let (a, b) = channel_pair().unwrap();
    let small = Config::default().receive_window(2048);
    let reader = std::thread::spawn(move || {
        let (mut ch, _) = BlockingChannel::handshake(b, Handshake::new(1, 2), small).unwrap();
        // Talk back while the other side is out of credit: its reads keep
        // these for its next receive.
        ch.send_control(&ControlMsg::Heartbeat { seq: 1 }, Vec::new())
            .unwrap();
        for i in 0..N {
            match ch.recv::<u32>().unwrap() {
                Incoming::User(got, _) => assert_eq!(got, i),
                other => panic!("unexpected {other:?}"),
            }
        }
        ch.send(N).unwrap();
    });
    let (mut ch, _) =
        BlockingChannel::handshake(a, Handshake::new(1, 1), Config::default()).unwrap();
    for i in 0..N {
        ch.send(i).unwrap();
    }
    let mut seen_heartbeat = false;
    loop {
        match ch.recv::<u32>().unwrap() {
            Incoming::Control(ControlMsg::Heartbeat { seq: 1 }, _) => seen_heartbeat = true,
            Incoming::User(got, _) => {
                assert_eq!(got, N);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen_heartbeat);
    reader.join().unwrap();
}

/// A receive loop that always finds its next message never yields to the
/// writer task of its own runtime: the window update its consumption
/// earned must leave anyway, or the peer runs out of credit and waits until
/// the loop runs dry (`ipc.throughput_small` fell to 0.6x its rate before
/// flow control). Here the test's task never yields between the receives
/// and the peer's read, on a current-thread runtime, so only an update
/// written at the grant can be on the socket.
#[tokio::test(flavor = "current_thread")]
async fn a_grant_leaves_without_waiting_for_the_receive_loop_to_yield() {
    use std::io::Read;

    use cluster_ipc::frame::{HEADER_LEN, Header};

    let (ours, theirs) = channel_pair().unwrap();
    let mut theirs = UnixStream::from(theirs);
    let config = Config::default().receive_window(1000);
    let mut bytes = raw_handshake();
    // A quarter of the window (250 bytes) is granted back at once: three
    // messages of 32 bytes are worth 3 × 96.
    for i in 0..3u8 {
        encode_frame(&mut bytes, FrameKind::User, &[i; 32], 0, 1024).unwrap();
    }
    assert!(3 * user_frame_charge(32) >= 250);
    theirs.write_all(&bytes).unwrap();
    let (_tx, mut rx, _) = bounded(handshake(ours, Handshake::new(1, 1), config))
        .await
        .unwrap();
    for i in 0..3u8 {
        match rx.recv::<[u8; 32]>().await {
            Ok(Incoming::User(m, _)) => assert_eq!(m, [i; 32]),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Blocking here holds the runtime's only thread: the writer task
    // cannot run until the test ends.
    theirs
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut kinds = Vec::new();
    while !kinds.contains(&FrameKind::Window) {
        let mut header = [0u8; HEADER_LEN];
        if let Err(e) = theirs.read_exact(&mut header) {
            panic!("no window update on the socket ({e}); frames seen: {kinds:?}");
        }
        let header = Header::parse(&header, 1024).unwrap();
        let mut payload = vec![0u8; header.len as usize];
        theirs.read_exact(&mut payload).unwrap();
        kinds.push(header.kind);
    }
    assert_eq!(kinds.first(), Some(&FrameKind::Handshake), "{kinds:?}");
}
