//! The README's first command, `hello-cluster`, run as a user would: its
//! answers, the restart of a SIGKILLed worker, the drain on SIGTERM with a
//! request in flight, and a rolling reload (SIGHUP) under load that loses no
//! request.
//!
//! The demo is cluster-core's example source built as a binary of this
//! crate (`CARGO_BIN_EXE_hello-cluster`). Each demo listens on `PORT=0` and
//! the test reads the real address from the primary's `listening on
//! http://…/` lines.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::support::{BOUND, Lines};

/// An example's binary (`hello-cluster`, `axum`), built by cargo as a
/// binary of this crate from cluster-core's example source.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    match name {
        "axum" => env!("CARGO_BIN_EXE_axum"),
        _ => env!("CARGO_BIN_EXE_hello-cluster"),
    }
    .into()
}

/// A running demo: its primary, its output lines, and where it listens.
struct Demo {
    child: Child,
    lines: Lines,
    addr: SocketAddr,
    pid: Pid,
}

impl Demo {
    /// Start the demo with `workers` workers under `policy`; returns once
    /// every worker listens.
    async fn start(policy: &str, workers: usize) -> Demo {
        Demo::start_with(policy, workers, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables.
    async fn start_with(policy: &str, workers: usize, env: &[(&str, &str)]) -> Demo {
        let mut child = Command::new(example_binary("hello-cluster"))
            .envs(env.iter().copied())
            .env("PORT", "0")
            .env("WORKERS", workers.to_string())
            .env("CLUSTER_SCHED_POLICY", policy)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the demo");
        let pid = Pid::from_raw(child.id().expect("a pid") as i32);
        let lines = Lines::read(child.stdout.take().expect("piped stdout"));
        let mut demo = Demo {
            child,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
        };
        for _ in 0..workers {
            let line = demo
                .wait_line(|l| l.contains(" listening on http://"))
                .await;
            demo.addr = listening_addr(&line);
        }
        demo
    }

    /// The next line matching `pred`, or a test failure after [`BOUND`].
    async fn wait_line(&mut self, pred: impl FnMut(&str) -> bool) -> String {
        self.lines.wait_line(pred).await
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid, signal).expect("signal the primary");
    }

    /// SIGTERM, then the primary's exit code (bounded).
    async fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        self.signal(Signal::SIGTERM);
        let status = tokio::time::timeout(BOUND, self.child.wait())
            .await
            .expect("the demo did not exit in time after SIGTERM")
            .expect("wait for the demo");
        // The rest of its output.
        self.lines.rest().await;
        (status.code(), self.lines.seen)
    }
}

/// `worker 1 (pid 42) listening on http://127.0.0.1:4567/` → the address.
fn listening_addr(line: &str) -> SocketAddr {
    let (_, rest) = line.split_once("http://").expect("an address");
    rest.trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
}

/// `hello from worker <id> (pid <pid>)` → (id, pid).
fn hello_parts(body: &str) -> (u64, i32) {
    let parse = || {
        let rest = body.trim_end().strip_prefix("hello from worker ")?;
        let (id, rest) = rest.split_once(" (pid ")?;
        let pid = rest.strip_suffix(')')?;
        Some((id.parse().ok()?, pid.parse().ok()?))
    };
    parse().unwrap_or_else(|| panic!("not a hello: {body:?}"))
}

/// One `GET path` on a new connection: the status code and the body, or
/// what went wrong. Bounded in time.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let connect = TcpStream::connect(addr);
    exchange(connect, &addr.to_string(), path).await
}

/// [`get`] on a Unix-domain socket.
pub(crate) async fn get_unix(socket: &Path, path: &str) -> Result<(u16, String), String> {
    let connect = tokio::net::UnixStream::connect(socket.to_owned());
    exchange(connect, "localhost", path).await
}

/// `GET path` on the connection `connect` opens, then read the answer to
/// its end. Bounded in time.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    connect: impl std::future::Future<Output = std::io::Result<S>>,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = connect.await.map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        parse_response(&answer)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn parse_response(answer: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete answer: {text:?}"))?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Context switches of every thread of `pid` so far, by thread id.
fn switches(pid: Pid) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the primary's threads") {
        let path = task.expect("a thread").path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let tid = path.file_name().map(|t| t.to_string_lossy().into_owned());
        out.insert(format!("{} ({})", comm.trim(), tid.unwrap_or_default()), n);
    }
    out
}

