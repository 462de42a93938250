//! Running as a service: systemd's notify protocol against a datagram
//! socket the test binds, socket activation through `systemd-socket-activate`
//! (connections made before the workers are ready wait in the backlog), and
//! zero-downtime upgrades of the primary itself under load (five in a row
//! lose no request and switch the answers to the new version; a new binary
//! that exits at start leaves the old primary serving).
//!
//! The primary is `cluster-helper upgradable 2` (see its docs): every line
//! it prints starts with its pid, and a primary started by an upgrade
//! writes to the same stdout, so one reader sees them all.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::support::{self, BOUND, HELPER, Io, KINDS, Kind, Lines, Target};

/// A scratch directory of one test, removed at the end.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("procwork-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The primaries of a test (the first one our child, the others started by
/// upgrades) and their output. Every primary still known is SIGKILLed on
/// drop (their workers die with them).
pub(crate) struct Primaries {
    _first: Child,
    lines: Lines,
    /// Per line of `lines.seen`: whether a wait returned it already.
    taken: Vec<bool>,
    pids: BTreeSet<i32>,
}

impl Drop for Primaries {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

impl Primaries {
    /// Start `cmd` (the helper, maybe behind `systemd-socket-activate`)
    /// with its stdout read line by line.
    pub(crate) fn spawn(mut cmd: Command) -> Primaries {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the primary");
        let lines = Lines::read(child.stdout.take().expect("piped stdout"));
        let pid = child.id().expect("a pid") as i32;
        Primaries {
            _first: child,
            lines,
            taken: Vec::new(),
            pids: BTreeSet::from([pid]),
        }
    }

    /// The first line not taken yet of `pid` (any primary if `None`) whose
    /// first word after the pid is `what` (or one of `a|b`): its words, the
    /// pid first.
    /// Bounded.
    pub(crate) async fn wait(&mut self, pid: Option<i32>, what: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut i = 0;
        loop {
            while i == self.lines.seen.len() {
                let line = self.lines.next_by(deadline, &format!("{what:?}")).await;
                let words: Vec<&str> = line.split_whitespace().collect();
                if let [from, verb, ..] = words[..]
                    && let Ok(from) = from.parse::<i32>()
                {
                    match verb {
                        "ready" | "hanging" => self.pids.insert(from),
                        "done" => self.pids.remove(&from),
                        _ => false,
                    };
                }
                self.taken.push(false);
            }
            let words: Vec<String> = self.lines.seen[i]
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let matches = !self.taken[i]
                && words.len() >= 2
                && what.split('|').any(|w| words[1] == w)
                && pid.is_none_or(|p| words[0] == p.to_string());
            if matches {
                self.taken[i] = true;
                return words;
            }
            i += 1;
        }
    }

    /// Wait for a `ready` line: (pid, version, where clients connect).
    pub(crate) async fn ready(&mut self, pid: Option<i32>) -> (i32, String, Target) {
        let w = self.wait(pid, "ready").await;
        let target = match w[3].strip_prefix("unix:") {
            Some(path) => Target::Unix(path.into()),
            None => Target::Tcp(w[3].parse().expect("an address")),
        };
        (w[0].parse().expect("a pid"), w[2].clone(), target)
    }
}

pub(crate) fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).expect("signal the primary");
}

/// The helper's primary, with its version file, its workers on a loopback
/// port.
pub(crate) fn helper(version_file: &Path) -> Command {
    let mut cmd = Command::new(HELPER);
    cmd.args(["upgradable", "2"])
        .env("HELPER_VERSION_FILE", version_file)
        .env("HELPER_ADDR", "127.0.0.1:0")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    cmd
}

/// The helper's workers listen on a listener of `kind` (`socket`: the
/// path of a Unix-domain one).
pub(crate) fn listen_on(cmd: &mut Command, kind: Kind, socket: &Path) {
    match kind {
        Kind::Tcp => {}
        Kind::Unix => {
            cmd.env("HELPER_UNIX", socket);
        }
        Kind::InheritedTcp => {
            cmd.env("HELPER_INHERIT", "127.0.0.1:0");
        }
        Kind::InheritedUnix => {
            cmd.env("HELPER_INHERIT", format!("unix:{}", socket.display()));
        }
    }
}

