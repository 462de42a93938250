//! `cargo xtask deploy-sim`: a three-host rolling deploy of the
//! `hello-cluster` demo behind HAProxy, on this machine, as root.
//!
//! Three network namespaces are the hosts (`pwsim-h1` … `pwsim-h3`), each
//! with a veth pair on one bridge (`pwsim-br0`) and an address from
//! 198.18.0.0/15 (RFC 2544's benchmarking range): the bridge is
//! 198.18.0.1, the hosts 198.18.0.11 … 13. Each host runs the demo's
//! primary (two workers, `HOST`/`PORT` 8080, its own copy of the binary, a
//! version file and a pid file); HAProxy (Debian package `haproxy`,
//! installed with apt-get if absent) runs in the root namespace on the
//! bridge's address only, with health checks, so no packet leaves the
//! namespaces made here. A bounded load (connection-per-request and
//! keep-alive clients) runs through HAProxy while the phases go:
//! 1. steady;
//! 2. a rolling upgrade, one host at a time: a new binary renamed over the
//!    old one, a new version, SIGUSR2, until the host answers with the new
//!    version from its new primary;
//! 3. a rolling reload (SIGHUP), one host at a time, until its log says
//!    `reload done`;
//! 4. one host's primary SIGKILLed (its workers die with it), then started
//!    again.
//!
//! Each request counts for the step it started in, as ok (200), failed (an
//! error or another status) or hung (no answer in 5 s). Everything is torn
//! down at the end, also on failure (and leftovers of an earlier run at the
//! start). It runs `ip`, `haproxy`, `kill`, `id`, `apt-get` (only to
//! install haproxy) and the demo; the load and the checks are its own code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The hosts (namespace names) and their addresses.
const HOSTS: [(&str, &str); 3] = [
    ("pwsim-h1", "198.18.0.11"),
    ("pwsim-h2", "198.18.0.12"),
    ("pwsim-h3", "198.18.0.13"),
];
const BRIDGE: &str = "pwsim-br0";
const BRIDGE_ADDR: &str = "198.18.0.1";
const PORT: u16 = 8080;
/// Where the scratch files live (binaries, versions, pid files, logs).
const DIR: &str = "/tmp/pwsim";
/// How many clients of each kind.
const CLIENTS: usize = 4;
/// A request not answered in this time is hung.
const HUNG: Duration = Duration::from_secs(5);
/// The bound on each wait for a host.
const WAIT: Duration = Duration::from_secs(60);
/// The bound on the whole load.
const LOAD_BOUND: Duration = Duration::from_secs(600);

pub(crate) const USAGE: &str = "\
usage: cargo xtask deploy-sim

As root: three network namespaces running the hello-cluster demo behind
HAProxy; a rolling upgrade, a rolling reload and a SIGKILLed primary under
load, each step reported as ok / failed / hung requests. Installs haproxy
with apt-get if absent. Tears everything down at the end.
";

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let uid = output("id", &["-u"])?;
    if uid.trim() != "0" {
        bail!("deploy-sim needs root (network namespaces, a bridge): run it as root");
    }
    ensure_haproxy()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("deploy-sim: building the demo (release)");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--example", "hello-cluster"])
        .current_dir(root)
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("could not build the demo");
    }
    let demo = root.join("target/release/examples/hello-cluster");

    teardown();
    let mut sim = Sim {
        haproxy: None,
        firsts: Vec::new(),
    };
    let result = sim.run(&demo);
    drop(sim);
    teardown();
    let report = result?;
    println!("{report}");
    Ok(())
}

