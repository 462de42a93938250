//! Faults from outside: a hung (SIGSTOPped) worker, a killed one, a kill
//! storm, restarts while clients connect, and a cluster whose every slot
//! gives up. Each fault that exists for TCP runs for every kind of stream
//! listener (`support::KINDS`: a TCP port, a Unix-domain socket, and both
//! given to `Cluster::inherit_socket`). Real processes, real signals,
//! loopback only; every load bounded in count and in time, nothing timed.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use cluster_core::{
    Backoff, Cluster, CrashLoopLimit, Event, PolicyKind, RestartPolicy, SlotId, WorkerId,
    WorkerState,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::{self, BOUND, KINDS, Kind, Msg, Target, settings, until, wait_stopped};

/// What a client of a `serve` worker saw on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The worker's id: served.
    Answered(u64),
    /// The connection was refused (nothing listens, or no socket file).
    Refused,
    /// Accepted, then closed (or reset) without an answer.
    Empty,
    /// Neither answered nor ended within the bound.
    Hung,
}

/// One connection: connect, read the worker's id line, close; [`Outcome::Hung`]
/// if nothing happens within `within`.
async fn visit_within(target: &Target, within: Duration) -> Outcome {
    tokio::time::timeout(within, async {
        let Ok(stream) = target.connect().await else {
            return Outcome::Refused;
        };
        read_answer(stream).await
    })
    .await
    .unwrap_or(Outcome::Hung)
}

/// Read the worker's id line on a connection made already.
async fn read_answer(stream: Box<dyn support::Io>) -> Outcome {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(_) => line
            .trim()
            .parse()
            .map_or(Outcome::Empty, Outcome::Answered),
        Err(_) => Outcome::Empty,
    }
}

/// One connection, bounded: a connection that is neither answered nor
/// ended within [`BOUND`] fails the test (a hung client).
async fn visit(target: &Target) -> Outcome {
    let outcome = visit_within(target, BOUND).await;
    assert_ne!(
        outcome,
        Outcome::Hung,
        "a connection to {target:?} hung: neither answered nor ended in time"
    );
    outcome
}

/// The test process's open descriptors (it is the primary).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A cluster of `n` `serve` workers on a new listener of `kind`, once
/// every worker listens: where clients connect, and the workers by slot.
async fn serving(
    s: cluster_core::Settings,
    kind: Kind,
    n: usize,
) -> (Cluster<Msg>, Target, BTreeMap<SlotId, WorkerId>) {
    let (cluster, target) = support::serving_on(s, kind, n).await;
    let slots = cluster
        .workers()
        .values()
        .map(|w| (w.slot(), w.id()))
        .collect();
    (cluster, target, slots)
}

/// Run `n` connections, `concurrency` at a time, each one answered (or the
/// test fails): how many each worker answered, and the most descriptors
/// the process (the primary) had open after any of them.
async fn load(target: &Target, n: usize, concurrency: usize) -> (BTreeMap<u64, usize>, usize) {
    let mut served = BTreeMap::<u64, usize>::new();
    let mut peak = 0;
    let mut clients = JoinSet::new();
    let mut started = 0;
    while started < n || !clients.is_empty() {
        while started < n && clients.len() < concurrency {
            let target = target.clone();
            clients.spawn(async move { visit(&target).await });
            started += 1;
        }
        let outcome = clients.join_next().await.unwrap().unwrap();
        peak = peak.max(open_fds());
        match outcome {
            Outcome::Answered(id) => *served.entry(id).or_default() += 1,
            other => panic!("a connection to {target:?} was not served: {other:?}"),
        }
    }
    (served, peak)
}

/// Shut down; the socket file of a Unix-domain listener the primary bound
/// goes with it, one given to the cluster stays.
async fn shutdown(cluster: Cluster<Msg>, kind: Kind, target: &Target) {
    support::shutdown(cluster).await;
    if let Some(path) = target.path() {
        assert_eq!(
            path.exists(),
            kind == Kind::InheritedUnix,
            "{kind:?}: the socket file after the shutdown"
        );
        let _ = std::fs::remove_file(path);
    }
}

