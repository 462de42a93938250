//! The operator features, checked from outside as an operator meets them:
//! the demo (`hello-cluster`) with each operator variable set — the
//! Prometheus endpoint, JSON logs, SIGTTIN/SIGTTOU scaling, recycling by
//! age, a Unix-domain socket, socket activation — and a program written
//! from `docs/cluster.md` (the `axum` example) with the operator settings
//! on, where SIGTTIN adds a worker instead of stopping the primary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::demo::{example_binary, get, get_unix};
use crate::support::{BOUND, Lines};

/// A running example: its primary, its stdout (and stderr) lines.
struct App {
    child: Child,
    pid: Pid,
    out: Lines,
    err: Option<Lines>,
}

impl App {
    /// Start the example `name` with `env` on top of `PORT=0`.
    fn start(name: &str, env: &[(&str, &str)]) -> App {
        App::start_with(name, env, false)
    }

    fn start_with(name: &str, env: &[(&str, &str)], stderr: bool) -> App {
        let mut cmd = Command::new(example_binary(name));
        cmd.env("PORT", "0")
            .env_remove("RUST_LOG")
            .env_remove("LOG_FORMAT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        App::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> App {
        let mut child = cmd.spawn().expect("start the example");
        let pid = Pid::from_raw(child.id().expect("a pid") as i32);
        let out = Lines::read(child.stdout.take().expect("piped stdout"));
        let err = child.stderr.take().map(Lines::read);
        App {
            child,
            pid,
            out,
            err,
        }
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid, signal).expect("signal the primary");
    }

    /// The next line matching `pred`.
    async fn line(&mut self, pred: impl FnMut(&str) -> bool) -> String {
        self.out.wait_line(pred).await
    }

    /// Wait for `n` more `listening on` lines: the last one's address.
    async fn listening(&mut self, n: usize) -> SocketAddr {
        let mut addr = None;
        for _ in 0..n {
            let line = self.line(|l| l.contains(" listening on ")).await;
            addr = Some(listening_addr(&line));
        }
        addr.expect("n > 0")
    }

    /// SIGTERM, then the exit code and every stdout line (bounded).
    async fn terminate(self) -> (Option<i32>, Vec<String>) {
        self.signal(Signal::SIGTERM);
        self.exit().await
    }

