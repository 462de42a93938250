//! Unit tests of the worker's listening side: a handed-over `Connection`
//! (of either stream type) ends the client's connection when dropped,
//! whoever else holds it, and is counted while it lives.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use cluster_ipc::{Config, ControlMsg, Handshake, Incoming};

use super::{CloseNotice, Connection, OpenCount};

/// A channel pair over a socketpair, both ends past the handshake.
async fn channel() -> (cluster_ipc::Sender, cluster_ipc::Receiver) {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let (ours, theirs) = tokio::join!(
        cluster_ipc::handshake(a.into(), Handshake::new(1, 1), Config::default()),
        cluster_ipc::handshake(b.into(), Handshake::new(1, 1), Config::default()),
    );
    let (tx, _rx, _) = ours.expect("our handshake");
    let (_tx, rx, _) = theirs.expect("their handshake");
    (tx, rx)
}

/// The client's thread read the end of its stream, and nothing before it;
/// the primary got `ConnectionClosed { conn_id }`. Both bounded.
async fn client_and_primary_see_the_end(
    client: std::thread::JoinHandle<std::io::Result<Vec<u8>>>,
    primary: &mut cluster_ipc::Receiver,
    conn_id: u64,
) {
    let seen = tokio::task::spawn_blocking(move || client.join())
        .await
        .expect("join the client")
        .expect("the client thread");
    assert_eq!(seen.expect("the client saw the end").len(), 0);
    let notice = tokio::time::timeout(Duration::from_secs(10), primary.recv_raw())
        .await
        .expect("the close notice in time")
        .expect("a frame");
    assert!(
        matches!(notice, Incoming::Control(ControlMsg::ConnectionClosed { conn_id: c }, _) if c == conn_id),
        "{notice:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_ends_while_the_primary_still_holds_a_duplicate() {
    let (tx, mut primary) = channel().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut rest = Vec::new();
        // The end of the stream, not the timeout (an error).
        c.read_to_end(&mut rest).map(|_| rest)
    });
    let (stream, peer) = listener.accept().await.expect("accept");
    // What the primary keeps until it has processed the ack.
    let duplicate = stream.as_fd().try_clone_to_owned().expect("dup");
    let conn = Connection {
        stream,
        peer,
        _notice: Some(CloseNotice { conn_id: 7, tx }),
        _open: OpenCount::default().track(),
    };
    drop(conn);
    client_and_primary_see_the_end(client, &mut primary, 7).await;
    drop(duplicate);
}

/// The same for a Unix-domain connection (the one `Connection` over the
/// stream type): the client sees the end at once, the primary is told, and
/// the connection counted among the worker's open ones while it lived.
#[tokio::test]
async fn a_dropped_unix_connection_ends_and_was_counted_like_a_tcp_one() {
    let (tx, mut primary) = channel().await;
    let (theirs, ours) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let client = std::thread::spawn(move || {
        let mut c = theirs;
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).map(|_| rest)
    });
    let duplicate = ours.as_fd().try_clone_to_owned().expect("dup");
    let stream =
        <tokio::net::UnixStream as super::stream::sealed::Kind>::adopt(ours.into()).expect("adopt");
    let count = OpenCount::default();
    let peer = super::stream::sealed::Kind::handed_peer(&stream, None);
    assert!(peer.is_unnamed(), "{peer:?}");
    let conn: super::UnixConnection = Connection {
        stream,
        peer,
        _notice: Some(CloseNotice { conn_id: 9, tx }),
        _open: count.track(),
    };
    assert_eq!(count.0.borrow().connections, 1);
    drop(conn);
    assert_eq!(count.0.borrow().connections, 0);
    client_and_primary_see_the_end(client, &mut primary, 9).await;
    drop(duplicate);
}