/// Round-robin, 4 workers, one SIGSTOPped and the heartbeat off (so only
/// the hand-off bounds protect its clients): every connection of a
/// bounded load is answered by the others (at most the stopped worker's
/// window is handed to it, and taken back at the deadline), the primary's
/// descriptors stay under the bound throughout; continued, the worker
/// refuses what came too late and takes connections again. Every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_delays_no_client_and_bounds_the_primary() {
    for kind in KINDS {
        a_stopped_worker_delays_no_client(kind).await;
    }
}

async fn a_stopped_worker_delays_no_client(kind: Kind) {
    const WINDOW: u32 = 2;
    const CONCURRENCY: usize = 8;
    let mut s = settings("serve", 4);
    s.handoff_window(WINDOW)
        .handoff_deadline(Duration::from_millis(200))
        .no_heartbeat();
    let (cluster, target, slots) = serving(s, kind, 4).await;
    let base = open_fds();
    let stopped = slots[&SlotId::new(1)];
    let pid = Pid::from_raw(cluster.worker(stopped).unwrap().pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();

    // The bound of docs/cluster.md: per worker twice its window (pending,
    // and as many parked), each one descriptor and one more while its
    // frame is queued; one accept batch; and the clients of this very
    // process.
    let bound = base + 4 * 4 * WINDOW as usize + 64 + CONCURRENCY + 16;
    let (served, peak) = load(&target, 400, CONCURRENCY).await;
    eprintln!("{kind:?}: descriptors: base {base}, peak {peak}, bound {bound}");
    assert!(!served.contains_key(&stopped.0), "{kind:?}: {served:?}");
    assert_eq!(served.values().sum::<usize>(), 400);
    assert!(
        peak <= bound,
        "{kind:?}: the primary held {peak} descriptors, over its bound {bound} (base {base})"
    );

    // Continued: it refuses the connections that reached it too late (the
    // others served them), which shows it alive, and it serves again.
    kill(pid, Signal::SIGCONT).unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        match visit(&target).await {
            Outcome::Answered(id) => *seen.entry(id).or_insert(0) += 1,
            other => panic!("{kind:?}: not served after SIGCONT: {other:?}"),
        }
        if seen.contains_key(&stopped.0) {
            break;
        }
    }
    assert!(seen.contains_key(&stopped.0), "{kind:?}: {seen:?}");
    shutdown(cluster, kind, &target).await;
}

/// A SIGSTOPped worker under the default liveness check (short here): it
/// is reported unresponsive, killed and replaced, and the connections it
/// held unacknowledged go to the others at once (the hand-off deadline is
/// a minute here, so only that re-routing can serve them). Every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_is_reported_unresponsive_and_replaced() {
    for kind in KINDS {
        a_stopped_worker_is_replaced(kind).await;
    }
}

async fn a_stopped_worker_is_replaced(kind: Kind) {
    let mut s = settings("serve", 4);
    s.handoff_window(2)
        .handoff_deadline(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(100), Duration::from_secs(1));
    let (mut cluster, target, slots) = serving(s, kind, 4).await;
    let stopped = slots[&SlotId::new(1)];
    let pid = cluster.worker(stopped).unwrap().pid();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();

    let (served, _) = load(&target, 40, 8).await;
    assert!(!served.contains_key(&stopped.0), "{kind:?}: {served:?}");

    let events = until(&mut cluster, |ev| {
        matches!(ev, Event::Listening { worker, .. } | Event::ListeningOn { worker, .. } if *worker > stopped)
    })
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
        "{kind:?}: {briefs:?}"
    );
    let (again, _) = load(&target, 8, 1).await;
    assert_eq!(
        again.len(),
        4,
        "{kind:?}: every slot serves again: {again:?}"
    );
    shutdown(cluster, kind, &target).await;
}

/// Two workers, one SIGSTOPped before any connection exists (it never
/// acknowledges what is handed to it), ten clients at once: round-robin
/// queues half of them for the stopped worker; once it is SIGKILLed, those
/// go to the other worker and every client is answered. Every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_queued_for_a_killed_worker_are_answered_by_another() {
    for kind in KINDS {
        queued_for_a_killed_worker(kind).await;
    }
}

