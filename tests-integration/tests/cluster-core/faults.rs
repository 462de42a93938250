//! Faults from outside: a hung (SIGSTOPped) worker, a kill storm, and a
//! cluster whose every slot gives up. Real processes, real signals, loopback
//! only; every load bounded in count and in time, nothing timed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use cluster_core::{
    Backoff, Cluster, CrashLoopLimit, Event, PolicyKind, SlotId, WorkerId, WorkerState,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::{self, BOUND, Msg, settings, until};

/// What a client of a `serve` worker saw on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The worker's id: served.
    Answered(u64),
    /// The connection was refused (nothing listens).
    Refused,
    /// Accepted, then closed (or reset) without an answer.
    Empty,
}

/// One connection: connect, read the worker's id line, close. Bounded:
/// a connection that is neither answered nor ended within [`BOUND`]
/// fails the test (a hung client).
async fn visit(addr: SocketAddr) -> Outcome {
    tokio::time::timeout(BOUND, async {
        let Ok(stream) = TcpStream::connect(addr).await else {
            return Outcome::Refused;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(_) => line
                .trim()
                .parse()
                .map_or(Outcome::Empty, Outcome::Answered),
            Err(_) => Outcome::Empty,
        }
    })
    .await
    .expect("a connection hung: neither answered nor ended in time")
}

/// The test process's open descriptors (it is the primary).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A round-robin cluster of `n` `serve` workers on an ephemeral loopback
/// port, once every worker listens: the address and the workers by slot.
async fn serving(
    s: cluster_core::Settings,
    n: usize,
) -> (Cluster<Msg>, SocketAddr, BTreeMap<SlotId, WorkerId>) {
    let (cluster, addr) = support::serving(s, n).await;
    let slots = cluster
        .workers()
        .values()
        .map(|w| (w.slot(), w.id()))
        .collect();
    (cluster, addr, slots)
}

/// Run `n` connections, `concurrency` at a time, each one answered (or the
/// test fails): how many each worker answered, and the most descriptors
/// the process (the primary) had open after any of them.
async fn load(addr: SocketAddr, n: usize, concurrency: usize) -> (BTreeMap<u64, usize>, usize) {
    let mut served = BTreeMap::<u64, usize>::new();
    let mut peak = 0;
    let mut clients = JoinSet::new();
    let mut started = 0;
    while started < n || !clients.is_empty() {
        while started < n && clients.len() < concurrency {
            clients.spawn(visit(addr));
            started += 1;
        }
        let outcome = clients.join_next().await.unwrap().unwrap();
        peak = peak.max(open_fds());
        match outcome {
            Outcome::Answered(id) => *served.entry(id).or_default() += 1,
            other => panic!("a connection was not served: {other:?}"),
        }
    }
    (served, peak)
}

/// Round-robin, 4 workers, one SIGSTOPped and the heartbeat off (so only
/// the hand-off bounds protect its clients): every connection of a
/// bounded load is answered by the others (at most the stopped worker's
/// window is handed to it, and taken back at the deadline), the primary's
/// descriptors stay under the bound throughout; continued, the worker
/// refuses what came too late and takes connections again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_delays_no_client_and_bounds_the_primary() {
    const WINDOW: u32 = 2;
    const CONCURRENCY: usize = 8;
    let mut s = settings("serve", 4);
    s.handoff_window(WINDOW)
        .handoff_deadline(Duration::from_millis(200))
        .no_heartbeat();
    let (cluster, addr, slots) = serving(s, 4).await;
    let base = open_fds();
    let stopped = slots[&SlotId::new(1)];
    let pid = Pid::from_raw(cluster.worker(stopped).unwrap().pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();

    // The bound of docs/cluster.md: per worker twice its window (pending,
    // and as many parked), each one descriptor and one more while its
    // frame is queued; one accept batch; and the clients of this very
    // process.
    let bound = base + 4 * 4 * WINDOW as usize + 64 + CONCURRENCY + 16;
    let (served, peak) = load(addr, 400, CONCURRENCY).await;
    eprintln!("descriptors: base {base}, peak {peak}, bound {bound}");
    assert!(!served.contains_key(&stopped.0), "{served:?}");
    assert_eq!(served.values().sum::<usize>(), 400);
    assert!(
        peak <= bound,
        "the primary held {peak} descriptors, over its bound {bound} (base {base})"
    );

    // Continued: it refuses the connections that reached it too late (the
    // others served them), which shows it alive, and it serves again.
    kill(pid, Signal::SIGCONT).unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        match visit(addr).await {
            Outcome::Answered(id) => *seen.entry(id).or_insert(0) += 1,
            other => panic!("not served after SIGCONT: {other:?}"),
        }
        if seen.contains_key(&stopped.0) {
            break;
        }
    }
    assert!(seen.contains_key(&stopped.0), "{seen:?}");
    support::shutdown(cluster).await;
}