/// One request on `stream`: the answer's words. Bounded.
pub(crate) async fn ask(stream: &mut BufReader<Box<dyn Io>>) -> Result<Vec<String>, String> {
    let exchange = async {
        stream
            .get_mut()
            .write_all(b"GET\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before an answer".to_owned());
        }
        Ok(line.split_whitespace().map(str::to_owned).collect())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out (hung)".to_owned())?
}

pub(crate) async fn connect(target: &Target) -> Result<BufReader<Box<dyn Io>>, String> {
    target
        .connect()
        .await
        .map(BufReader::new)
        .map_err(|e| format!("connect: {e}"))
}

/// What a load loop saw.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    failures: Vec<String>,
    versions: BTreeSet<String>,
}

/// Sequential requests until told to stop (bounded in count and time):
/// a new connection per request, or one kept alive (a new one when the
/// server says `close`). Publishes the latest version answered.
async fn load(
    target: Target,
    keep_alive: bool,
    latest: watch::Sender<String>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    const MAX_REQUESTS: usize = 50_000;
    let started = Instant::now();
    let mut seen = Seen::default();
    let mut conn: Option<BufReader<Box<dyn Io>>> = None;
    for n in 1..=MAX_REQUESTS {
        if *stop.borrow_and_update() || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        let stream = match conn.take() {
            Some(s) => Ok(s),
            None => connect(&target).await,
        };
        let result = match stream {
            Ok(mut s) => {
                let r = ask(&mut s).await;
                if keep_alive && matches!(&r, Ok(w) if w.last().is_none_or(|l| l != "close")) {
                    conn = Some(s);
                }
                r
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(words) if words.len() >= 3 => {
                seen.ok += 1;
                seen.versions.insert(words[0].clone());
                latest.send_replace(words[0].clone());
            }
            Ok(words) => seen.failures.push(format!("#{n}: bad answer {words:?}")),
            Err(e) => seen.failures.push(format!("#{n}: {e}")),
        }
    }
    seen
}

/// Two loads (connection per request, keep-alive) against `target`.
struct Load {
    stop: watch::Sender<bool>,
    latest: Vec<watch::Receiver<String>>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Load {
    fn start(target: &Target) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let mut latest = Vec::new();
        let mut tasks = Vec::new();
        for keep_alive in [false, true] {
            let (tx, rx) = watch::channel(String::new());
            latest.push(rx);
            tasks.push(tokio::spawn(load(
                target.clone(),
                keep_alive,
                tx,
                stop_rx.clone(),
            )));
        }
        Load {
            stop,
            latest,
            tasks,
        }
    }

    /// Until both loads have been answered by `version`. Bounded.
    async fn until_version(&mut self, version: &str) {
        for rx in &mut self.latest {
            tokio::time::timeout(BOUND, rx.wait_for(|v| v == version))
                .await
                .unwrap_or_else(|_| panic!("no answer from {version} in time"))
                .expect("the load runs");
        }
    }

    async fn finish(self) -> (Seen, Seen) {
        self.stop.send_replace(true);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(
                tokio::time::timeout(BOUND, t)
                    .await
                    .expect("the load stopped")
                    .expect("the load task"),
            );
        }
        let keep_alive = out.pop().expect("two");
        (out.pop().expect("two"), keep_alive)
    }
}