    /// The exit code, once the primary exits by itself, and every stdout
    /// line (bounded).
    async fn exit(mut self) -> (Option<i32>, Vec<String>) {
        let status = tokio::time::timeout(BOUND, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the example did not exit in time: {:#?}", self.out.seen))
            .expect("wait for the example");
        self.out.rest().await;
        (status.code(), self.out.seen)
    }

    /// The primary's scheduler state (`/proc/<pid>/stat`): `T` when stopped.
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let (_, rest) = stat.rsplit_once(") ").expect("a stat line");
        rest.chars().next().expect("a state")
    }
}

/// `… listening on 127.0.0.1:4567` or `… listening on http://127.0.0.1:4567/`.
fn listening_addr(line: &str) -> SocketAddr {
    let (_, rest) = line.split_once(" listening on ").expect("a listening line");
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    rest.trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
}

/// The `(worker, pid)` a `worker <id> (pid <pid>) …` line names.
fn worker_of(line: &str) -> (u64, u32) {
    let parse = || {
        let rest = line.strip_prefix("worker ")?;
        let (id, rest) = rest.split_once(" (pid ")?;
        let (pid, _) = rest.split_once(')')?;
        Some((id.parse().ok()?, pid.parse().ok()?))
    };
    parse().unwrap_or_else(|| panic!("not a worker line: {line:?}"))
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse Prometheus' text format (0.0.4) strictly: `# HELP`/`# TYPE`
/// comments, then `name{label="value",…} number` samples; anything else
/// is an error. Every sample's family must have been typed before it.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut typed = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(_), Some(_)) => {}
                (Some("TYPE"), Some(name), Some("gauge" | "counter")) => {
                    typed.insert(name.to_owned());
                }
                _ => return Err(format!("bad comment: {line:?}")),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value: {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels: {line:?}"))?;
                let mut labels = BTreeMap::new();
                for pair in body.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("bad label: {line:?}"))?;
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .ok_or_else(|| format!("unquoted label: {line:?}"))?;
                    labels.insert(k.to_owned(), v.to_owned());
                }
                (name, labels)
            }
        };
        let valid =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid(name) || !labels.keys().all(|k| valid(k)) {
            return Err(format!("bad name: {line:?}"));
        }
        if !typed.contains(name) {
            return Err(format!("untyped family: {line:?}"));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// `GET /metrics`, parsed.
async fn scrape(metrics: SocketAddr) -> Vec<Sample> {
    let (status, body) = get(metrics, "/metrics").await.expect("a scrape");
    assert_eq!(status, 200, "{body}");
    parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// What a scrape says: live workers (every state), and the slots with a
/// current worker (`cluster_worker_up`).
fn counts(samples: &[Sample]) -> (f64, usize) {
    let workers = samples
        .iter()
        .filter(|s| s.name == "cluster_workers")
        .map(|s| s.value)
        .sum();
    let up = samples
        .iter()
        .filter(|s| s.name == "cluster_worker_up")
        .count();
    (workers, up)
}

/// Scrape until `(workers, up)` is `want` (bounded): the counts follow
/// the cluster a moment after its lines.
async fn scrape_until(metrics: SocketAddr, want: (f64, usize)) -> Vec<Sample> {
    let deadline = Instant::now() + BOUND;
    loop {
        let samples = scrape(metrics).await;
        if counts(&samples) == want {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never said {want:?}: {samples:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The series of a scrape, by name and labels but `state` (what a
/// dashboard keys on).
fn series(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .map(|s| {
            let labels: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "state" || s.name == "cluster_workers")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{}{{{}}}", s.name, labels.join(","))
        })
        .collect()
}

/// The program written from `docs/cluster.md` (the axum example), with the
/// operator settings on: SIGTTIN adds a worker — without the setting its
/// default action stops the whole primary (state `T`) — and SIGTTOU
/// removes it again, drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_axum_program_adds_a_worker_on_sigttin_instead_of_stopping() {
    let mut app = App::start("axum", &[("WORKERS", "1")]);
    let addr = app.listening(1).await;
    app.signal(Signal::SIGTTIN);
    let forked = app.line(|l| l.ends_with(" forked in slot 1")).await;
    let (new, _) = worker_of(&forked);
    app.line(|l| l.starts_with(&format!("worker {new} ")) && l.contains(" listening on "))
        .await;
    assert_ne!(app.state(), 'T', "the primary is stopped");
    // Both workers answer now (round-robin).
    let mut pids = BTreeSet::new();
    for _ in 0..4 {
        let (status, body) = get(addr, "/").await.expect("an answer");
        assert_eq!(status, 200, "{body}");
        pids.insert(body);
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
    app.signal(Signal::SIGTTOU);
    app.line(|l| l.starts_with("slot 1: removed (scaled down)"))
        .await;
    app.line(|l| l.starts_with(&format!("worker {new} ")) && l.ends_with("after disconnecting"))
        .await;
    let (code, lines) = app.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

/// `METRICS_PORT`: the stats in Prometheus' text format, which parses,
/// counts the workers, and keeps its series across a reload (labelled by
/// slot, not by pid or worker id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_prometheus_metrics_that_count_the_workers() {
    let mut app = App::start("hello-cluster", &[("WORKERS", "2"), ("METRICS_PORT", "0")]);
    let banner = app.line(|l| l.starts_with("primary (pid ")).await;
    assert!(
        banner.contains(" 2 worker(s) on http://127.0.0.1:0/,"),
        "{banner}"
    );
    let metrics: SocketAddr = banner
        .split_once("metrics on http://")
        .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address: {banner:?}"))
        .parse()
        .expect("an address");
    app.listening(2).await;
    let before = scrape_until(metrics, (2.0, 2)).await;
    let slots: Vec<_> = before
        .iter()
        .filter(|s| s.name == "cluster_slots")
        .collect();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].value, 2.0);
    for s in &before {
        assert!(
            s.labels.keys().all(|k| k == "slot" || k == "state"),
            "a label beside slot and state: {s:?}"
        );
    }
    let (status, _) = get(metrics, "/nowhere").await.unwrap();
    assert_eq!(status, 404);

    app.signal(Signal::SIGHUP);
    let done = app.line(|l| l.starts_with("reload")).await;
    assert_eq!(done, "reload done");
    let after = scrape_until(metrics, (2.0, 2)).await;
    assert_eq!(
        series(&before),
        series(&after),
        "a reload started new series"
    );
    let (code, lines) = app.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

/// SIGTTIN adds a worker to the demo and SIGTTOU removes one (drained);
/// the metrics follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scales_on_sigttin_and_sigttou() {
    let mut app = App::start("hello-cluster", &[("WORKERS", "2"), ("METRICS_PORT", "0")]);
    let banner = app.line(|l| l.starts_with("primary (pid ")).await;
    assert!(banner.contains("SIGTTIN/SIGTTOU scale"), "{banner}");
    let metrics: SocketAddr = banner
        .split_once("metrics on http://")
        .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
        .expect("a metrics address")
        .parse()
        .unwrap();
    let addr = app.listening(2).await;
    app.signal(Signal::SIGTTIN);
    let forked = app.line(|l| l.ends_with(" forked in slot 2")).await;
    let (third, _) = worker_of(&forked);
    app.line(|l| l.starts_with(&format!("worker {third} ")) && l.contains(" listening on "))
        .await;
    scrape_until(metrics, (3.0, 3)).await;
    // The new worker takes its share (round-robin over three).
    let mut answered = BTreeSet::new();
    for _ in 0..6 {
        let (status, body) = get(addr, "/").await.unwrap();
        assert_eq!(status, 200);
        answered.insert(body);
    }
    assert_eq!(answered.len(), 3, "{answered:?}");
    app.signal(Signal::SIGTTOU);
    app.line(|l| l == format!("slot 2: removed (scaled down), worker {third} draining"))
        .await;
    app.line(|l| l.starts_with(&format!("worker {third} ")) && l.ends_with("after disconnecting"))
        .await;
    scrape_until(metrics, (2.0, 2)).await;
    // Never below one worker.
    for _ in 0..3 {
        app.signal(Signal::SIGTTOU);
    }
    scrape_until(metrics, (1.0, 1)).await;
    let (code, lines) = app.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let removed = lines
        .iter()
        .filter(|l| l.contains("removed (scaled down)"))
        .count();
    assert_eq!(removed, 2, "{lines:#?}");
}

/// `LOG_FORMAT=json`: the primary's `tracing` records on stderr, one JSON
/// object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_logs_json_lines_with_log_format_json() {
    let mut app = App::start_with(
        "hello-cluster",
        &[
            ("WORKERS", "2"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ],
        true,
    );
    app.listening(2).await;
    let mut err = app.err.take().expect("piped stderr");
    let (code, lines) = app.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    err.rest().await;
    let mut messages = BTreeSet::new();
    for line in err.seen.iter().filter(|l| !l.starts_with("[worker ")) {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(record["level"].is_string(), "{line}");
        if record["target"] == "cluster_core" {
            messages.insert(
                record["fields"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
    }
    for want in ["worker forked", "worker listening", "worker exited"] {
        assert!(messages.contains(want), "no {want:?} in {messages:?}");
    }
}

/// Requests one after the other, each on a new connection, until told to
/// stop (bounded in count and time): the failures and the bodies.
async fn load(
    addr: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<String>, BTreeSet<String>) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut bodies = BTreeSet::new();
    for n in 0..20_000 {
        if *stop.borrow() || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        match get(addr, "/").await {
            Ok((200, body)) => {
                bodies.insert(body);
            }
            Ok((status, body)) => failures.push(format!("#{n}: {status} {body:?}")),
            Err(e) => failures.push(format!("#{n}: {e}")),
        }
    }
    (failures, bodies)
}

/// `MAX_AGE_SECS`: workers older than the limit are replaced through the
/// rolling path, under load, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_recycles_by_age_with_no_failed_request() {
    let mut app = App::start("hello-cluster", &[("WORKERS", "2"), ("MAX_AGE_SECS", "1")]);
    let addr = app.listening(2).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(load(addr, stop));
    // Two workers recycled (their successors ready first) and gone.
    let (mut recycled, mut gone) = (BTreeSet::new(), BTreeSet::new());
    while recycled.intersection(&gone).count() < 2 {
        let line = app
            .line(|l| l.contains(" recycling: age ") || l.ends_with("after disconnecting"))
            .await;
        let (id, _) = worker_of(&line);
        if line.contains(" recycling: ") {
            recycled.insert(id);
        } else {
            gone.insert(id);
        }
    }
    stop_tx.send_replace(true);
    let (failures, bodies) = tokio::time::timeout(BOUND, load)
        .await
        .expect("the load stopped")
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert!(
        bodies.len() >= 3,
        "the replacements did not answer: {bodies:?}"
    );
    let (code, lines) = app.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 response read off a keep-alive connection: status, head
/// (lowercase), body.
async fn response(conn: &mut (impl AsyncRead + Unpin)) -> (u16, String, String) {
    let read = async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("a length"));
                if bytes.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + len]).into_owned();
                    let status = head[9..12].parse().expect("a status");
                    return (status, head, body);
                }
            }
            let n = conn.read(&mut buf).await.expect("read");
            assert_ne!(
                n,
                0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            bytes.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("a response in time")
}

/// Send `GET path` on a keep-alive connection and read the answer.
async fn ask(
    conn: &mut (impl AsyncRead + AsyncWrite + Unpin),
    path: &str,
) -> (u16, String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    response(conn).await
}

/// The connection ends (the server closed it), within the bound.
async fn closed(conn: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(BOUND, conn.read(&mut buf))
        .await
        .expect("the server never closed the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "more bytes: {:?}", String::from_utf8_lossy(&buf[..n]));
}

/// `SOCKET_PATH`: the demo on a Unix-domain socket announces its path,
/// serves, reloads and drains with the drain rules: a keep-alive
/// connection idle when its worker drains gets its next answer with
/// `Connection: close`, one that stays idle is closed at the grace's end,
/// a request in flight at SIGTERM finishes, and the file is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_on_a_unix_socket_serves_reloads_and_drains() {
    let dir = scratch("hello-unix");
    let path = dir.join("app.sock");
    let mut app = App::start(
        "hello-cluster",
        &[("WORKERS", "2"), ("SOCKET_PATH", path.to_str().unwrap())],
    );
    let banner = app.line(|l| l.starts_with("primary (pid ")).await;
    assert!(
        banner.contains(&format!(" 2 worker(s) on unix:{},", path.display())),
        "{banner}"
    );
    for _ in 0..2 {
        let line = app.line(|l| l.contains(" listening on ")).await;
        assert!(
            line.ends_with(&format!(" listening on unix:{}", path.display())),
            "{line}"
        );
    }
    let connect = |p: &Path| tokio::net::UnixStream::connect(p.to_owned());
    // A keep-alive connection, answered, then idle across a reload.
    let mut first = connect(&path).await.expect("connect");
    let (status, head, body) = ask(&mut first, "/").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("hello from worker "), "{body}");
    assert!(!head.contains("connection: close"), "{head}");
    app.signal(Signal::SIGHUP);
    let done = app.line(|l| l.starts_with("reload")).await;
    assert_eq!(done, "reload done");
    // Its worker drains: the next answer says `Connection: close`, then
    // the server closes it.
    let (status, head, _) = ask(&mut first, "/").await;
    assert_eq!(status, 200);
    assert!(head.contains("connection: close"), "{head}");
    closed(&mut first).await;
    // A new connection goes to a new worker, and stays idle across the
    // next reload: closed at the drain grace's end, its worker then gone.
    let mut idle = connect(&path).await.expect("connect");
    let (status, head, body) = ask(&mut idle, "/").await;
    assert_eq!(status, 200);
    assert!(!head.contains("connection: close"), "{head}");
    let id: u64 = body
        .strip_prefix("hello from worker ")
        .and_then(|r| r.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!(id > 2, "an old worker answered: {body}");
    app.signal(Signal::SIGHUP);
    assert_eq!(app.line(|l| l.starts_with("reload")).await, "reload done");
    closed(&mut idle).await;
    app.line(|l| l.starts_with(&format!("worker {id} ")) && l.ends_with("after disconnecting"))
        .await;
    // A request in flight at SIGTERM finishes.
    let mut slow = connect(&path).await.expect("connect");
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(slow);
    let mut line = String::new();
    while !line.starts_with("hello from worker") {
        line.clear();
        let n = tokio::time::timeout(BOUND, reader.read_line(&mut line))
            .await
            .expect("the first part in time")
            .unwrap();
        assert_ne!(n, 0, "closed early");
    }
    app.signal(Signal::SIGTERM);
    let mut rest = String::new();
    tokio::time::timeout(BOUND, reader.read_line(&mut rest))
        .await
        .expect("the rest in time")
        .unwrap();
    assert_eq!(rest, "done\n");
    let (code, lines) = app.exit().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(!path.exists(), "the socket file is left");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests one after the other on the Unix-domain socket `socket`, each
/// on a new connection, until told to stop (bounded in count and time):
/// the failures, and the versions the answers named.
async fn load_unix(
    socket: PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
    seen: tokio::sync::watch::Sender<BTreeSet<String>>,
) -> Vec<String> {
    let started = Instant::now();
    let mut failures = Vec::new();
    for n in 0..20_000 {
        if *stop.borrow() || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        match get_unix(&socket, "/").await {
            Ok((200, body)) => {
                let version = body.trim_end().rsplit_once(" version ").map(|(_, v)| v);
                let version = version.unwrap_or("none").to_owned();
                seen.send_if_modified(|seen| seen.insert(version));
            }
            Ok((status, body)) => failures.push(format!("#{n}: {status} {body:?}")),
            Err(e) => failures.push(format!("#{n}: {e}")),
        }
    }
    failures
}

/// `SOCKET_PATH` with SIGUSR2: the demo's primary upgrades itself on its
/// Unix-domain socket under load — the new primary (the program read
/// anew: its `VERSION_FILE` says `v2`) adopts the socket, bound all along
/// (no unlink, no second bind), the answers switch to the new version, the
/// old primary drains and exits 0, and no request fails or is refused. The
/// last primary removes the file at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_on_a_unix_socket_upgrades_on_sigusr2_with_no_failed_request() {
    let dir = scratch("hello-unix-upgrade");
    let path = dir.join("app.sock");
    let version_file = dir.join("version");
    std::fs::write(&version_file, "v1\n").unwrap();
    let mut app = App::start(
        "hello-cluster",
        &[
            ("WORKERS", "2"),
            ("SOCKET_PATH", path.to_str().unwrap()),
            ("VERSION_FILE", version_file.to_str().unwrap()),
        ],
    );
    let banner = app.line(|l| l.starts_with("primary (pid ")).await;
    assert!(banner.contains("SIGUSR2 upgrades"), "{banner}");
    for _ in 0..2 {
        app.line(|l| l.contains(" listening on unix:")).await;
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (seen_tx, mut seen) = tokio::sync::watch::channel(BTreeSet::new());
    let load = tokio::spawn(load_unix(path.clone(), stop, seen_tx));
    let version = |seen: &mut tokio::sync::watch::Receiver<BTreeSet<String>>, v: &'static str| {
        let mut seen = seen.clone();
        async move {
            tokio::time::timeout(BOUND, seen.wait_for(|s| s.contains(v)))
                .await
                .unwrap_or_else(|_| panic!("no answer of version {v}"))
                .expect("the load ended");
        }
    };
    version(&mut seen, "v1").await;

    std::fs::write(&version_file, "v2\n").unwrap();
    app.signal(Signal::SIGUSR2);
    let upgraded = app.line(|l| l.starts_with("upgraded: ")).await;
    let new: i32 = upgraded
        .split_once("(pid ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {upgraded:?}"));
    version(&mut seen, "v2").await;
    let old = tokio::time::timeout(BOUND, app.child.wait())
        .await
        .expect("the old primary did not exit")
        .unwrap();
    assert_eq!(old.code(), Some(0), "{:#?}", app.out.seen);
    assert!(path.exists(), "the socket file went with the old primary");
    // Still served, by the new primary's workers only.
    stop_tx.send_replace(true);
    let failures = tokio::time::timeout(BOUND, load)
        .await
        .expect("the load stopped")
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    let (status, body) = get_unix(&path, "/").await.expect("an answer");
    assert_eq!(status, 200);
    assert!(body.ends_with(" version v2\n"), "{body:?}");

    kill(Pid::from_raw(new), Signal::SIGTERM).expect("signal the new primary");
    // Its output (the same pipe) ends when it and its workers are gone.
    app.out.rest().await;
    let lines = &app.out.seen;
    let byes = lines
        .iter()
        .filter(|l| *l == "every worker exited: bye")
        .count();
    assert_eq!(byes, 2, "both primaries end: {lines:#?}");
    assert!(!path.exists(), "the socket file is left");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Started by `systemd-socket-activate` on one port while `PORT` names
/// another, the demo's workers listen elsewhere: it never says `READY=1`
/// to the service manager, names the unused socket, and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_activated_demo_listening_elsewhere_is_never_ready_and_fails() {
    let dir = scratch("hello-activate");
    let notify_path = dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    };
    let elsewhere = free_port();
    // `systemd-socket-activate` binds the port again: another test may take
    // it first, then try another one.
    let mut started = None;
    for _ in 0..5 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg("-l")
            .arg(addr.to_string())
            .args(["-E", "WORKERS=1", "-E"])
            .arg(format!("PORT={elsewhere}"))
            .arg("-E")
            .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
            .arg(example_binary("hello-cluster"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut app = App::spawn(cmd);
        let err = app.err.as_mut().expect("piped stderr");
        let first = err.wait_line(|_| true).await;
        if first.starts_with("Listening on") {
            started = Some((app, addr));
            break;
        }
        eprintln!("systemd-socket-activate: {first:?}; another port");
    }
    let (mut app, addr) = started.expect("systemd-socket-activate listens");
    // The first connection starts the program.
    let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    app.line(|l| l.contains(&format!(" listening on http://127.0.0.1:{elsewhere}/")))
        .await;
    let unused = app.line(|l| l.starts_with("inherited socket")).await;
    assert!(
        unused.starts_with(&format!("inherited socket {addr} ")),
        "{unused}"
    );
    let (code, lines) = app.exit().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !got.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "READY=1 with the inherited socket unused: {got:#?}"
    );
    assert!(
        got.iter()
            .any(|m| m.contains(&format!("no worker listens on the inherited socket {addr}"))),
        "{got:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