/// A SIGSTOPped worker under the default liveness check (short here): it
/// is reported unresponsive, killed and replaced, and the connections it
/// held unacknowledged go to the others at once (the hand-off deadline is
/// a minute here, so only that re-routing can serve them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_is_reported_unresponsive_and_replaced() {
    let mut s = settings("serve", 4);
    s.handoff_window(2)
        .handoff_deadline(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(100), Duration::from_secs(1));
    let (mut cluster, addr, slots) = serving(s, 4).await;
    let stopped = slots[&SlotId::new(1)];
    let pid = cluster.worker(stopped).unwrap().pid();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();

    let (served, _) = load(addr, 40, 8).await;
    assert!(!served.contains_key(&stopped.0), "{served:?}");

    let events = until(
        &mut cluster,
        |ev| matches!(ev, Event::Listening { worker, .. } if *worker > stopped),
    )
    .await;
    support::assert_in_order(
        &events,
        &[
            &format!("unresponsive {stopped}"),
            &format!("exit {stopped} signal SIGKILL after_disconnect=false"),
        ],
    );
    let briefs: Vec<_> = events.iter().map(support::brief).collect();
    assert!(
        !briefs.iter().any(|b| b.starts_with("gave up")),
        "{briefs:?}"
    );
    let (again, _) = load(addr, 8, 1).await;
    assert_eq!(again.len(), 4, "every slot serves again: {again:?}");
    support::shutdown(cluster).await;
}

/// A worker (sometimes every worker) SIGKILLed every few hundred
/// milliseconds under a bounded load: the service keeps serving, no
/// connection is accepted and dropped for lack of a worker (a client waits
/// in the backlog instead), only a connection inside a killed worker may
/// fail, and no slot gives up although the crash-loop limit is tight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_keeps_the_service_up() {
    const ROUNDS: usize = 16;
    const CONCURRENCY: usize = 4;
    const MAX_CONNECTIONS: usize = 20_000;
    let mut s = settings("serve", 4);
    s.crash_loop_limit(CrashLoopLimit {
        max_restarts: 2,
        window: Duration::from_secs(60),
    })
    .backoff(Backoff {
        initial: Duration::from_millis(20),
        factor: 2.0,
        cap: Duration::from_millis(200),
        min_uptime: Duration::from_secs(1),
    });
    let (mut cluster, addr, _) = serving(s, 4).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut clients = JoinSet::new();
        loop {
            while !*stopped.borrow()
                && clients.len() < CONCURRENCY
                && outcomes.len() + clients.len() < MAX_CONNECTIONS
            {
                clients.spawn(visit(addr));
            }
            match clients.join_next().await {
                Some(done) => outcomes.push(done.unwrap()),
                None => return outcomes,
            }
        }
    });

    let mut kills = 0;
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Killed from outside once they serve (a worker killed while it
        // starts is a failed start, which the limit is for). Every fourth
        // round kills them all: for a moment no worker can take a
        // connection.
        let live: Vec<_> = cluster
            .workers()
            .into_values()
            .filter(|w| w.state() == WorkerState::Listening)
            .collect();
        let victims: Vec<_> = if round % 4 == 3 {
            live
        } else {
            live.into_iter().skip(round % 3).take(1).collect()
        };
        for w in victims {
            if kill(Pid::from_raw(w.pid() as i32), Signal::SIGKILL).is_ok() {
                kills += 1;
            }
        }
    }
    stop.send_replace(true);
    let outcomes = tokio::time::timeout(BOUND, load)
        .await
        .expect("the load ends")
        .unwrap();
    let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
    let answered = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Answered(_)))
        .count();
    let (empty, refused) = (count(Outcome::Empty), count(Outcome::Refused));
    assert!(kills >= ROUNDS, "{kills} kills");
    assert!(answered > 0, "{outcomes:?}");
    assert_eq!(refused, 0, "the listener stays open under a kill storm");
    // Only a connection a killed worker had taken may end unanswered.
    assert!(
        empty <= kills,
        "{empty} connections ended unanswered for {kills} kills ({answered} answered)"
    );

    // Every slot serves again once the storm is over, none gave up.
    let mut seen = Vec::new();
    loop {
        let listening = cluster
            .workers()
            .values()
            .filter(|w| w.state() == WorkerState::Listening)
            .count();
        if listening == 4 {
            break;
        }
        seen.push(support::brief(&support::next(&mut cluster).await));
    }
    for _ in 0..8 {
        let outcome = visit(addr).await;
        assert!(matches!(outcome, Outcome::Answered(_)), "{outcome:?}");
    }
    let rest = support::shutdown(cluster).await;
    seen.extend(rest.iter().map(support::brief));
    assert!(
        !seen.iter().any(|b| b.starts_with("gave up")),
        "a slot gave up under a kill storm: {seen:?}"
    );
}

