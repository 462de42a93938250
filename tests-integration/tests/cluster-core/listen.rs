//! Listening through the primary: real sockets on loopback, every policy,
//! hand-off failures and listen errors.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cluster_core::{Cluster, Event, PolicyKind, SlotId, WorkerId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{self, BOUND, Msg, settings, until, until_n};

/// A cluster of `n` helper workers in `mode`, with `policy`, listening on an
/// ephemeral loopback port; returns it once every worker listens, with the
/// shared address and the slot of each worker.
async fn listening_cluster(
    mode: &str,
    n: usize,
    policy: PolicyKind,
) -> (Cluster<Msg>, SocketAddr, BTreeMap<WorkerId, SlotId>) {
    let mut s = settings(mode, n);
    s.env("HELPER_ADDR", "127.0.0.1:0")
        .scheduling_policy(policy);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    cluster.start().unwrap();
    let mut slots = BTreeMap::new();
    let mut addrs = BTreeSet::new();
    let mut n_listening = 0;
    until(&mut cluster, |ev| {
        match ev {
            Event::Fork { worker, slot, .. } => {
                slots.insert(*worker, *slot);
            }
            Event::Listening { addr, .. } => {
                addrs.insert(*addr);
                n_listening += 1;
            }
            _ => {}
        }
        n_listening == n
    })
    .await;
    assert_eq!(
        addrs.len(),
        1,
        "every worker gets the same address: {addrs:?}"
    );
    let addr = *addrs.iter().next().unwrap();
    (cluster, addr, slots)
}

/// Connect (from `source` if given) and read the worker id the worker
/// answers with; the connection stays open while the stream lives.
async fn ask(addr: SocketAddr, source: Option<IpAddr>) -> (u64, BufReader<TcpStream>) {
    let stream = tokio::time::timeout(BOUND, async {
        match source {
            Some(ip) => {
                let sock = TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::new(ip, 0)).unwrap();
                sock.connect(addr).await.unwrap()
            }
            None => TcpStream::connect(addr).await.unwrap(),
        }
    })
    .await
    .expect("connect timed out");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(BOUND, reader.read_line(&mut line))
        .await
        .expect("no answer from a worker")
        .unwrap();
    let id = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad answer {line:?}"));
    (id, reader)
}

/// Wait for `n` `Listening` events (and return the other events seen).
async fn listening(cluster: &mut Cluster<Msg>, n: usize) -> Vec<Event<Msg>> {
    until_n(cluster, n, |ev| matches!(ev, Event::Listening { .. })).await
}

/// The address of the first `Listening` among `events`.
fn listening_addr(events: &[Event<Msg>]) -> SocketAddr {
    events
        .iter()
        .find_map(|ev| match ev {
            Event::Listening { addr, .. } => Some(*addr),
            _ => None,
        })
        .expect("a Listening event")
}

/// Opens `n` connections and keeps them open: how many each worker answered,
/// and the connections.
async fn hold(addr: SocketAddr, n: usize) -> (BTreeMap<u64, u32>, Vec<BufReader<TcpStream>>) {
    let mut counts = BTreeMap::new();
    let mut held = Vec::new();
    for _ in 0..n {
        let (id, conn) = ask(addr, None).await;
        *counts.entry(id).or_default() += 1;
        held.push(conn);
    }
    (counts, held)
}