/// `upgrades` upgrades in a row under both loads, then a broken one, with
/// the workers on a listener of `kind` (the same socket all along: no
/// request fails or is refused, whatever the kind).
async fn upgrades_under_load(policy: &str, kind: Kind, upgrades: usize) {
    let scratch = Scratch::new(&format!("upgrade-{policy}-{kind:?}"));
    let version_file = scratch.path("version");
    let pid_file = scratch.path("pid");
    std::fs::write(&version_file, "v1").unwrap();
    let mut cmd = helper(&version_file);
    cmd.env("HELPER_PID_FILE", &pid_file)
        .env("CLUSTER_SCHED_POLICY", policy);
    let socket = support::socket_path("upgrade");
    listen_on(&mut cmd, kind, &socket);
    let mut primaries = Primaries::spawn(cmd);
    let (mut current, version, addr) = primaries.ready(None).await;
    assert_eq!(version, "v1");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        current.to_string()
    );
    let mut load = Load::start(&addr);
    load.until_version("v1").await;

    let last = upgrades + 1;
    for round in 2..=last {
        let v = format!("v{round}");
        std::fs::write(&version_file, &v).unwrap();
        // SIGUSR2 (the setting) and SIGUSR1 (`Cluster::upgrade`) in turn.
        let sig = if round % 2 == 0 {
            Signal::SIGUSR2
        } else {
            Signal::SIGUSR1
        };
        signal(current, sig);
        let new: i32 = primaries.wait(Some(current), "upgraded").await[2]
            .parse()
            .unwrap();
        let (ready_pid, ready_version, ready_addr) = primaries.ready(Some(new)).await;
        assert_eq!(
            (ready_pid, ready_version.as_str(), &ready_addr),
            (new, v.as_str(), &addr)
        );
        assert_eq!(
            std::fs::read_to_string(&pid_file).unwrap().trim(),
            new.to_string(),
            "the pid file names the new primary"
        );
        primaries.wait(Some(current), "done").await;
        current = new;
        load.until_version(&v).await;
    }

    // A new binary that exits at start: the old primary says why and serves.
    std::fs::write(&version_file, "exit").unwrap();
    signal(current, Signal::SIGUSR2);
    let failed = primaries.wait(Some(current), "upgrade-failed").await;
    assert!(
        failed
            .join(" ")
            .contains("exited before it was ready (exit code 7)"),
        "{failed:?}"
    );
    let mut conn = connect(&addr).await.unwrap();
    assert_eq!(ask(&mut conn).await.unwrap()[0], format!("v{last}"));
    drop(conn);

    let (per_request, keep_alive) = load.finish().await;
    for (what, seen) in [("per request", &per_request), ("keep-alive", &keep_alive)] {
        let refused = seen
            .failures
            .iter()
            .filter(|f| f.contains("connect:"))
            .count();
        eprintln!(
            "{policy} {kind:?} {what}: {} ok, {} failed ({refused} refused), versions {:?}",
            seen.ok,
            seen.failures.len(),
            seen.versions
        );
        assert!(
            seen.failures.is_empty(),
            "{what}: {} failed: {:#?}",
            seen.failures.len(),
            seen.failures
        );
        assert_eq!(seen.versions.len(), last, "{what}: {:?}", seen.versions);
    }
    signal(current, Signal::SIGTERM);
    primaries.wait(Some(current), "done").await;
    // The cluster's own file goes with the last primary; a socket the
    // program gave it is the program's.
    assert_eq!(
        socket.exists(),
        kind == Kind::InheritedUnix,
        "{kind:?}: the socket file after the last primary"
    );
    let _ = std::fs::remove_file(&socket);
}

