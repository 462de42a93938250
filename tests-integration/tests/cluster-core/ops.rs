//! Operating a cluster (issue 14): the `tracing` events of the lifecycle,
//! worker output forwarded raw or wrapped as JSON, the stats snapshot,
//! recycling by memory and by requests (with jitter), and scaling at run
//! time — the last three under a bounded load that must not fail a single
//! connection. Real processes, loopback only; every wait bounded, nothing
//! timed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{Cluster, Event, RecycleReason, SlotId, WorkerId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::support::{self, BOUND, HELPER, Msg, serving, settings, until, until_n};

/// One recorded tracing event: its fields (the text as `message`).
type Record = BTreeMap<String, String>;

/// A layer that records cluster-core's events.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Record>>>);

struct Fields(Record);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "cluster_core" {
            return;
        }
        let mut fields = Fields(Record::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

/// Fork → online → listening → kill → restart scheduled → fork, seen by a
/// subscriber with their fields, in order (the supervisor runs on this
/// test's only thread, where the subscriber is the default).
#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_sees_the_lifecycle_with_its_fields_in_order() {
    let recorder = Recorder::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let mut cluster = Cluster::<Msg>::new(settings("listen", 1)).unwrap();
    let first = cluster.start().unwrap().remove(0);
    let pid = first.pid().to_string();
    until(&mut cluster, |ev| matches!(ev, Event::Listening { .. })).await;
    first.kill(cluster_core::Signal::SIGKILL).unwrap();
    until(
        &mut cluster,
        |ev| matches!(ev, Event::Fork { worker, .. } if *worker != first.id()),
    )
    .await;
    let seen = recorder.0.lock().unwrap().clone();
    let want: [(&str, &[(&str, &str)]); 6] = [
        (
            "worker forked",
            &[("worker", "1"), ("slot", "0"), ("pid", &pid)],
        ),
        ("worker online", &[("worker", "1"), ("pid", &pid)]),
        ("worker listening", &[("worker", "1"), ("pid", &pid)]),
        (
            "worker exited",
            &[
                ("worker", "1"),
                ("slot", "0"),
                ("pid", &pid),
                ("signal", "9"),
            ],
        ),
        ("restart scheduled", &[("slot", "0")]),
        ("worker forked", &[("worker", "2"), ("slot", "0")]),
    ];
    let mut at = 0;
    for (message, fields) in want {
        let found = seen[at..].iter().position(|r| {
            r.get("message").map(String::as_str) == Some(message)
                && fields
                    .iter()
                    .all(|(k, v)| r.get(*k).map(String::as_str) == Some(*v))
        });
        let Some(i) = found else {
            panic!("no {message:?} with {fields:?} after #{at} in {seen:#?}");
        };
        at += i + 1;
    }
    let restart = seen
        .iter()
        .find(|r| r["message"] == "restart scheduled")
        .unwrap();
    assert!(restart.contains_key("delay_ms"), "{restart:?}");
    support::shutdown(cluster).await;
}

/// The `json-lines` worker's line `n` (the helper's `json_line`).
fn json_line(id: u64, n: u64) -> String {
    format!(
        "{{\"w\":{id},\"n\":{n},\"pad\":\"{}\"}}",
        "x".repeat((n * 37 % 3000) as usize)
    )
}