/// The processes started; killed on drop (the namespaces go in `teardown`).
struct Sim {
    haproxy: Option<Child>,
    /// The first primary of each host (our children; reaped here).
    firsts: Vec<Child>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        for (ns, _) in HOSTS {
            if let Some(pid) = read_pid(ns) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        for c in self.firsts.iter_mut().chain(self.haproxy.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Remove what a run makes (also what an earlier, interrupted run left).
fn teardown() {
    for (ns, _) in HOSTS {
        // Processes keep a namespace alive: kill them first.
        if let Ok(pids) = output("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = quiet("ip", &["netns", "del", ns]);
    }
    let _ = quiet("ip", &["link", "del", BRIDGE]);
    let _ = std::fs::remove_dir_all(DIR);
}

fn ensure_haproxy() -> anyhow::Result<()> {
    if quiet("haproxy", &["-v"]).is_ok() {
        return Ok(());
    }
    eprintln!("deploy-sim: installing haproxy (apt-get)");
    sh("apt-get", &["update"])?;
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "haproxy"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get install haproxy")?;
    if !status.success() {
        bail!("could not install haproxy");
    }
    Ok(())
}

impl Sim {
    fn run(&mut self, demo: &Path) -> anyhow::Result<String> {
        self.network()?;
        for (i, (ns, addr)) in HOSTS.iter().enumerate() {
            let dir = host_dir(ns);
            std::fs::create_dir_all(&dir)?;
            install_binary(demo, &dir)?;
            std::fs::write(dir.join("version"), "v1\n")?;
            let child = start_primary(ns, addr)?;
            self.firsts.push(child);
            wait_version(addr, "v1").with_context(|| format!("host {}", i + 1))?;
        }
        self.haproxy = Some(start_haproxy()?);
        wait_until("HAProxy forwards", || {
            get(bridge_addr(), false).is_ok_and(|(s, _)| s == 200)
        })?;

        let load = Load::start();
        let steps = &load.steps;
        steps.begin("1 steady");
        std::thread::sleep(Duration::from_secs(5));

        for (ns, addr) in HOSTS {
            steps.begin(&format!("2 upgrade {ns}"));
            let before = read_pid(ns).context("no pid file")?;
            install_binary(demo, &host_dir(ns))?;
            std::fs::write(host_dir(ns).join("version"), "v2\n")?;
            signal("USR2", before)?;
            wait_until(&format!("{ns}: a new primary"), || {
                read_pid(ns).is_some_and(|p| p != before)
            })?;
            wait_version(addr, "v2")?;
            wait_until(&format!("{ns}: the old primary exits"), || !alive(before))?;
            std::thread::sleep(Duration::from_secs(1));
        }

        for (ns, _) in HOSTS {
            steps.begin(&format!("3 reload {ns}"));
            let log = host_dir(ns).join("log");
            let done = |log: &Path| {
                std::fs::read_to_string(log)
                    .map(|t| t.lines().filter(|l| *l == "reload done").count())
                    .unwrap_or(0)
            };
            let before = done(&log);
            signal("HUP", read_pid(ns).context("no pid file")?)?;
            wait_until(&format!("{ns}: reload done"), || done(&log) > before)?;
            std::thread::sleep(Duration::from_secs(1));
        }

        let (ns, addr) = HOSTS[1];
        steps.begin(&format!("4 SIGKILL {ns}, restart"));
        let victim = read_pid(ns).context("no pid file")?;
        signal("KILL", victim)?;
        wait_until(&format!("{ns}: the primary is gone"), || !alive(victim))?;
        // Its workers die with it (parent-death signal): the port is free.
        wait_until(&format!("{ns}: its workers are gone"), || {
            get(
                addr.parse()
                    .map(|ip| SocketAddr::new(ip, PORT))
                    .expect("an address"),
                false,
            )
            .is_err()
        })?;
        let _ = std::fs::remove_file(host_dir(ns).join("pid"));
        let child = start_primary(ns, addr)?;
        self.firsts.push(child);
        wait_version(addr, "v2")?;
        // HAProxy's checks take it back (rise 2, every 200 ms).
        std::thread::sleep(Duration::from_secs(2));
        steps.begin("end");
        let report = load.finish();
        Ok(report)
    }

    /// The bridge in the root namespace and one veth pair per host.
    fn network(&self) -> anyhow::Result<()> {
        sh("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        sh(
            "ip",
            &["addr", "add", &format!("{BRIDGE_ADDR}/24"), "dev", BRIDGE],
        )?;
        sh("ip", &["link", "set", BRIDGE, "up"])?;
        for (ns, addr) in HOSTS {
            let outer = format!("{ns}-v");
            sh("ip", &["netns", "add", ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            sh("ip", &["link", "set", &outer, "master", BRIDGE])?;
            sh("ip", &["link", "set", &outer, "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }
}

fn host_dir(ns: &str) -> PathBuf {
    Path::new(DIR).join(ns)
}

fn bridge_addr() -> SocketAddr {
    SocketAddr::new(BRIDGE_ADDR.parse().expect("an address"), PORT)
}

/// A deploy's binary swap: copy, then rename over the running one (its
/// inode stays with the running primary).
fn install_binary(demo: &Path, dir: &Path) -> anyhow::Result<()> {
    let tmp = dir.join("hello-cluster.new");
    std::fs::copy(demo, &tmp).context("copy the demo")?;
    std::fs::rename(&tmp, dir.join("hello-cluster")).context("rename the demo")?;
    Ok(())
}

fn start_primary(ns: &str, addr: &str) -> anyhow::Result<Child> {
    let dir = host_dir(ns);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(dir.join("hello-cluster"))
        .env("HOST", addr)
        .env("PORT", PORT.to_string())
        .env("WORKERS", "2")
        .env("VERSION_FILE", dir.join("version"))
        .env("PID_FILE", dir.join("pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start the demo in {ns}"))
}

fn start_haproxy() -> anyhow::Result<Child> {
    let cfg = Path::new(DIR).join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config())?;
    let check = Command::new("haproxy")
        .args(["-c", "-q", "-f"])
        .arg(&cfg)
        .status()?;
    if !check.success() {
        bail!("haproxy -c refused the configuration");
    }
    Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start haproxy")
}

/// The HAProxy configuration (also shown in `docs/deploy.md`).
pub(crate) fn haproxy_config() -> String {
    let mut servers = String::new();
    for (i, (_, addr)) in HOSTS.iter().enumerate() {
        servers.push_str(&format!("    server h{} {addr}:{PORT} check\n", i + 1));
    }
    format!(
        "\
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    # A request whose connection failed or was closed before an answer is
    # safe to retry (GET): on another server.
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch 1

frontend www
    bind {BRIDGE_ADDR}:{PORT}
    default_backend hosts

backend hosts
    balance roundrobin
    option httpchk GET /
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
{servers}"
    )
}

fn read_pid(ns: &str) -> Option<u32> {
    std::fs::read_to_string(host_dir(ns).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(sig: &str, pid: u32) -> anyhow::Result<()> {
    sh("kill", &[&format!("-{sig}"), &pid.to_string()])
}

/// Until `addr` answers with `version` (bounded).
fn wait_version(addr: &str, version: &str) -> anyhow::Result<()> {
    let to = SocketAddr::new(addr.parse()?, PORT);
    let want = format!("version {version}");
    wait_until(&format!("{addr} answers {version}"), || {
        get(to, false).is_ok_and(|(s, body)| s == 200 && body.contains(&want))
    })
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting for: {what}")
}

/// The outcome of one request.
enum Outcome {
    Ok,
    Failed,
    Hung,
}

/// One `GET /` (a new connection, or `conn` kept alive): status and body.
fn get(to: SocketAddr, keep_alive: bool) -> std::io::Result<(u16, String)> {
    let mut conn = None;
    request(to, &mut conn, keep_alive)
}

fn request(
    to: SocketAddr,
    conn: &mut Option<TcpStream>,
    keep_alive: bool,
) -> std::io::Result<(u16, String)> {
    let mut stream = match conn.take() {
        Some(s) => s,
        None => {
            let s = TcpStream::connect_timeout(&to, HUNG)?;
            s.set_read_timeout(Some(HUNG))?;
            s.set_write_timeout(Some(HUNG))?;
            s
        }
    };
    let close = if keep_alive { "keep-alive" } else { "close" };
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: sim\r\nConnection: {close}\r\n\r\n"
    )?;
    // Read the head, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = read(&mut stream, &mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or(std::io::ErrorKind::InvalidData)?;
    while buf.len() < head_end + len {
        let n = read(&mut stream, &mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    let server_closes = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        })
    });
    if keep_alive && !server_closes {
        *conn = Some(stream);
    }
    Ok((status, body))
}

/// One read, retried when a signal interrupts it (this process's own
/// business, not the server's).
fn read(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The steps of the run, and each step's counts.
#[derive(Default)]
struct Steps {
    current: AtomicUsize,
    names: Mutex<Vec<String>>,
    /// Per step: ok, failed, hung, and the first few errors.
    counts: Mutex<Vec<([usize; 3], Vec<String>)>>,
}

impl Steps {
    fn begin(&self, name: &str) {
        let mut names = self.names.lock().expect("steps");
        names.push(name.to_owned());
        self.counts
            .lock()
            .expect("counts")
            .push(([0; 3], Vec::new()));
        self.current.store(names.len() - 1, Ordering::SeqCst);
        eprintln!("deploy-sim: {name}");
    }

    fn record(&self, step: usize, outcome: Outcome, error: Option<String>) {
        let mut counts = self.counts.lock().expect("counts");
        let Some((c, errors)) = counts.get_mut(step) else {
            return;
        };
        c[outcome as usize] += 1;
        if let Some(e) = error
            && errors.len() < 5
        {
            errors.push(e);
        }
    }
}

/// Clients through HAProxy until stopped (bounded in count and time).
struct Load {
    steps: Arc<Steps>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        let steps = Arc::new(Steps::default());
        steps.begin("warm-up");
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..2 * CLIENTS {
            let keep_alive = i % 2 == 1;
            let (steps, stop) = (Arc::clone(&steps), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                client(&steps, &stop, keep_alive);
            }));
        }
        Load {
            steps,
            stop,
            threads,
        }
    }

    fn finish(self) -> String {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        report(&self.steps)
    }
}

fn client(steps: &Steps, stop: &AtomicBool, keep_alive: bool) {
    const MAX_REQUESTS: usize = 1_000_000;
    let started = Instant::now();
    let mut conn = None;
    for _ in 0..MAX_REQUESTS {
        if stop.load(Ordering::SeqCst) || started.elapsed() > LOAD_BOUND {
            return;
        }
        let step = steps.current.load(Ordering::SeqCst);
        let (outcome, error) = match request(bridge_addr(), &mut conn, keep_alive) {
            Ok((200, _)) => (Outcome::Ok, None),
            Ok((status, body)) => (Outcome::Failed, Some(format!("{status} {body:?}"))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                (Outcome::Hung, Some(e.to_string()))
            }
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        steps.record(step, outcome, error);
        // A little pause: a bounded load, not a flood.
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn report(steps: &Steps) -> String {
    let names = steps.names.lock().expect("steps");
    let counts = steps.counts.lock().expect("counts");
    let mut out = format!(
        "deploy-sim: 3 hosts x 2 workers behind HAProxy, {CLIENTS} connection-per-request + \
         {CLIENTS} keep-alive clients\n\n| step | ok | failed | hung |\n|---|---:|---:|---:|\n"
    );
    let mut phases: Vec<(String, [usize; 3])> = Vec::new();
    for (name, (c, errors)) in names.iter().zip(counts.iter()) {
        if name == "warm-up" || name == "end" {
            continue;
        }
        out.push_str(&format!("| {name} | {} | {} | {} |\n", c[0], c[1], c[2]));
        for e in errors {
            out.push_str(&format!("|  ↳ {e} | | | |\n"));
        }
        let phase = name.split(' ').next().unwrap_or("").to_owned();
        match phases.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, t)) => (0..3).for_each(|i| t[i] += c[i]),
            None => phases.push((phase, *c)),
        }
    }
    out.push_str("\n| phase | ok | failed | hung |\n|---|---:|---:|---:|\n");
    let label = |p: &str| match p {
        "1" => "1 steady",
        "2" => "2 rolling upgrade",
        "3" => "3 rolling reload",
        "4" => "4 SIGKILL + restart",
        _ => "?",
    };
    for (p, c) in &phases {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            label(p),
            c[0],
            c[1],
            c[2]
        ));
    }
    out
}

fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("could not run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` exited with {status}", args.join(" "));
    }
    Ok(())
}

fn quiet(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("`{program}` failed");
    }
    Ok(())
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("could not run {program}"))?;
    if !out.status.success() {
        bail!("`{program}` failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