async fn queued_for_a_killed_worker(kind: Kind) {
    let mut s = settings("serve", 2);
    s.restart(RestartPolicy::Never)
        .handoff_deadline(Duration::from_secs(60))
        .no_heartbeat();
    let (cluster, target, slots) = serving(s, kind, 2).await;
    let good = slots[&SlotId::new(0)];
    let stalled = cluster.worker(slots[&SlotId::new(1)]).unwrap();
    kill(Pid::from_raw(stalled.pid() as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(stalled.pid()).await;
    let mut clients = JoinSet::new();
    for _ in 0..10 {
        let target = target.clone();
        clients.spawn(async move { visit(&target).await });
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(clients.join_next().await.unwrap().unwrap());
    }
    stalled.kill(cluster_core::Signal::SIGKILL).unwrap();
    while let Some(outcome) = clients.join_next().await {
        got.push(outcome.unwrap());
    }
    assert!(
        got.iter().all(|o| *o == Outcome::Answered(good.0)),
        "{kind:?}: {got:?}"
    );
    shutdown(cluster, kind, &target).await;
}

/// How many restarts [`clients_connecting_during_restarts_are_answered`]
/// makes per kind, and how many clients connect during each.
const RESTARTS: usize = 50;
const CLIENTS_PER_RESTART: usize = 4;

/// One worker, SIGKILLed [`RESTARTS`] times; after each kill (once the
/// primary saw the exit, before the replacement listens) clients connect:
/// as on TCP, where the port stays open through a restart, every one waits
/// and is answered by the replacement: none refused, none left hanging.
/// Every kind (a Unix-domain socket stays bound for the cluster's life; the
/// replacement of an inherited socket's worker is woken like any other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connecting_during_restarts_are_answered() {
    for kind in KINDS {
        restarts(kind).await;
    }
}

async fn restarts(kind: Kind) {
    let mut s = settings("serve", 1);
    // The restart waits a little: the clients connect while no worker
    // listens. Killed once listening, so no run counts as a failed start.
    s.backoff(Backoff {
        initial: Duration::from_millis(20),
        factor: 1.0,
        cap: Duration::from_millis(20),
        min_uptime: Duration::from_secs(3600),
    });
    let (mut cluster, target, slots) = serving(s, kind, 1).await;
    let mut current = slots[&SlotId::new(0)];
    let mut outcomes = BTreeMap::<&'static str, usize>::new();
    let mut stalled = Vec::new();
    for restart in 0..RESTARTS {
        let pid = cluster.worker(current).unwrap().pid();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        until(
            &mut cluster,
            |ev| matches!(ev, Event::Exit { worker, .. } if *worker == current),
        )
        .await;
        let mut clients = JoinSet::new();
        for _ in 0..CLIENTS_PER_RESTART {
            let target = target.clone();
            clients.spawn(async move { visit_within(&target, BOUND).await });
        }
        let events = until(&mut cluster, |ev| {
            matches!(ev, Event::Listening { .. } | Event::ListeningOn { .. })
        })
        .await;
        let next = events
            .iter()
            .find_map(|ev| match ev {
                Event::Fork { worker, .. } => Some(*worker),
                _ => None,
            })
            .expect("a replacement");
        while let Some(outcome) = clients.join_next().await {
            let outcome = outcome.unwrap();
            let what = match outcome {
                Outcome::Answered(id) if id == next.0 => "answered",
                Outcome::Answered(_) => "answered by another",
                Outcome::Refused => "refused",
                Outcome::Empty => "empty",
                Outcome::Hung => "hung",
            };
            *outcomes.entry(what).or_default() += 1;
            if outcome == Outcome::Hung {
                stalled.push(restart);
            }
        }
        current = next;
        if !stalled.is_empty() {
            break;
        }
    }
    eprintln!("{kind:?}: {outcomes:?} over {RESTARTS} restarts, stalled at {stalled:?}");
    assert_eq!(
        outcomes.keys().copied().collect::<Vec<_>>(),
        ["answered"],
        "{kind:?}: {outcomes:?} (stalled at restart {stalled:?})"
    );
    assert_eq!(outcomes["answered"], RESTARTS * CLIENTS_PER_RESTART);
    shutdown(cluster, kind, &target).await;
}

/// The only worker SIGSTOPped, a client connects (handed to the stopped
/// worker, or waiting), then the worker is SIGKILLed: its replacement
/// answers the client, as on TCP. Every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_stopped_then_killed_worker_is_answered_by_its_replacement() {
    for kind in KINDS {
        stopped_then_killed(kind).await;
    }
}