/// The number after `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Two `json-lines` workers under the helper primary with `HELPER_OUTPUT`
/// set to `format`: every line of its stdout is one worker's line, whole,
/// framed by `frame`, and each worker's lines come in order.
async fn forwarded_lines_stay_whole(format: &str, frame: fn(&str) -> String) {
    const LINES: u64 = 1500;
    let mut child = tokio::process::Command::new(HELPER)
        .args(["supervise", "2"])
        .env("HELPER_WORKER_MODE", "json-lines")
        .env("HELPER_LINES", LINES.to_string())
        .env("HELPER_OUTPUT", format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = BTreeMap::<u64, u64>::new();
    while next.len() < 2 || next.values().any(|n| *n < LINES) {
        let line = tokio::time::timeout(BOUND, lines.next_line())
            .await
            .expect("the forwarded lines stopped")
            .unwrap()
            .expect("the primary's stdout ended");
        let id = number_after(&line, "\"w\\\":")
            .or_else(|| number_after(&line, "\"w\":"))
            .unwrap_or_else(|| panic!("not a worker line: {line:?}"));
        let n = number_after(&line, "\"n\\\":")
            .or_else(|| number_after(&line, "\"n\":"))
            .unwrap_or_else(|| panic!("not a worker line: {line:?}"));
        assert_eq!(line, frame(&json_line(id, n)), "worker {id} line {n}");
        let expected = next.entry(id).or_default();
        assert_eq!(n, *expected, "worker {id}'s lines out of order");
        *expected += 1;
    }
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_forwarding_keeps_json_lines_byte_for_byte() {
    forwarded_lines_stay_whole("raw", str::to_owned).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_forwarding_wraps_each_line_as_a_field() {
    forwarded_lines_stay_whole("json", |line| {
        // The helper's lines hold no other character to escape.
        let worker = number_after(line, "\"w\":").unwrap();
        format!(
            "{{\"worker\":{worker},\"stream\":\"stdout\",\"line\":\"{}\"}}",
            line.replace('"', "\\\"")
        )
    })
    .await;
}

/// One connection: the worker's id, or why not.
async fn visit(addr: SocketAddr) -> Result<u64, String> {
    tokio::time::timeout(BOUND, async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        line.trim().parse().map_err(|_| format!("answer {line:?}"))
    })
    .await
    .unwrap_or_else(|_| Err("hung".into()))
}

/// A load of 4 concurrent clients until `stop` (and at least `min`
/// connections), at most `max`: connections served per worker, failures.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(BTreeMap<u64, usize>, Vec<String>)>,
}

impl Load {
    fn start(addr: SocketAddr, min: usize, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut served = BTreeMap::new();
            let mut failed = Vec::new();
            let mut clients = JoinSet::new();
            let mut started = 0;
            loop {
                let more = started < max && (started < min || !flag.load(Ordering::Relaxed));
                while more && clients.len() < 4 {
                    clients.spawn(visit(addr));
                    started += 1;
                }
                match clients.join_next().await {
                    Some(Ok(Ok(id))) => *served.entry(id).or_insert(0) += 1,
                    Some(Ok(Err(e))) => failed.push(e),
                    Some(Err(e)) => failed.push(e.to_string()),
                    None => break,
                }
                if !(started < max && (started < min || !flag.load(Ordering::Relaxed)))
                    && clients.is_empty()
                {
                    break;
                }
            }
            (served, failed)
        });
        Load { stop, task }
    }

    async fn finish(self) -> BTreeMap<u64, usize> {
        self.stop.store(true, Ordering::Relaxed);
        let (served, failed) = tokio::time::timeout(BOUND * 3, self.task)
            .await
            .expect("the load did not end")
            .unwrap();
        assert!(
            failed.is_empty(),
            "failed connections: {failed:?} (served {served:?})"
        );
        served
    }
}

