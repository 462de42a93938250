//! The primary never blocks on output: a primary (the helper run as
//! `cluster-helper supervise <n>`) whose stdout is a small pipe that the
//! test does not read, with workers printing far more than any buffer holds,
//! keeps supervising (a killed worker is reaped and replaced, messages and
//! connections flow, a starved heartbeat is caught under the restart guard,
//! shutdown completes); once the pipe is drained, every forwarded line
//! arrives whole. The primary reports its events on stderr.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::support::{BOUND, HELPER};

/// The helper's `SPEW_LINES`.
const SPEW_LINES: u64 = 20_000;

/// The helper primary with its stdout stalled.
struct Stalled {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    /// The read end of the primary's stdout, unread until `drain`.
    stdout: Option<std::io::PipeReader>,
}

impl Stalled {
    fn start(worker_mode: &str, n: usize, env: &[(&str, &str)]) -> Stalled {
        let (stdout, writer) = std::io::pipe().expect("a pipe");
        // The smallest pipe (one page): it is full after a few lines.
        nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096))
            .expect("shrink the pipe");
        let mut command = Command::new(HELPER);
        command
            .args(["supervise", &n.to_string()])
            .env("HELPER_WORKER_MODE", worker_mode)
            .env("HELPER_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start the helper primary");
        // The command holds our copy of the write end: only the primary
        // may keep it open, or the drain would never see its end.
        drop(command);
        let stdin = child.stdin.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // Forwarded worker stderr is not an event.
                if !line.starts_with("[worker ") && tx.send(line).is_err() {
                    return;
                }
            }
        });
        Stalled {
            child,
            stdin,
            events,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// The next event line matching `pred` (bounded).
    async fn wait(&mut self, mut pred: impl FnMut(&[&str]) -> bool) -> Vec<String> {
        loop {
            let line = tokio::time::timeout(BOUND, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no expected event within the bound: {:#?}", self.seen))
                .unwrap_or_else(|| panic!("the primary's stderr ended: {:#?}", self.seen));
            self.seen.push(line.clone());
            let words: Vec<&str> = line.split(' ').collect();
            if pred(&words) {
                return words.into_iter().map(String::from).collect();
            }
        }
    }

    /// Ping every worker; the lines printed by each of `workers`.
    async fn ping(&mut self, workers: &[String]) -> BTreeMap<String, u64> {
        self.stdin.write_all(b"ping\n").await.expect("send ping");
        let mut counts = BTreeMap::new();
        while counts.len() < workers.len() {
            let words = self
                .wait(|w| w[0] == "pong" && workers.iter().any(|id| id == w[1]))
                .await;
            counts.insert(words[1].clone(), words[2].parse().unwrap());
        }
        counts
    }

    /// Ping until two rounds in a row report the same counts, each below
    /// the total: the workers' printing threads are (most likely) blocked.
    async fn until_blocked(&mut self, workers: &[String]) -> BTreeMap<String, u64> {
        let mut last = self.ping(workers).await;
        for _ in 0..1000 {
            let now = self.ping(workers).await;
            if now == last && now.values().all(|n| *n < SPEW_LINES) {
                return now;
            }
            last = now;
        }
        panic!("the workers' output never stalled: {last:?}");
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// The exit code, once the primary has exited (bounded).
    async fn exited(&mut self) -> Option<i32> {
        tokio::time::timeout(BOUND, self.child.wait())
            .await
            .expect("the primary did not exit in time")
            .expect("wait for the primary")
            .code()
    }

    /// Start reading the stalled pipe, to its end, on a thread that sends
    /// what it reads.
    fn drain(&mut self) -> mpsc::UnboundedReceiver<Vec<u8>> {
        let mut stdout = self.stdout.take().expect("drained once");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// A client's view of the service: the id of the worker that answered.
async fn served_by(addr: &str) -> String {
    let answer = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while conn.read(&mut byte).await.ok()? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8(line).ok()
    };
    tokio::time::timeout(BOUND, answer)
        .await
        .expect("the connection was not served in time")
        .expect("the connection was served")
}

#[tokio::test]
async fn a_stalled_stdout_never_stops_supervision_and_loses_no_line() {
    // A heartbeat that a starved worker would miss many times over, with a
    // timeout that covers a start-up on a loaded machine.
    let mut primary = Stalled::start("spew", 2, &[("HELPER_HEARTBEAT_MS", "50,2000")]);
    let mut pids = BTreeMap::new();
    let mut addr = String::new();
    let mut listening = Vec::new();
    while listening.len() < 2 {
        let words = primary.wait(|w| matches!(w[0], "fork" | "listening")).await;
        match words[0].as_str() {
            "fork" => drop(pids.insert(words[1].clone(), words[2].clone())),
            _ => {
                addr.clone_from(&words[2]);
                listening.push(words[1].clone());
            }
        }
    }
    primary.until_blocked(&listening).await;

    // Long enough for the heartbeat to fire had the workers gone silent
    // (nothing to await: this is the time in which nothing must happen).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // They cannot have printed everything (it exceeds every buffer): their
    // printing threads are blocked, and their runtimes answer.
    let counts = primary.ping(&listening).await;
    assert!(counts.values().all(|n| *n < SPEW_LINES), "{counts:?}");

    // SIGKILL one: it is reaped and replaced while the output stays stalled.
    let victim = listening.remove(0);
    let pid = nix::unistd::Pid::from_raw(pids[&victim].parse().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    primary
        .wait(|w| w[0] == "exit" && w[1] == victim && w[2] == "signal")
        .await;
    let replacement = primary.wait(|w| w[0] == "listening").await[1].clone();
    listening.push(replacement.clone());
    primary.until_blocked(&listening).await;
    // Messages and connections flow to every live worker.
    primary.ping(&listening).await;
    for _ in 0..4 {
        let id = served_by(&addr).await;
        assert!(listening.contains(&id), "{id} is not live: {listening:?}");
    }
    assert!(
        !primary.seen.iter().any(|l| l.starts_with("unresponsive")),
        "a worker blocked on output was declared unresponsive: {:#?}",
        primary.seen
    );

    // Drained, the output flows again, up to the live workers' last lines.
    let mut chunks = primary.drain();
    let mut output = Vec::new();
    let last_lines: Vec<String> = listening
        .iter()
        .map(|id| {
            let n = SPEW_LINES - 1;
            format!(
                "[worker {id}] spew {id} {n} {}\n",
                "x".repeat((n % 97) as usize)
            )
        })
        .collect();
    let mut found = vec![false; last_lines.len()];
    while found.contains(&false) {
        let chunk = tokio::time::timeout(BOUND, chunks.recv())
            .await
            .expect("the drained output stopped before the last lines")
            .expect("the primary's stdout ended before the last lines");
        // Search only what is new (and a line's length before it).
        let from = output.len().saturating_sub(256);
        output.extend_from_slice(&chunk);
        for (line, found) in last_lines.iter().zip(&mut found) {
            *found |= output[from..]
                .windows(line.len())
                .any(|w| w == line.as_bytes());
        }
    }
    primary.terminate();
    primary.wait(|w| w[0] == "done").await;
    assert_eq!(primary.exited().await, Some(0));
    while let Some(chunk) = tokio::time::timeout(BOUND, chunks.recv())
        .await
        .expect("the primary's stdout did not end")
    {
        output.extend_from_slice(&chunk);
    }

    // Every line whole; each worker's lines complete and in order (the
    // victim's up to where it was killed).
    let output = String::from_utf8(output).expect("utf-8 output");
    assert!(output.ends_with('\n'), "a cut last line");
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for line in output.lines() {
        let (prefix, rest) = line
            .split_once("] ")
            .unwrap_or_else(|| panic!("no prefix: {line:?}"));
        let id = prefix
            .strip_prefix("[worker ")
            .unwrap_or_else(|| panic!("a bad prefix: {line:?}"));
        let words: Vec<&str> = rest.split(' ').collect();
        let n: u64 = match words.as_slice() {
            ["spew", w, n, xs] if *w == id => {
                let n = n.parse().unwrap();
                assert_eq!(*xs, "x".repeat((n % 97) as usize), "a cut line: {line:?}");
                n
            }
            _ => panic!("a cut or interleaved line: {line:?}"),
        };
        let expected = next.entry(id.to_string()).or_insert(0);
        assert_eq!(n, *expected, "worker {id}: a line lost or reordered");
        *expected += 1;
    }
    for id in &listening {
        assert_eq!(
            next.get(id),
            Some(&SPEW_LINES),
            "worker {id}: lines missing"
        );
    }
    assert!(next.contains_key(&victim));
}

#[tokio::test]
async fn a_worker_whose_runtime_blocks_on_output_is_replaced_each_time_and_kept() {
    // `spew-inline` prints from its runtime's only thread: once the output
    // stalls, its heartbeat stops too. It is killed and replaced, again and
    // again, each replacement living until its own heartbeat timeout (so the
    // loop never spins); a worker that came up and was then killed is no
    // failed start, so the crash-loop limit (one per minute here) does not
    // give the slot up: the service stays as available as its log allows.
    let mut primary = Stalled::start(
        "spew-inline",
        1,
        &[
            ("HELPER_HEARTBEAT_MS", "50,1000"),
            ("HELPER_MAX_RESTARTS", "1"),
        ],
    );
    let first = primary.wait(|w| w[0] == "unresponsive").await[1].clone();
    primary
        .wait(|w| w[0] == "exit" && w[1] == first && w[2] == "signal")
        .await;
    primary.wait(|w| w[0] == "restart").await;
    let second = primary.wait(|w| w[0] == "unresponsive").await[1].clone();
    assert_ne!(first, second, "a worker declared unresponsive twice");
    primary.wait(|w| w[0] == "restart").await;
    let third = primary.wait(|w| w[0] == "unresponsive").await[1].clone();
    assert_ne!(second, third, "a worker declared unresponsive twice");
    assert!(
        !primary.seen.iter().any(|l| l.starts_with("gave-up")),
        "a worker killed after it came up is no failed start: {:#?}",
        primary.seen
    );
    // Shutdown completes with the output still stalled.
    primary.terminate();
    primary.wait(|w| w[0] == "done").await;
    assert_eq!(primary.exited().await, Some(0));
}
