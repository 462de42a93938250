//! What the tests share: starting `procwork run` in an instance of its
//! own, reading its lines, asking it for its status, the HTTP load
//! clients, and the processes of a process group.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const PROCWORK: &str = env!("CARGO_BIN_EXE_procwork");

/// A scratch directory for one test's Unix-domain socket, removed on drop
/// (a failing test too leaves nothing behind).
pub(crate) struct UnixSocket {
    dir: PathBuf,
    /// The socket file's path.
    pub(crate) path: PathBuf,
}

impl UnixSocket {
    pub(crate) fn new(tag: &str) -> UnixSocket {
        let dir = std::env::temp_dir().join(format!("procwork-it-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the socket's directory");
        let path = dir.join("app.sock");
        UnixSocket { dir, path }
    }

    /// The `--listen` argument for it.
    pub(crate) fn listen(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The (slot, pid) of every worker of `status` in `state`, sorted by slot.
pub(crate) fn workers_in(status: &Value, state: &str) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == state)
        .map(|w| {
            (
                w["slot"].as_u64().unwrap(),
                w["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    out.sort();
    out
}

/// Fails the test with a clear message when `tool` is not on PATH.
pub(crate) fn require(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not on PATH: procwork's tests run the Node.js and Python \
                 example servers and need node (v18+) and python3 installed"
            )
        })
}

/// The example apps' directory.
pub(crate) fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A program to run under procwork: the Node.js or the Python example.
#[derive(Debug, Clone, Copy)]
pub(crate) enum App {
    Node,
    Python,
}

impl App {
    pub(crate) fn command(self) -> Vec<String> {
        match self {
            App::Node => vec![require("node").display().to_string(), "app.js".into()],
            App::Python => vec![require("python3").display().to_string(), "app.py".into()],
        }
    }
}

/// A running `procwork run`, in a runtime directory of its own.
pub(crate) struct Instance {
    pub(crate) child: Child,
    pub(crate) runtime_dir: PathBuf,
    lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Instance {
    /// `procwork run OPTIONS -- COMMAND` in `examples/`, with `env`.
    pub(crate) fn start(options: &[&str], command: &[String], env: &[(&str, &str)]) -> Instance {
        Instance::start_under(None, options, command, env)
    }

    /// `procwork run OPTIONS -- COMMAND` in `examples/`, with `env`; behind
    /// `launcher` (a program and its arguments, as `systemd-socket-activate
    /// -l ADDR`) if given, which must pass `XDG_RUNTIME_DIR` on.
    pub(crate) fn start_under(
        launcher: Option<&[String]>,
        options: &[&str],
        command: &[String],
        env: &[(&str, &str)],
    ) -> Instance {
        let runtime_dir = std::env::temp_dir().join(format!(
            "procwork-it-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&runtime_dir);
        std::fs::create_dir_all(&runtime_dir).unwrap();
        std::fs::set_permissions(
            &runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let mut cmd = match launcher {
            Some([program, args @ ..]) => {
                let mut cmd = Command::new(program);
                cmd.args(args)
                    .arg("-E")
                    .arg(format!("XDG_RUNTIME_DIR={}", runtime_dir.display()))
                    .arg(PROCWORK);
                cmd
            }
            _ => Command::new(PROCWORK),
        };
        cmd.arg("run")
            .args(options)
            .arg("--")
            .args(command)
            .current_dir(examples())
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("DRAIN_GRACE_MS", "3000")
            .env("DRAIN_GRACE_S", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("procwork starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("  | {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Instance {
            child,
            runtime_dir,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line of procwork's stderr containing `text`.
    pub(crate) fn wait_line(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {timeout:?}; lines so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Runs a subcommand against this instance (same directory, same
    /// runtime directory).
    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        let mut child = Command::new(PROCWORK)
            .args(args)
            .current_dir(examples())
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: a subcommand that hangs fails the test.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`procwork {}` did not finish within 60s", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `procwork status --json`.
    pub(crate) fn status(&self) -> Value {
        let out = self.ctl(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The first TCP address procwork listens on.
    pub(crate) fn tcp_addr(&self) -> SocketAddr {
        let status = self.status();
        status["listen"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l.as_str()?.rsplit("tcp://").next()?.parse().ok())
            .next()
            .expect("a tcp listener")
    }

    /// The (slot, pid) of every worker in `state`, sorted by slot.
    pub(crate) fn workers(&self, state: &str) -> Vec<(u64, u32)> {
        workers_in(&self.status(), state)
    }

    /// Waits (bounded) until `pred` holds of the status.
    pub(crate) fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status();
            if pred(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "status never showed {what}: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits (bounded) for procwork's exit code.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "procwork did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A procwork that took over from this one (an upgrade) is stopped
        // through the control socket, so no test leaves one running.
        let instances = std::fs::read_dir(self.runtime_dir.join("procwork"))
            .into_iter()
            .flatten()
            .flatten();
        if instances
            .into_iter()
            .any(|d| d.path().join("control.sock").exists())
        {
            let _ = self.ctl(&["stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started and a valid signal number.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// What a load client saw.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) errors: Vec<String>,
}

/// The most requests a load client sends, whatever happens.
const MAX_REQUESTS: u64 = 500_000;

/// Starts `clients` threads sending `GET /` to `addr` until `stop` is set
/// (or 60 s or [`MAX_REQUESTS`] pass): each on one kept-alive connection
/// (reconnecting when a response says `Connection: close`), or with
/// `per_request` a new connection per request.
pub(crate) fn load(
    addr: SocketAddr,
    clients: usize,
    per_request: bool,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<LoadReport>> {
    (0..clients)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut report = LoadReport::default();
                let mut conn: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < deadline
                    && report.ok + report.failed < MAX_REQUESTS
                {
                    match request(addr, &mut conn, per_request) {
                        Ok(()) => report.ok += 1,
                        Err(e) => {
                            report.failed += 1;
                            if report.errors.len() < 10 {
                                report.errors.push(e);
                            }
                            conn = None;
                        }
                    }
                }
                report
            })
        })
        .collect()
}

/// Joins load threads into one report.
pub(crate) fn join(handles: Vec<JoinHandle<LoadReport>>) -> LoadReport {
    let mut total = LoadReport::default();
    for h in handles {
        let r = h.join().unwrap();
        total.ok += r.ok;
        total.failed += r.failed;
        total.errors.extend(r.errors);
    }
    total
}

/// One request; `conn` is the kept-alive connection (opened if `None`,
/// dropped after a `Connection: close` response).
fn request(
    addr: SocketAddr,
    conn: &mut Option<TcpStream>,
    per_request: bool,
) -> Result<(), String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        *conn = Some(s);
    }
    let Some(s) = conn.as_mut() else {
        unreachable!()
    };
    let req: &[u8] = if per_request {
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    };
    s.write_all(req).map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err(format!("closed before the response ({} bytes)", head.len())),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("read: {e}")),
        }
        if head.len() > 8192 {
            return Err("response head too long".into());
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!("status: {}", head.lines().next().unwrap_or("")));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no content-length")?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    if per_request || head.contains("connection: close") {
        *conn = None;
    }
    Ok(())
}

/// One request on a new connection; the body.
pub(crate) fn get(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.split("\r\n\r\n").nth(1).map(str::to_owned).ok_or(out)
}

/// The pids of every process whose process group is in `groups`.
pub(crate) fn processes_in_groups(groups: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, pgrp.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if let Some(pgrp) = fields.get(2).and_then(|f| f.parse::<u32>().ok())
            && groups.contains(&pgrp)
        {
            out.push(pid);
        }
    }
    out
}