/// Poll the snapshot until `pred` holds for worker `id` (bounded: the
/// counters have no event to await).
async fn stats_until(
    cluster: &Cluster<Msg>,
    id: WorkerId,
    what: &str,
    pred: impl Fn(&cluster_core::stats::WorkerStats) -> bool,
) -> cluster_core::stats::WorkerStats {
    for _ in 0..2000 {
        let stats = cluster.stats().await;
        if let Some(w) = stats.workers.iter().find(|w| w.id == id)
            && pred(w)
        {
            return w.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: never seen in {:#?}", cluster.stats().await);
}

/// The snapshot follows what the test does: a held connection is handed
/// and open, then closed; 64 MiB allocated shows in the resident memory;
/// the message is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_follow_connections_and_memory() {
    let (mut cluster, addr) = serving(settings("serve-alloc", 1), 1).await;
    let stats = cluster.stats().await;
    assert_eq!(stats.slots, 1);
    let w = stats.workers[0].clone();
    assert_eq!(
        (
            w.connections.handed,
            w.connections.open,
            w.messages,
            w.restarts
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(w.state, cluster_core::WorkerState::Listening);
    assert!(w.cpu_time.is_some(), "{w:?}");
    let rss0 = w.rss_bytes.expect("the worker's resident memory");

    let stream = TcpStream::connect(addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(BOUND, reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    stats_until(&cluster, w.id, "one connection open", |s| {
        s.connections.handed == 1 && s.connections.open == 1
    })
    .await;
    drop(reader);
    stats_until(&cluster, w.id, "the connection closed", |s| {
        s.connections.handed == 1 && s.connections.open == 0
    })
    .await;

    cluster
        .worker(w.id)
        .unwrap()
        .send(&Msg::Ping(64))
        .await
        .unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Message(_))).await;
    let after = stats_until(&cluster, w.id, "64 MiB more resident", |s| {
        s.rss_bytes.is_some_and(|r| r >= rss0 + 60 * 1024 * 1024)
    })
    .await;
    assert_eq!(after.messages, 1);
    assert_eq!(after.pid, w.pid);
    support::shutdown(cluster).await;
}

/// A worker that grows past the memory limit under load is recycled: its
/// successor takes its slot, it exits after disconnecting, and no
/// connection fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_past_the_memory_limit_is_recycled_with_no_failed_request() {
    let mut s = settings("serve-alloc", 2);
    s.max_memory(96 * 1024 * 1024)
        .recycle_check_interval(Duration::from_millis(50));
    let (mut cluster, addr) = serving(s, 2).await;
    let big = cluster.workers().into_values().next().unwrap();
    let load = Load::start(addr, 200, 20_000);
    big.send(&Msg::Ping(128)).await.unwrap();
    let seen = until(
        &mut cluster,
        |ev| matches!(ev, Event::Exit { worker, .. } if *worker == big.id()),
    )
    .await;
    let recycling = seen.iter().find_map(|ev| match ev {
        Event::Recycling {
            worker,
            slot,
            reason,
            ..
        } if *worker == big.id() => Some((*slot, *reason)),
        _ => None,
    });
    let Some((slot, RecycleReason::Memory { rss, limit })) = recycling else {
        panic!(
            "no memory recycling of {}: {:?}",
            big.id(),
            seen.iter().map(support::brief).collect::<Vec<_>>()
        );
    };
    assert_eq!(slot, big.slot());
    assert!(rss > limit);
    assert!(seen.iter().any(|ev| matches!(ev,
        Event::Exit { worker, exited_after_disconnect: true, .. } if *worker == big.id())));
    // Its successor serves in its slot.
    let successor = cluster
        .workers()
        .into_values()
        .find(|w| w.slot() == slot)
        .unwrap();
    assert_ne!(successor.id(), big.id());
    load.finish().await;
    support::shutdown(cluster).await;
}

/// Max requests with jitter: workers are recycled at different counts,
/// and no connection fails meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_with_jitter_recycles_at_different_counts() {
    let mut s = settings("serve", 2);
    s.max_requests(20, 40)
        .recycle_check_interval(Duration::from_millis(20));
    let (mut cluster, addr) = serving(s, 2).await;
    let load = Load::start(addr, 100, 20_000);
    let mut limits = Vec::new();
    until(&mut cluster, |ev| {
        if let Event::Recycling {
            reason: RecycleReason::Requests { handed, limit },
            ..
        } = ev
        {
            assert!(
                handed >= limit && (20..=60).contains(limit),
                "{handed} of {limit}"
            );
            limits.push(*limit);
        }
        limits.len() == 4
    })
    .await;
    load.finish().await;
    let distinct: BTreeSet<_> = limits.iter().collect();
    assert!(
        distinct.len() > 1,
        "every worker had the same limit: {limits:?}"
    );
    support::shutdown(cluster).await;
}

/// Scaling from 2 to 4 workers and down to 1 under load: the new workers
/// listen, the removed slots' workers drain and exit after disconnecting,
/// and no connection fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_and_down_under_load_fails_no_request() {
    let (mut cluster, addr) = serving(settings("serve", 2), 2).await;
    let load = Load::start(addr, 200, 20_000);
    cluster.scale_to(4).unwrap();
    until_n(&mut cluster, 2, |ev| matches!(ev, Event::Listening { .. })).await;
    assert_eq!(cluster.slots(), 4);
    cluster.scale_to(1).unwrap();
    let mut removed = BTreeSet::new();
    let mut exited = BTreeSet::new();
    until(&mut cluster, |ev| {
        match ev {
            Event::SlotRemoved {
                worker: Some(w), ..
            } => {
                removed.insert(*w);
            }
            Event::Exit {
                worker,
                exited_after_disconnect: true,
                ..
            } => {
                exited.insert(*worker);
            }
            _ => {}
        }
        removed.len() == 3 && removed.is_subset(&exited)
    })
    .await;
    let stats = cluster.stats().await;
    assert_eq!(stats.slots, 1);
    assert_eq!(stats.workers.len(), 1, "{stats:#?}");
    assert_eq!(stats.workers[0].slot, SlotId::new(0));
    load.finish().await;
    support::shutdown(cluster).await;
}

/// `Cluster::handle`: beside `run_with`, which consumes the cluster, a
/// cloneable handle reads its stats, scales it, reloads it and shuts it
/// down; once the cluster is gone, the handle says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_beside_run_scales_reloads_and_shuts_down() {
    let mut s = settings("serve", 2);
    s.env("HELPER_ADDR", "127.0.0.1:0")
        .scheduling_policy(cluster_core::PolicyKind::RoundRobin);
    let cluster = Cluster::<Msg>::new(s).unwrap();
    let handle = cluster.handle();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(cluster.run_with(move |ev| {
        let _ = tx.send(ev);
    }));
    listening(&mut events, 2).await;
    assert_eq!(handle.stats().await.unwrap().workers.len(), 2);
    handle.clone().scale_to(3).unwrap();
    listening(&mut events, 1).await;
    assert_eq!(handle.slots().unwrap(), 3);
    handle.reload().await.unwrap();
    let stats = handle.stats().await.unwrap();
    let current: Vec<_> = stats.workers.iter().filter(|w| w.current).collect();
    assert_eq!(current.len(), 3, "{stats:#?}");
    assert!(current.iter().all(|w| w.restarts == 1), "{stats:#?}");
    tokio::time::timeout(BOUND, handle.shutdown())
        .await
        .expect("the shutdown in time")
        .unwrap();
    let ran = tokio::time::timeout(BOUND, run)
        .await
        .expect("run ended")
        .unwrap();
    assert!(ran.is_ok(), "{ran:?}");
    assert!(matches!(
        handle.stats().await,
        Err(cluster_core::Error::Stopped)
    ));
    assert!(matches!(
        handle.scale_to(2),
        Err(cluster_core::Error::Stopped)
    ));
    assert!(!handle.has_given_up());
}

/// Wait for `n` more `Listening` events among those `run_with` passed on.
async fn listening(events: &mut tokio::sync::mpsc::UnboundedReceiver<Event<Msg>>, n: usize) {
    let mut seen = 0;
    while seen < n {
        let ev = tokio::time::timeout(BOUND, events.recv())
            .await
            .expect("an event in time")
            .expect("the run goes on");
        seen += usize::from(matches!(ev, Event::Listening { .. }));
    }
}