/// An idle cluster arms no timer: once a connection was handed over and
/// acknowledged and the recycling check saw no limit, the primary's
/// threads sleep until something happens (heartbeats off: they are a timer
/// of their own). Before, the hand-off sweep woke the network thread every
/// 250 ms and the recycling check a runtime thread every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_primary_sleeps() {
    let demo = Demo::start_with("rr", 2, &[("CLUSTER_HEARTBEAT_TIMEOUT_MS", "0")]).await;
    let (status, _) = get(demo.addr, "/").await.expect("an answer");
    assert_eq!(status, 200);
    // Past the sweep's last tick (250 ms after the hand-off) and the
    // recycling task's one check (1 s after the start).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = switches(demo.pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = switches(demo.pid);
    let woke: Vec<_> = after
        .iter()
        .filter_map(|(thread, n)| {
            let d = n.saturating_sub(*before.get(thread)?);
            (d > 0).then(|| format!("{thread}: {d}"))
        })
        .collect();
    // One stray wake-up is allowed (a signal, the kernel); a timer would
    // show at least 8 in this window.
    assert!(woke.len() <= 1, "the idle primary woke: {woke:?}");
    let (code, lines) = demo.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_restarts_a_killed_worker_and_drains_on_sigterm() {
    let mut demo = Demo::start("rr", 2).await;

    // It answers, naming its worker.
    let (status, body) = get(demo.addr, "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (victim, victim_pid) = hello_parts(&body);
    let (status, _) = get(demo.addr, "/nowhere").await.unwrap();
    assert_eq!(status, 404);

    // SIGKILL one worker: the primary reports it and refills its slot.
    kill(Pid::from_raw(victim_pid), Signal::SIGKILL).unwrap();
    demo.wait_line(|l| {
        l.starts_with(&format!(
            "worker {victim} (pid {victim_pid}) killed by signal 9"
        ))
    })
    .await;
    demo.wait_line(|l| l.contains("restart in")).await;
    let line = demo
        .wait_line(|l| l.contains(" listening on http://"))
        .await;
    assert_eq!(
        listening_addr(&line),
        demo.addr,
        "the same port after a restart"
    );
    // Every request is answered, never by the dead worker; both live
    // workers take turns (round-robin).
    let mut answered_by = BTreeSet::new();
    for _ in 0..6 {
        let (status, body) = get(demo.addr, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let (id, _) = hello_parts(&body);
        assert_ne!(id, victim, "the killed worker answered");
        answered_by.insert(id);
    }
    assert_eq!(answered_by.len(), 2, "{answered_by:?}");

    // A request in flight when SIGTERM arrives is finished.
    let mut slow = TcpStream::connect(demo.addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // Its first part proves the worker is serving it.
    while !String::from_utf8_lossy(&answer).contains("hello from worker") {
        let n = tokio::time::timeout(BOUND, slow.read(&mut buf))
            .await
            .expect("the first part in time")
            .unwrap();
        assert_ne!(n, 0, "closed early: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let rest = tokio::spawn(async move {
        tokio::time::timeout(BOUND, slow.read_to_end(&mut answer))
            .await
            .expect("the rest in time")
            .unwrap();
        answer
    });
    let (code, lines) = demo.terminate().await;
    let answer = rest.await.unwrap();
    let (status, body) = parse_response(&answer).unwrap();
    assert_eq!(status, 200);
    assert!(body.ends_with("\ndone\n"), "unfinished: {body:?}");
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "every worker exited: bye"),
        "{lines:#?}"
    );
}

/// The load of the reload test: sequential requests, each on a new
/// connection, until told to stop (bounded in count and time). Returns the
/// failures and the workers that answered.
async fn sequential_load(
    addr: SocketAddr,
    done: watch::Sender<usize>,
    mut stop: watch::Receiver<bool>,
) -> (Vec<String>, BTreeSet<u64>) {
    const MAX_REQUESTS: usize = 20_000;
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut answered_by = BTreeSet::new();
    for n in 1..=MAX_REQUESTS {
        if *stop.borrow_and_update() || started.elapsed() > Duration::from_secs(90) {
            break;
        }
        match get(addr, "/").await {
            Ok((200, body)) => {
                answered_by.insert(hello_parts(&body).0);
            }
            Ok((status, body)) => failures.push(format!("#{n}: {status} {body:?}")),
            Err(e) => failures.push(format!("#{n}: {e}")),
        }
        done.send_replace(n);
    }
    (failures, answered_by)
}

/// How many rolling reloads the reload test does in a row, under load.
const RELOADS: usize = 3;

async fn reload_under_load_loses_no_request(policy: &str) {
    let mut demo = Demo::start(policy, 2).await;
    let (done_tx, mut done) = watch::channel(0);
    let (stop_tx, stop) = watch::channel(false);
    let load = tokio::spawn(sequential_load(demo.addr, done_tx, stop));
    let at_least = |n: usize| move |d: &usize| *d >= n;
    tokio::time::timeout(BOUND, done.wait_for(at_least(20)))
        .await
        .expect("the load started")
        .expect("the load runs");

    let is_listening = |l: &str| l.contains(" listening on http://");
    let is_replaced = |l: &str| l.ends_with("exited with code 0 after disconnecting");
    for round in 1..=RELOADS {
        demo.signal(Signal::SIGHUP);
        let line = demo.wait_line(|l| l.starts_with("reload")).await;
        assert_eq!(line, "reload done", "{:#?}", demo.lines.seen);
        // Every old worker left as intended, and two new ones listen.
        loop {
            let listening = demo.lines.seen.iter().filter(|l| is_listening(l)).count();
            let replaced = demo.lines.seen.iter().filter(|l| is_replaced(l)).count();
            if listening == 2 + 2 * round && replaced == 2 * round {
                break;
            }
            demo.wait_line(|l| is_listening(l) || is_replaced(l)).await;
        }
    }
    // Some more load on the newest workers alone, then stop.
    let now = *done.borrow();
    tokio::time::timeout(BOUND, done.wait_for(at_least(now + 20)))
        .await
        .expect("the load went on after the reloads")
        .expect("the load runs");
    stop_tx.send_replace(true);
    let (failures, answered_by) = tokio::time::timeout(BOUND, load)
        .await
        .expect("the load stopped")
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} request(s) failed across the reloads: {failures:#?}",
        failures.len()
    );
    // The first workers (1, 2) and the last ones answered.
    let last = 2 * RELOADS as u64 + 1;
    assert!(
        answered_by.iter().any(|&w| w <= 2) && answered_by.iter().any(|&w| w >= last),
        "{answered_by:?}"
    );
    let (code, lines) = demo.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_reload_under_load_loses_no_request_round_robin() {
    reload_under_load_loses_no_request("rr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_reload_under_load_loses_no_request_shared_listener() {
    reload_under_load_loses_no_request("none").await;
}