/// Poll the primary's counters until `pred` holds (they follow messages the
/// workers send after the client saw its answer), bounded in time.
async fn stats_until(
    cluster: &Cluster<Msg>,
    mut pred: impl FnMut(&BTreeMap<WorkerId, cluster_core::ConnectionStats>) -> bool,
) -> BTreeMap<WorkerId, cluster_core::ConnectionStats> {
    tokio::time::timeout(BOUND, async {
        loop {
            let stats = cluster.connection_stats();
            if pred(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the counters never matched")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_of_4_workers_100_of_400_connections() {
    let (cluster, addr, slots) = listening_cluster("serve", 4, PolicyKind::RoundRobin).await;
    assert_ne!(addr.port(), 0, "port 0 is resolved");
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for _ in 0..400 {
        let (id, conn) = ask(addr, None).await;
        drop(conn);
        *counts.entry(id).or_default() += 1;
    }
    let ids: BTreeSet<u64> = slots.keys().map(|w| w.0).collect();
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), ids);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    let stats = stats_until(&cluster, |s| {
        s.values().map(|c| c.handed).sum::<u64>() == 400 && s.values().all(|c| c.open == 0)
    })
    .await;
    assert!(stats.values().all(|c| c.handed == 100), "{stats:?}");
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keeps_each_client_on_its_worker_across_a_restart() {
    let (mut cluster, addr, mut slots) = listening_cluster("serve", 3, PolicyKind::Sticky).await;
    let sources: Vec<IpAddr> = (2..=13)
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .collect();
    let mut slot_of: BTreeMap<IpAddr, SlotId> = BTreeMap::new();
    for &ip in &sources {
        for _ in 0..3 {
            let (id, _conn) = ask(addr, Some(ip)).await;
            let slot = slots[&WorkerId(id)];
            assert_eq!(
                *slot_of.entry(ip).or_insert(slot),
                slot,
                "client {ip} moved"
            );
        }
    }
    let used: BTreeSet<SlotId> = slot_of.values().copied().collect();
    assert!(used.len() >= 2, "12 clients over 3 workers all on {used:?}");

    // Kill the worker of the first client; its replacement (same slot) gets
    // its clients back.
    let victim_slot = slot_of[&sources[0]];
    let victim = *slots.iter().find(|(_, s)| **s == victim_slot).unwrap().0;
    cluster
        .worker(victim)
        .unwrap()
        .kill(cluster_core::Signal::SIGKILL)
        .unwrap();
    until(&mut cluster, |ev| {
        if let Event::Fork { worker, slot, .. } = ev {
            slots.insert(*worker, *slot);
        }
        matches!(ev, Event::Listening { worker, .. } if slots.get(worker) == Some(&victim_slot) && *worker != victim)
    })
    .await;
    for &ip in &sources {
        let (id, _conn) = ask(addr, Some(ip)).await;
        assert_ne!(WorkerId(id), victim);
        assert_eq!(
            slots[&WorkerId(id)],
            slot_of[&ip],
            "client {ip} moved after the restart"
        );
    }
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_spreads_long_lived_connections() {
    let (cluster, addr, _slots) = listening_cluster("serve", 3, PolicyKind::LeastConnections).await;
    let (counts, held) = hold(addr, 9).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&c| c == 3), "{counts:?}");
    stats_until(&cluster, |s| s.values().all(|c| c.open == 3)).await;
    drop(held);
    stats_until(&cluster, |s| s.values().all(|c| c.open == 0)).await;
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_serves_from_every_worker_it_picks() {
    let (cluster, addr, slots) = listening_cluster("serve", 2, PolicyKind::PowerOfTwoChoices).await;
    // Held open: with two workers, p2c compares both and takes the one with
    // fewer open connections, so they alternate.
    let (counts, held) = hold(addr, 6).await;
    assert!(counts.keys().all(|id| slots.contains_key(&WorkerId(*id))));
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [3, 3],
        "{counts:?}"
    );
    drop(held);
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_shares_the_listener_and_the_workers_accept() {
    let (mut cluster, addr, slots) = listening_cluster("serve-report", 2, PolicyKind::None).await;
    for _ in 0..20 {
        let (id, conn) = ask(addr, None).await;
        drop(conn);
        assert!(slots.contains_key(&WorkerId(id)), "unknown worker {id}");
    }
    // Every connection was accepted in a worker, which said so...
    until_n(
        &mut cluster,
        20,
        |ev| matches!(ev, Event::Message(m) if *m.value() == Msg::Text("accepted".into())),
    )
    .await;
    // ...and none went through the primary.
    assert!(
        cluster.connection_stats().values().all(|c| c.handed == 0),
        "{:?}",
        cluster.connection_stats()
    );
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_refused_by_a_worker_go_to_another() {
    let mut s = settings("serve", 0);
    s.env("HELPER_ADDR", "127.0.0.1:0")
        .scheduling_policy(PolicyKind::RoundRobin);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    let good = cluster.fork().unwrap();
    // Listens, then drops its listener: it refuses what it is handed.
    let refusing = cluster.fork_with_env([("HELPER_MODE", "refuse")]).unwrap();
    let events = listening(&mut cluster, 2).await;
    let addr = listening_addr(&events);
    for _ in 0..10 {
        let (id, conn) = ask(addr, None).await;
        drop(conn);
        assert_eq!(WorkerId(id), good.id());
    }
    let stats = stats_until(&cluster, |s| {
        s.get(&good.id())
            .is_some_and(|c| c.handed == 10 && c.open == 0)
    })
    .await;
    assert_eq!(stats[&refusing.id()].handed, 0, "{stats:?}");
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_errors_reach_the_worker_typed() {
    // Taken by someone else: EADDRINUSE.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let mut s = settings("listen-report", 0);
    s.scheduling_policy(PolicyKind::RoundRobin);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    cluster
        .fork_with_env([("HELPER_ADDR", busy.as_str())])
        .unwrap();
    // Not an address of this host (TEST-NET-1): EADDRNOTAVAIL. Only a bind,
    // no traffic.
    cluster
        .fork_with_env([("HELPER_ADDR", "192.0.2.1:8080")])
        .unwrap();
    let mut reports = BTreeSet::new();
    until(&mut cluster, |ev| {
        if let Event::Message(m) = ev
            && let Msg::Text(t) = m.value()
        {
            reports.insert(t.clone());
        }
        reports.len() == 2
    })
    .await;
    assert_eq!(
        reports,
        BTreeSet::from([
            "error AddrInUse AddrInUse".to_string(),
            "error AddrNotAvailable AddrNotAvailable".to_string(),
        ])
    );
    drop(taken);
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_reload_under_load_fails_no_connection() {
    let (cluster, addr, _slots) = listening_cluster("serve", 2, PolicyKind::RoundRobin).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut ids = BTreeSet::new();
            // Bounded in count as well as by the reload.
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let (id, conn) = ask(addr, None).await;
                drop(conn);
                ids.insert(id);
            }
            ids
        })
    };
    tokio::time::timeout(BOUND, cluster.reload())
        .await
        .expect("reload timed out")
        .expect("reload failed");
    let new: BTreeSet<u64> = cluster.workers().keys().map(|w| w.0).collect();
    // Serve a few more from the replacements, then stop.
    for _ in 0..4 {
        let (id, _conn) = ask(addr, None).await;
        assert!(new.contains(&id), "{id} answered after the reload: {new:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ids = tokio::time::timeout(BOUND, client)
        .await
        .expect("the client hung")
        .expect("a connection failed during the reload");
    assert!(!ids.is_empty());
    support::shutdown(cluster).await;
}

#[test]
fn an_unknown_policy_in_the_environment_is_a_typed_error() {
    let out = std::process::Command::new(support::HELPER)
        .args(["primary", "1"])
        .env("CLUSTER_SCHED_POLICY", "fastest")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SchedulingPolicy"), "{err}");
    assert!(err.contains("fastest"), "{err}");
}

/// `Cluster::new` reads no variable: the environment reaches the settings
/// only through `Settings::from_env` (which the helper's other primaries
/// call). A primary of `Settings::new()` ignores a policy it would refuse
/// and a heartbeat it would turn off.
#[test]
fn cluster_new_reads_no_environment_variable() {
    let out = std::process::Command::new(support::HELPER)
        .arg("bare-primary")
        .env("CLUSTER_SCHED_POLICY", "fastest")
        .env("CLUSTER_HEARTBEAT_TIMEOUT_MS", "0")
        .env("WORKERS", "7")
        .output()
        .unwrap();
    let settings = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(settings.contains("scheduling: None"), "{settings}");
    assert!(settings.contains("heartbeat: Some("), "{settings}");
    assert!(!settings.contains("n_workers: 7,"), "{settings}");
}

#[test]
fn listeners_and_connections_move_between_tasks() {
    fn send_sync<T: Send + Sync + Unpin + 'static>() {}
    fn send<T: Send + Unpin + 'static>() {}
    send_sync::<cluster_core::Connection>();
    send::<cluster_core::Listener>();
    send_sync::<cluster_core::DrainSignal>();
}

/// The state letter of `/proc/<pid>/stat`, `None` once the process is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    stat.rsplit_once(") ")?.1.chars().next()
}

/// The readers and accept loops run on the primary's network thread, which
/// outlives the user's runtime: a runtime shut down without a graceful end
/// must still close the listener, and dropping the cluster then closes the
/// workers' channels, so they exit.
#[test]
fn a_runtime_ended_without_shutdown_closes_the_listener_and_the_channels() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cluster, addr, _) = rt.block_on(listening_cluster("serve", 2, PolicyKind::RoundRobin));
    let pids: Vec<u32> = cluster.workers().values().map(|w| w.pid()).collect();
    assert_eq!(pids.len(), 2);
    // The supervisor and the drivers go with the runtime, untouched.
    drop(rt);
    let deadline = std::time::Instant::now() + BOUND;
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener stayed open"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(cluster);
    // Nobody reaps them any more: an exited worker stays a zombie.
    for pid in pids {
        while !matches!(proc_state(pid), None | Some('Z')) {
            assert!(
                std::time::Instant::now() < deadline,
                "worker {pid} outlived its channel"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