/// Every kind of listener (a TCP port, a Unix-domain socket, and both
/// given to `Cluster::inherit_socket`): the upgrade carries it — a new
/// primary adopts it, with no unlink and no second bind — and no request
/// fails or is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_under_load_lose_no_request_and_a_broken_one_keeps_the_old() {
    for kind in KINDS {
        upgrades_under_load("rr", kind, 5).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_under_load_lose_no_request_shared_listener() {
    for kind in KINDS {
        upgrades_under_load("none", kind, 2).await;
    }
}

/// The datagrams a test's notify socket received, in order.
struct NotifySocket {
    socket: UnixDatagram,
    got: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(BOUND))
            .expect("a read timeout");
        NotifySocket {
            socket,
            got: Vec::new(),
        }
    }

    /// Receive what is already queued (sent by a primary now gone).
    fn drain_pending(&mut self) {
        self.socket.set_nonblocking(true).expect("non-blocking");
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.got
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).expect("blocking");
    }

    /// The next datagram with a line matching `pred` (blocking, bounded:
    /// call from `spawn_blocking` or accept the short block).
    fn until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no such notification ({e}); got {:#?}", self.got));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.got.push(msg.clone());
            if msg.lines().any(&pred) {
                return msg;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reports_ready_reload_watchdog_upgrade_and_stopping() {
    let scratch = Scratch::new("notify");
    let version_file = scratch.path("version");
    std::fs::write(&version_file, "v1").unwrap();
    let sock_path = scratch.path("notify.sock");
    let mut notify = NotifySocket::bind(&sock_path);
    let mut cmd = helper(&version_file);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let mut primaries = Primaries::spawn(cmd);
    let (first, _, _) = primaries.ready(None).await;

    let ready = tokio::task::block_in_place(|| notify.until(|l| l == "READY=1"));
    assert!(ready.contains("STATUS=2/2 workers ready"), "{ready:?}");
    tokio::task::block_in_place(|| notify.until(|l| l == "WATCHDOG=1"));

    // A reload: RELOADING=1 with the monotonic clock, then READY=1.
    signal(first, Signal::SIGWINCH);
    let reloading = tokio::task::block_in_place(|| notify.until(|l| l == "RELOADING=1"));
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading:?}");
    let reloaded = tokio::task::block_in_place(|| notify.until(|l| l == "READY=1"));
    assert!(reloaded.contains("STATUS=reload done"), "{reloaded:?}");

    // An upgrade: the old primary names the new main pid, and does not say
    // it is stopping (the service goes on).
    std::fs::write(&version_file, "v2").unwrap();
    signal(first, Signal::SIGUSR2);
    let new: i32 = primaries.wait(Some(first), "upgraded").await[2]
        .parse()
        .unwrap();
    tokio::task::block_in_place(|| notify.until(|l| l == format!("MAINPID={new}")));
    primaries.wait(Some(first), "done").await;

    // The new primary pings the watchdog (WATCHDOG_PID is now its own) and
    // says STOPPING=1 when it drains.
    notify.drain_pending();
    tokio::task::block_in_place(|| notify.until(|l| l == "WATCHDOG=1"));
    signal(new, Signal::SIGTERM);
    tokio::task::block_in_place(|| notify.until(|l| l == "STOPPING=1"));
    primaries.wait(Some(new), "done").await;
    assert!(
        !notify
            .got
            .iter()
            .take_while(|m| !m.contains(&format!("MAINPID={new}")))
            .any(|m| m.contains("STOPPING=1")),
        "the old primary said STOPPING=1: {:#?}",
        notify.got
    );
}

/// A free loopback port (bound and released: `systemd-socket-activate`
/// binds it again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn socket_activation(policy: &str) {
    let scratch = Scratch::new(&format!("activate-{policy}"));
    let version_file = scratch.path("version");
    std::fs::write(&version_file, "v1").unwrap();
    // The free port may be taken again before `systemd-socket-activate`
    // binds it (tests run in parallel): then try another one.
    let mut started = None;
    for _ in 0..5 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new("systemd-socket-activate");
        // It passes on only the variables named with `-E`.
        cmd.arg("-l")
            .arg(addr.to_string())
            .arg("-E")
            .arg(format!("HELPER_VERSION_FILE={}", version_file.display()))
            .args(["-E", "HELPER_ADDR=127.0.0.1:0", "-E"])
            .arg(format!("CLUSTER_SCHED_POLICY={policy}"))
            .args([HELPER, "upgradable", "2"])
            .stderr(Stdio::piped());
        let mut primaries = Primaries::spawn(cmd);
        // `systemd-socket-activate` listens, and starts the program at the
        // first connection (which waits in the backlog meanwhile).
        let stderr = primaries._first.stderr.take().expect("piped stderr");
        let mut err_lines = BufReader::new(stderr).lines();
        let listening = tokio::time::timeout(BOUND, err_lines.next_line())
            .await
            .expect("systemd-socket-activate in time")
            .expect("its stderr");
        if listening
            .as_deref()
            .is_some_and(|l| l.starts_with("Listening on"))
        {
            // Kept open: it writes more there (and dies of SIGPIPE if the
            // pipe is closed).
            started = Some((primaries, addr, err_lines));
            break;
        }
        eprintln!("systemd-socket-activate: {listening:?}; another port");
    }
    let (mut primaries, addr, _stderr) = started.expect("systemd-socket-activate listens");
    let addr = Target::Tcp(addr);
    // Ten clients before any worker exists: none is refused, all answered.
    let mut early = Vec::new();
    for _ in 0..10 {
        let mut conn = connect(&addr).await.expect("not refused");
        conn.get_mut().write_all(b"GET\n").await.unwrap();
        early.push(conn);
    }
    let (pid, _, ready_addr) = primaries.ready(None).await;
    assert_eq!(ready_addr, addr, "the workers use the inherited socket");
    for mut conn in early {
        let mut line = String::new();
        tokio::time::timeout(BOUND, conn.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(line.starts_with("v1 "), "{line:?}");
    }
    let mut conn = connect(&addr).await.unwrap();
    assert_eq!(ask(&mut conn).await.unwrap()[0], "v1");
    drop(conn);
    signal(pid, Signal::SIGTERM);
    primaries.wait(Some(pid), "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_round_robin_serves_the_backlog() {
    socket_activation("rr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_shared_listener_serves_the_backlog() {
    socket_activation("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_primary_never_ready_is_killed_and_a_second_upgrade_is_refused_meanwhile() {
    let scratch = Scratch::new("upgrade-hang");
    let version_file = scratch.path("version");
    std::fs::write(&version_file, "v1").unwrap();
    let mut cmd = helper(&version_file);
    cmd.env("HELPER_UPGRADE_TIMEOUT_MS", "1500");
    let mut primaries = Primaries::spawn(cmd);
    let (pid, _, addr) = primaries.ready(None).await;
    let mut load = Load::start(&addr);
    load.until_version("v1").await;

    std::fs::write(&version_file, "hang").unwrap();
    signal(pid, Signal::SIGUSR2);
    // Its new primary hangs: an upgrade through the API meanwhile is
    // refused (one at a time).
    let mut refused = Vec::new();
    for _ in 0..100 {
        signal(pid, Signal::SIGUSR1);
        let failed = primaries.wait(Some(pid), "upgrade-failed").await.join(" ");
        if failed.contains("already in progress") {
            refused.push(failed);
            break;
        }
        // The hanging one failed first (a slow machine): start it again.
        assert!(failed.contains("was not ready within"), "{failed}");
        signal(pid, Signal::SIGUSR2);
    }
    assert_eq!(refused.len(), 1, "{:#?}", primaries.lines.seen);
    let failed = primaries.wait(Some(pid), "upgrade-failed").await.join(" ");
    assert!(failed.contains("was not ready within"), "{failed}");

    // The old primary serves on, and upgrades later.
    let mut conn = connect(&addr).await.unwrap();
    assert_eq!(ask(&mut conn).await.unwrap()[0], "v1");
    drop(conn);
    // (Its short timeout may fail a real upgrade on a slow machine: retry.)
    std::fs::write(&version_file, "v2").unwrap();
    let mut new = None;
    for _ in 0..5 {
        signal(pid, Signal::SIGUSR2);
        let words = primaries.wait(Some(pid), "upgraded|upgrade-failed").await;
        if words[1] == "upgraded" {
            new = Some(words[2].parse::<i32>().unwrap());
            break;
        }
    }
    let new = new.unwrap_or_else(|| panic!("no upgrade succeeded: {:#?}", primaries.lines.seen));
    load.until_version("v2").await;
    let (per_request, keep_alive) = load.finish().await;
    for seen in [&per_request, &keep_alive] {
        assert!(seen.failures.is_empty(), "{:#?}", seen.failures);
    }
    primaries.wait(Some(pid), "done").await;
    signal(new, Signal::SIGTERM);
    primaries.wait(Some(new), "done").await;
}

/// Whether process `pid` is gone (reaped, or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Wait (bounded) until process `pid` is gone.
async fn until_gone(pid: i32, what: &str) {
    tokio::time::timeout(BOUND, async {
        while !gone(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} (pid {pid}) is still running"));
}

/// A new binary whose workers never listen (they exit at start, and its
/// slots keep restarting them): once its ready timeout has passed with
/// not every worker listening, the upgrade counts as failed — the new
/// primary is killed and the old one serves on — without waiting for the
/// (longer) upgrade timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_primary_whose_workers_do_not_listen_within_the_ready_timeout_fails() {
    let scratch = Scratch::new("upgrade-nolisten");
    let version_file = scratch.path("version");
    std::fs::write(&version_file, "v1").unwrap();
    let mut cmd = helper(&version_file);
    cmd.env("HELPER_READY_TIMEOUT_MS", "1000")
        .env("HELPER_UPGRADE_TIMEOUT_MS", "60000");
    let mut primaries = Primaries::spawn(cmd);
    let (pid, _, addr) = primaries.ready(None).await;
    std::fs::write(&version_file, "nolisten").unwrap();
    signal(pid, Signal::SIGUSR2);
    let failed = primaries.wait(Some(pid), "upgrade-failed").await.join(" ");
    assert!(
        failed.contains("workers listening"),
        "the ready timeout, not the upgrade's: {failed}"
    );
    let new: i32 = failed
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {failed:?}"));
    until_gone(new, "the failed new primary").await;
    let mut conn = connect(&addr).await.unwrap();
    assert_eq!(
        ask(&mut conn).await.unwrap()[0],
        "v1",
        "the old one serves on"
    );
    drop(conn);
    signal(pid, Signal::SIGTERM);
    primaries.wait(Some(pid), "done").await;
}

/// SIGTERM (then, in a second run, SIGINT) to the old primary while its
/// new primary is not ready yet: the old one drains, and the new one is
/// stopped too rather than left to start serving alone later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_or_sigint_during_an_upgrade_stops_the_new_primary_too() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let scratch = Scratch::new(&format!("upgrade-stop-{sig}"));
        let version_file = scratch.path("version");
        std::fs::write(&version_file, "v1").unwrap();
        let mut primaries = Primaries::spawn(helper(&version_file));
        let (pid, _, _) = primaries.ready(None).await;
        std::fs::write(&version_file, "hang").unwrap();
        signal(pid, Signal::SIGUSR2);
        let new: i32 = primaries.wait(None, "hanging").await[0].parse().unwrap();
        signal(pid, sig);
        primaries.wait(Some(pid), "done").await;
        until_gone(new, "the new primary").await;
    }
}

/// The upgrade carries the UDP socket the workers bind too: after each
/// upgrade the same port answers, now with the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_carries_the_udp_socket() {
    let scratch = Scratch::new("upgrade-udp");
    let version_file = scratch.path("version");
    std::fs::write(&version_file, "v1").unwrap();
    let mut cmd = helper(&version_file);
    cmd.env("HELPER_UDP", "127.0.0.1:0");
    let mut primaries = Primaries::spawn(cmd);
    let (mut current, _, _) = primaries.ready(None).await;
    let udp: SocketAddr = primaries.wait(Some(current), "udp").await[2]
        .parse()
        .unwrap();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for round in 2..=3 {
        let v = format!("v{round}");
        std::fs::write(&version_file, &v).unwrap();
        signal(current, Signal::SIGUSR2);
        let new: i32 = primaries.wait(Some(current), "upgraded").await[2]
            .parse()
            .unwrap();
        let port = primaries.wait(Some(new), "udp").await[2].clone();
        assert_eq!(port, udp.to_string(), "the same UDP socket");
        primaries.wait(Some(current), "done").await;
        current = new;
        // Answered by the new version (the old workers are gone).
        client.send_to(b"version?", udp).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(BOUND, client.recv_from(&mut buf))
            .await
            .expect("an answer on the carried UDP socket")
            .unwrap();
        assert_eq!(&buf[..n], v.as_bytes());
    }
    signal(current, Signal::SIGTERM);
    primaries.wait(Some(current), "done").await;
}