async fn stopped_then_killed(kind: Kind) {
    let mut s = settings("serve", 1);
    s.handoff_deadline(Duration::from_secs(60)).no_heartbeat();
    let (mut cluster, target, slots) = serving(s, kind, 1).await;
    let stopped = slots[&SlotId::new(0)];
    let pid = cluster.worker(stopped).unwrap().pid();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(pid).await;
    // Connected (in the backlog, or accepted and handed to the stopped
    // worker): it waits, nothing answers it yet.
    let stream = tokio::time::timeout(BOUND, target.connect())
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("{kind:?}: refused: {e}"));
    let client = tokio::spawn(async move {
        tokio::time::timeout(BOUND, read_answer(stream))
            .await
            .unwrap_or(Outcome::Hung)
    });
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let events = until(&mut cluster, |ev| {
        matches!(ev, Event::Listening { worker, .. } | Event::ListeningOn { worker, .. } if *worker != stopped)
    })
    .await;
    let next = events
        .iter()
        .find_map(|ev| match ev {
            Event::Fork { worker, .. } => Some(*worker),
            _ => None,
        })
        .expect("a replacement");
    let outcome = client.await.unwrap();
    assert_eq!(outcome, Outcome::Answered(next.0), "{kind:?}");
    shutdown(cluster, kind, &target).await;
}

/// A worker (sometimes every worker) SIGKILLed every few hundred
/// milliseconds under a bounded load: the service keeps serving, no
/// connection is accepted and dropped for lack of a worker (a client waits
/// in the backlog instead), only a connection inside a killed worker may
/// fail, and no slot gives up although the crash-loop limit is tight.
/// Every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_keeps_the_service_up() {
    for kind in KINDS {
        kill_storm(kind).await;
    }
}

async fn kill_storm(kind: Kind) {
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
    let (mut cluster, target, _) = serving(s, kind, 4).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = {
        let target = target.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut clients = JoinSet::new();
            loop {
                while !*stopped.borrow()
                    && clients.len() < CONCURRENCY
                    && outcomes.len() + clients.len() < MAX_CONNECTIONS
                {
                    let target = target.clone();
                    clients.spawn(async move { visit(&target).await });
                }
                match clients.join_next().await {
                    Some(done) => outcomes.push(done.unwrap()),
                    None => return outcomes,
                }
            }
        })
    };

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
    assert!(kills >= ROUNDS, "{kind:?}: {kills} kills");
    assert!(answered > 0, "{kind:?}: {outcomes:?}");
    assert_eq!(
        refused, 0,
        "{kind:?}: the listener stays open under a kill storm"
    );
    // Only a connection a killed worker had taken may end unanswered.
    assert!(
        empty <= kills,
        "{kind:?}: {empty} connections ended unanswered for {kills} kills ({answered} answered)"
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
        let outcome = visit(&target).await;
        assert!(
            matches!(outcome, Outcome::Answered(_)),
            "{kind:?}: {outcome:?}"
        );
    }
    let rest = support::shutdown(cluster).await;
    seen.extend(rest.iter().map(support::brief));
    assert!(
        !seen.iter().any(|b| b.starts_with("gave up")),
        "{kind:?}: a slot gave up under a kill storm: {seen:?}"
    );
    if let Some(path) = target.path() {
        let _ = std::fs::remove_file(path);
    }
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
