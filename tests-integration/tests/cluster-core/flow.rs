//! Control never waits behind messages (issue 21): a primary that reads its
//! events late, a worker that never reads its messages and a broadcast
//! beside a stopped worker leave hand-offs, acknowledgements, heartbeats,
//! disconnects and the other workers untouched; an unbounded shutdown
//! deadline is a deadline, not a panic.

use std::time::{Duration, Instant};

use cluster_core::{Close, Event, Signal};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{self, BOUND, Msg, next, serving, settings, until, until_n, wait_stopped};

/// Connects `n` clients and reads each one's answer (the worker id): the
/// clients, still open, with the ids.
async fn connect_and_read(
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<(BufReader<TcpStream>, u64)> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = tokio::time::timeout(BOUND, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(BOUND, reader.read_line(&mut line))
            .await
            .expect("a connection was not answered in time")
            .expect("read failed");
        let id = line.trim().parse().expect("a worker id");
        clients.push((reader, id));
    }
    clients
}

/// Whether any client got a second answer within `within`: a connection
/// served by two workers.
async fn any_second_answer(clients: &mut [(BufReader<TcpStream>, u64)], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut twice = 0;
    for (reader, _) in clients.iter_mut() {
        let mut byte = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout_at(deadline, reader.read(&mut byte)).await
            && n > 0
        {
            twice += 1;
        }
    }
    twice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_reads_events_late_serves_every_connection_once() {
    // Each worker sends 500 messages nobody reads while 20 clients
    // connect; a short hand-off deadline and heartbeat make a stalled
    // acknowledgement or heartbeat show at once.
    let mut s = settings("serve-chatty:500", 2);
    s.handoff_deadline(Duration::from_millis(200))
        .heartbeat(Duration::from_millis(100), Duration::from_secs(2));
    let (cluster, addr) = serving(s, 2).await;
    // From here the program reads no event until every client was served.
    let mut clients = connect_and_read(addr, 20).await;
    // Past the deadline, its margin and the heartbeat timeout: a connection
    // whose ack was held back would have gone to the other worker by now,
    // and a worker whose heartbeats were held back would be killed.
    let twice = any_second_answer(&mut clients, Duration::from_millis(2500)).await;
    assert_eq!(twice, 0, "{twice} of 20 connections were served twice");
    drop(clients);
    // No worker was taken for unresponsive: the first two still serve.
    let alive: Vec<_> = cluster
        .workers()
        .values()
        .filter(|w| w.state().is_alive())
        .map(|w| w.id().0)
        .collect();
    assert_eq!(alive, [1, 2], "a healthy worker was replaced");
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_reads_its_messages_keeps_serving_and_drains() {
    // `serve` never calls `recv`: 200 messages each sit in its inbox.
    let (cluster, addr) = serving(settings("serve", 2), 2).await;
    let workers = cluster.workers();
    for w in workers.values() {
        for n in 0..200 {
            tokio::time::timeout(BOUND, w.send(&Msg::Ping(n)))
                .await
                .expect("a send to a deaf worker waited past the window")
                .unwrap();
        }
    }
    let clients = connect_and_read(addr, 20).await;
    let served: std::collections::BTreeSet<u64> = clients.iter().map(|(_, id)| *id).collect();
    assert_eq!(served.len(), 2, "round-robin reaches both deaf workers");
    drop(clients);
    // They hear the disconnect and exit by themselves, not SIGKILLed at
    // the deadline.
    let rest = support::shutdown(cluster).await;
    let exits: Vec<_> = rest
        .iter()
        .filter_map(|ev| match ev {
            Event::Exit { exit, .. } => Some(*exit),
            _ => None,
        })
        .collect();
    assert_eq!(exits, [Close::Exited(0); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_the_live_workers_while_one_is_stopped() {
    let mut s = settings("echo", 3);
    // No heartbeat: nothing ends the stopped worker, so a broadcast that
    // waited for it would wait for ever.
    s.no_heartbeat();
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let workers = cluster.start().unwrap();
    until_n(&mut cluster, 3, |ev| matches!(ev, Event::Online { .. })).await;
    let stopped = &workers[0];
    stopped.kill(Signal::SIGSTOP).unwrap();
    wait_stopped(stopped.pid()).await;
    // Fill the stopped worker's window (1 MiB) and the socket behind it;
    // the live workers echo each message, read here as they come.
    let big = Msg::Text("x".repeat(64 * 1024));
    for _ in 0..40 {
        assert!(cluster.broadcast(&big).await >= 2);
        until_n(&mut cluster, 2, |ev| matches!(ev, Event::Message(_))).await;
    }
    let started = Instant::now();
    let hello = Msg::Text("hello".into());
    let reached = tokio::time::timeout(BOUND, cluster.broadcast(&hello))
        .await
        .expect("the broadcast waited for the stopped worker");
    assert!(reached >= 2, "reached {reached}");
    // The live workers echo everything; the last echo of each is `hello`.
    let mut greeted = std::collections::BTreeSet::new();
    while greeted.len() < 2 {
        if let Event::Message(m) = next(&mut cluster).await
            && m.value() == &hello
        {
            greeted.insert(m.worker());
        }
    }
    eprintln!(
        "broadcast to the live workers with one stopped: {:?}",
        started.elapsed()
    );
    assert!(!greeted.contains(&stopped.id()));
    stopped.kill(Signal::SIGKILL).unwrap();
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_deadline_of_duration_max_shuts_down_cleanly() {
    let mut s = settings("echo", 2);
    s.shutdown_deadline(Duration::MAX);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    cluster.start().unwrap();
    until_n(&mut cluster, 2, |ev| matches!(ev, Event::Online { .. })).await;
    tokio::time::timeout(BOUND, cluster.shutdown())
        .await
        .expect("shutdown did not finish")
        .unwrap();
    let events = until_n(&mut cluster, 2, |ev| matches!(ev, Event::Exit { .. })).await;
    for ev in &events {
        if let Event::Exit {
            exit,
            exited_after_disconnect,
            ..
        } = ev
        {
            assert_eq!((*exit, *exited_after_disconnect), (Close::Exited(0), true));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_report_themselves_through_the_events_in_order() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("echo", 1)).unwrap();
    cluster.start().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    tokio::time::timeout(BOUND, cluster.reload())
        .await
        .expect("reload did not finish")
        .unwrap();
    let events = until(&mut cluster, |ev| {
        matches!(ev, Event::ReloadFinished { .. })
    })
    .await;
    let started = events
        .iter()
        .position(|ev| matches!(ev, Event::ReloadStarted))
        .expect("ReloadStarted for Cluster::reload");
    let replacement_online = events
        .iter()
        .position(|ev| matches!(ev, Event::Online { .. }))
        .expect("the replacement came online");
    assert!(started < replacement_online);
    assert!(matches!(
        events.last(),
        Some(Event::ReloadFinished { error: None })
    ));
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_during_a_reload_is_replaced_too() {
    let dir = std::env::temp_dir().join(format!("reload-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gate = dir.join("gate");
    let mut s = settings(&format!("wait-while:{}", gate.display()), 1);
    s.ready_timeout(BOUND);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let first = cluster.start().unwrap().remove(0);
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    // From now on a new worker waits before it comes online.
    std::fs::write(&gate, b"").unwrap();
    // The replacement (2) is started and waits; meanwhile the old worker
    // is killed and its slot restarted (3), which waits too. The script
    // watches the worker table (it cannot read events while the reload
    // borrows the cluster).
    let has_worker = |id: u64| {
        let cluster = &cluster;
        async move {
            while !cluster.workers().contains_key(&cluster_core::WorkerId(id)) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let script = async {
        has_worker(2).await;
        first.kill(Signal::SIGKILL).unwrap();
        has_worker(3).await;
        std::fs::remove_file(&gate).unwrap();
    };
    let (reloaded, ()) =
        tokio::time::timeout(BOUND, async { tokio::join!(cluster.reload(), script) })
            .await
            .expect("the reload did not end");
    reloaded.unwrap();
    // The restarted worker runs the old program too: it is drained as the
    // old one would have been, and the slot is the replacement's alone.
    until(&mut cluster, |ev| {
        matches!(ev, Event::Exit { worker, exited_after_disconnect: true, .. } if worker.0 == 3)
    })
    .await;
    let alive: Vec<_> = cluster
        .workers()
        .values()
        .filter(|w| w.state().is_alive())
        .map(|w| w.id().0)
        .collect();
    assert_eq!(alive, [2]);
    std::fs::remove_dir_all(&dir).unwrap();
    support::shutdown(cluster).await;
}