/// Workers that listen, then cannot (their second port is taken): every
/// slot gives up, the cluster says so (a last event, `has_given_up`, the
/// event stream ends), and the listener it had bound is closed: clients
/// are refused, not left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_slot_gives_up_the_cluster_says_so_and_refuses_clients() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = settings("listen-twice", 2);
    s.env("HELPER_ADDR", "127.0.0.1:0")
        .env("HELPER_ADDR2", taken.local_addr().unwrap().to_string())
        .scheduling_policy(PolicyKind::RoundRobin)
        .crash_loop_limit(CrashLoopLimit {
            max_restarts: 1,
            window: Duration::from_secs(60),
        });
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    cluster.start().unwrap();
    let mut bound = None;
    let events = until(&mut cluster, |ev| {
        if let Event::Listening { addr, .. } = ev {
            bound = Some(*addr);
        }
        matches!(ev, Event::AllSlotsGaveUp)
    })
    .await;
    let briefs: Vec<_> = events.iter().map(support::brief).collect();
    assert_eq!(
        briefs.iter().filter(|b| b.starts_with("gave up")).count(),
        2,
        "{briefs:?}"
    );
    assert!(cluster.has_given_up());
    assert!(cluster.workers().is_empty());
    // The last event: the stream ends.
    let end = tokio::time::timeout(BOUND, cluster.next_event())
        .await
        .expect("the event stream ends");
    assert!(end.is_none(), "{end:?}");
    // The listener was closed: a client is refused (the close is done by
    // the network thread; wait for it, bounded).
    let addr = bound.expect("the first address was bound");
    let refused = tokio::time::timeout(BOUND, async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "clients of {addr} are still accepted");
    support::shutdown_with_no_more_events(cluster).await;
}

/// The demo on a port already taken: its workers cannot start, every slot
/// gives up, and the demo exits non-zero on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_exits_non_zero_when_no_worker_can_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(crate::demo::example_binary("hello-cluster"))
        .env("PORT", port.to_string())
        .env("WORKERS", "2")
        .env("CLUSTER_CRASH_LOOP_LIMIT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let status = tokio::time::timeout(BOUND, async {
        let _ = stdout.read_to_string(&mut out).await;
        child.wait().await
    })
    .await
    .expect("the demo did not exit on its own")
    .unwrap();
    assert!(!status.success(), "{status:?}\n{out}");
    assert!(out.contains("every slot gave up"), "{out}");
}
