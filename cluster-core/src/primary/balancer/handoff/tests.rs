//! Unit tests of the hand-off's accept loop against the upgrade's
//! hand-over: an accept loop told to stop while it is in the middle of a
//! round of accepts (on the network thread, while the supervisor stops it
//! from another) still hands over what it accepted, and the hand-over
//! waits for it.
//!
//! Real sockets, a real worker channel (its worker end is the test), and
//! the real accept loop on a network thread of its own; only its listener
//! is wrapped ([`Gated`]) so the test holds that thread inside `accept4`'s
//! round at a point of its choosing: what a loaded machine does at random
//! (the thread preempted between the accept and the balancer's lock).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cluster_ipc::{ControlMsg, Handshake, Incoming, ListenOnRequest, ListenTarget};

use super::{PrimaryAccept, accept_loop};
use crate::event::{SlotId, WorkerId};
use crate::primary::balancer::{Balancer, Counters, InheritedSocket};

/// Every wait of these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

/// A Unix-domain listener whose first `accept_one` first waits at a gate:
/// the accept loop, and its thread, stay in the middle of that round of
/// accepts until the test opens it.
struct Gated {
    listener: UnixListener,
    passed: AtomicBool,
    /// Told when the first `accept_one` reached the gate.
    arrived: mpsc::Sender<()>,
    gate: Mutex<mpsc::Receiver<()>>,
}

impl AsRawFd for Gated {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl PrimaryAccept for Gated {
    fn accept_one(&self) -> std::io::Result<(OwnedFd, Option<SocketAddr>)> {
        if !self.passed.swap(true, Ordering::SeqCst) {
            let _ = self.arrived.send(());
            let _ = self
                .gate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .recv_timeout(BOUND);
        }
        self.listener.accept_one()
    }
}

/// A network thread of the test's own (as `primary/net.rs` starts one):
/// a current-thread runtime, ended when dropped.
struct NetThread {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl NetThread {
    fn start() -> NetThread {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = rt.block_on(stopped);
        });
        NetThread {
            handle,
            _stop: stop,
        }
    }
}

/// An upgrade stops the accept loop while it is accepting a connection: the
/// hand-over does not resolve before that connection is handed to a worker
/// and taken, so the old primary never drains (and closes) it. Before, the
/// hand-over found nothing pending, resolved at once, and the connection,
/// accepted a moment later, was closed by the shutdown that followed: the
/// client read ECONNRESET (about one upgrade in 100 on a loaded machine).
#[tokio::test]
async fn the_hand_over_waits_for_an_accept_loop_stopped_in_the_middle_of_a_round() {
    let net = NetThread::start();
    let balancer = Arc::new(Balancer::default());
    let worker = WorkerId(1);
    balancer.add_worker(worker, SlotId::new(0), Arc::new(Counters::default()));

    // The worker's channel: the primary's end on the network thread, the
    // worker's end here.
    let (primary_end, worker_end) = cluster_ipc::channel_pair().unwrap();
    let pid = std::process::id();
    let primary_side = net.handle.spawn(cluster_ipc::handshake(
        primary_end,
        Handshake::new(worker.0, pid),
        cluster_ipc::Config::default(),
    ));
    let (_worker_tx, mut worker_rx, _) = cluster_ipc::handshake(
        worker_end,
        Handshake::new(worker.0, pid),
        cluster_ipc::Config::default(),
    )
    .await
    .unwrap();
    let (tx, _primary_rx, _) = primary_side.await.unwrap().unwrap();
    balancer.set_sender(worker, tx.clone());

    // A Unix-domain socket given to the primary; the worker listens on it.
    let dir = std::env::temp_dir().join(format!("procwork-handoff-unit-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = balancer.inherit(InheritedSocket::Unix(listener.try_clone().unwrap()));
    let request = ListenOnRequest {
        request_id: 1,
        target: ListenTarget::Fd(fd),
    };
    let listening = net.handle.spawn({
        let balancer = Arc::clone(&balancer);
        async move { balancer.listen_on(worker, &tx, request).await }
    });
    assert!(listening.await.unwrap().is_some(), "the worker listens");
    let reply = tokio::time::timeout(BOUND, worker_rx.recv_raw()).await;
    assert!(
        matches!(
            reply,
            Ok(Ok(Incoming::Control(ControlMsg::ListenOnReply(_), _)))
        ),
        "{reply:?}"
    );

    // Its accept loop, on a listener the test can hold mid-round.
    let (arrived_tx, arrived) = mpsc::channel();
    let (open, gate) = mpsc::channel();
    let gated = Gated {
        listener: listener.try_clone().unwrap(),
        passed: AtomicBool::new(false),
        arrived: arrived_tx,
        gate: Mutex::new(gate),
    };
    let gated_loop = net
        .handle
        .spawn(accept_loop(Arc::clone(&balancer), 0, gated));
    let plain_loop = balancer.lock().listeners[0]
        .accept_task
        .replace(gated_loop)
        .expect("a handed-over listener has an accept loop");
    plain_loop.abort();
    let _ = plain_loop.await;

    // A client connects and sends its request; the loop is held inside
    // the round that accepts it.
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"GET\n").unwrap();
    arrived
        .recv_timeout(BOUND)
        .expect("the accept loop accepts");

    // The upgrade: stop accepting, then wait for the hand-over.
    let stopped = balancer.stop_accepting();
    let handed_over = balancer.handed_over(stopped, BOUND);
    tokio::pin!(handed_over);
    let early = tokio::select! {
        biased;
        () = &mut handed_over => true,
        () = std::future::ready(()) => false,
    };
    assert!(
        !early,
        "handed over while a connection was being accepted: it would be closed"
    );

    // The round ends: the connection is handed to the worker, which takes
    // it; only then is the hand-over done.
    open.send(()).unwrap();
    let handed = tokio::time::timeout(BOUND, worker_rx.recv_raw())
        .await
        .expect("the connection is handed over")
        .unwrap();
    let Incoming::Control(ControlMsg::NewUnixConnection { conn_id, .. }, mut fds) = handed else {
        panic!("not a hand-off: {handed:?}");
    };
    balancer.ack(worker, conn_id, true);
    tokio::time::timeout(BOUND, handed_over)
        .await
        .expect("handed over once the worker took it");

    // It is the client's connection, its request unread.
    let conn = UnixStream::from(fds.pop().expect("the connection's descriptor"));
    conn.set_read_timeout(Some(BOUND)).unwrap();
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    assert_eq!(line, "GET\n");
    (&conn).write_all(b"ok\n").unwrap();
    client.set_read_timeout(Some(BOUND)).unwrap();
    let mut answer = String::new();
    BufReader::new(&client).read_line(&mut answer).unwrap();
    assert_eq!(answer, "ok\n");
    let _ = std::fs::remove_dir_all(&dir);
}
