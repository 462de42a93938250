//! Shared helpers: the message type, settings for the helper binary,
//! bounded event waits, and a child's output read line by line.

use std::time::Duration;

use cluster_core::{Cluster, Event, Settings, WorkerId, WorkerStdio};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The helper binary's message type (same shape, so the same wire), but for
/// the last variant: each side's variant 3 does not decode on the other
/// (a unit here, a `u64` in the helper), so each can send the other a
/// message it cannot decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Msg {
    Text(String),
    Ping(u64),
    Pong { worker: u64, n: u64 },
    TestOnly,
}

/// The bound on any single wait of a test (the machine is noisy).
pub(crate) const BOUND: Duration = Duration::from_secs(20);

pub(crate) const HELPER: &str = env!("CARGO_BIN_EXE_cluster-helper");

/// Settings running the helper in `mode`, `n` workers, output inherited.
pub(crate) fn settings(mode: &str, n: usize) -> Settings {
    let mut s = Settings::new();
    s.program(HELPER)
        .env("HELPER_MODE", mode)
        .n_workers(n)
        .stdio(WorkerStdio::Inherit)
        .shutdown_deadline(Duration::from_secs(2));
    s
}

/// The next event, or a test failure after [`BOUND`].
pub(crate) async fn next(cluster: &mut Cluster<Msg>) -> Event<Msg> {
    tokio::time::timeout(BOUND, cluster.next_event())
        .await
        .expect("timed out waiting for an event")
        .expect("the event stream ended")
}

/// Events until the `n`th that matches `pred` (returned with everything
/// before it).
pub(crate) async fn until_n(
    cluster: &mut Cluster<Msg>,
    n: usize,
    mut pred: impl FnMut(&Event<Msg>) -> bool,
) -> Vec<Event<Msg>> {
    let mut matched = 0;
    until(cluster, |ev| {
        matched += usize::from(pred(ev));
        matched == n
    })
    .await
}

/// Events until one matches `pred` (returned with everything before it).
pub(crate) async fn until(
    cluster: &mut Cluster<Msg>,
    mut pred: impl FnMut(&Event<Msg>) -> bool,
) -> Vec<Event<Msg>> {
    let mut seen = Vec::new();
    loop {
        let ev = next(cluster).await;
        let done = pred(&ev);
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// Shut down within the bound and drain the rest of the events.
pub(crate) async fn shutdown(mut cluster: Cluster<Msg>) -> Vec<Event<Msg>> {
    tokio::time::timeout(BOUND, cluster.shutdown())
        .await
        .expect("shutdown timed out")
        .expect("shutdown failed");
    let mut rest = Vec::new();
    while let Some(ev) = tokio::time::timeout(BOUND, cluster.next_event())
        .await
        .expect("the event stream did not end")
    {
        rest.push(ev);
    }
    rest
}

/// Shut down and check that nothing else happened first (no restart, no
/// stray exit): the rest of the events must be empty.
pub(crate) async fn shutdown_with_no_more_events(cluster: Cluster<Msg>) {
    let rest = shutdown(cluster).await;
    assert!(
        rest.is_empty(),
        "events after the last expected one: {:?}",
        rest.iter().map(brief).collect::<Vec<_>>()
    );
}

/// Asserts that the [`brief`]s of `events` contain each of `want`, in that
/// order (other events may come between them).
pub(crate) fn assert_in_order(events: &[Event<Msg>], want: &[&str]) {
    let briefs: Vec<_> = events.iter().map(brief).collect();
    let pos = |w: &str| {
        briefs
            .iter()
            .position(|b| b == w)
            .unwrap_or_else(|| panic!("no {w:?} in {briefs:?}"))
    };
    for pair in want.windows(2) {
        assert!(
            pos(pair[0]) < pos(pair[1]),
            "{:?} before {:?} in {briefs:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Asserts that `worker` answers a ping: its channel and its loop work.
pub(crate) async fn assert_serves(cluster: &mut Cluster<Msg>, worker: WorkerId) {
    cluster
        .worker(worker)
        .expect("the worker is live")
        .send(&Msg::Ping(1))
        .await
        .expect("the ping is sent");
    until(
        cluster,
        |ev| matches!(ev, Event::Message(m) if m.worker() == worker),
    )
    .await;
}

/// A compact form of the lifecycle events, for comparisons.
pub(crate) fn brief(ev: &Event<Msg>) -> String {
    match ev {
        Event::Fork { worker, .. } => format!("fork {worker}"),
        Event::Online { worker, .. } => format!("online {worker}"),
        Event::Listening { worker, .. } => format!("listening {worker}"),
        Event::Message(m) => format!("message {}", m.worker()),
        Event::Disconnect { worker, .. } => format!("disconnect {worker}"),
        Event::Exit {
            worker,
            exit,
            exited_after_disconnect,
            ..
        } => format!("exit {worker} {exit} after_disconnect={exited_after_disconnect}"),
        Event::Unresponsive { worker, .. } => format!("unresponsive {worker}"),
        Event::ChannelError { worker, .. } => format!("channel error {worker}"),
        Event::MessageError { worker, .. } => format!("message error {worker}"),
        Event::ForkError { slot, .. } => format!("fork error {slot}"),
        Event::RestartScheduled { slot, delay } => {
            format!("restart {slot} in {}ms", delay.as_millis())
        }
        Event::GaveUp { slot, last_exit } => format!("gave up {slot} after {last_exit}"),
        other => format!("{other:?}"),
    }
}

/// Slot 0, usable in patterns.
pub(crate) const SLOT_0: cluster_core::SlotId = cluster_core::SlotId::new(0);

/// A child's output stream, read line by line on a task of its own: the
/// lines taken so far (`seen`, for the failure messages), and bounded waits
/// for the next ones.
pub(crate) struct Lines {
    rx: mpsc::UnboundedReceiver<String>,
    pub(crate) seen: Vec<String>,
}

impl Lines {
    /// Read `stream` line by line until it ends.
    pub(crate) fn read(stream: impl AsyncRead + Unpin + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line (kept in `seen`), or a test failure naming `what` if
    /// none came by `deadline` or the output ended.
    pub(crate) async fn next_by(&mut self, deadline: Instant, what: &str) -> String {
        let line = tokio::time::timeout_at(deadline, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} line in time; seen: {:#?}", self.seen))
            .unwrap_or_else(|| {
                panic!(
                    "the output ended before a {what} line; seen: {:#?}",
                    self.seen
                )
            });
        self.seen.push(line.clone());
        line
    }

    /// The next line matching `pred` (the lines before it are kept in
    /// `seen`), or a test failure after [`BOUND`].
    pub(crate) async fn wait_line(&mut self, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let line = self.next_by(deadline, "matching").await;
            if pred(&line) {
                return line;
            }
        }
    }

    /// Take every line left until the output ends (each wait bounded).
    pub(crate) async fn rest(&mut self) {
        while let Ok(Some(line)) = tokio::time::timeout(BOUND, self.rx.recv()).await {
            self.seen.push(line);
        }
    }
}

/// Start `s` on a round-robin port, until `n` workers listen: the address.
pub(crate) async fn serving(mut s: Settings, n: usize) -> (Cluster<Msg>, std::net::SocketAddr) {
    s.env("HELPER_ADDR", "127.0.0.1:0")
        .scheduling_policy(cluster_core::PolicyKind::RoundRobin);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    cluster.start().unwrap();
    let mut addr = None;
    let mut listening = 0;
    until(&mut cluster, |ev| {
        if let Event::Listening { addr: a, .. } = ev {
            addr = Some(*a);
            listening += 1;
        }
        listening == n
    })
    .await;
    (cluster, addr.expect("an address"))
}

/// Wait until the process is stopped (state `T` in `/proc/<pid>/stat`).
pub(crate) async fn wait_stopped(pid: u32) {
    tokio::time::timeout(BOUND, async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            if state == Some("T") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the worker did not stop");
}

/// A kind of listener. The fault tests that exist for TCP run for each
/// (a new path re-proves the old guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `Worker::listen` on a loopback port the primary binds.
    Tcp,
    /// `Worker::listen_unix` on a socket file the primary binds.
    Unix,
    /// `Worker::listen_fd` on a TCP socket given to `Cluster::inherit_socket`.
    InheritedTcp,
    /// `Worker::listen_fd` on a Unix-domain socket given to
    /// `Cluster::inherit_socket`.
    InheritedUnix,
}

/// Every kind of stream listener.
pub(crate) const KINDS: [Kind; 4] = [
    Kind::Tcp,
    Kind::Unix,
    Kind::InheritedTcp,
    Kind::InheritedUnix,
];

/// Where the clients of a cluster connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

/// A client's connection, of either kind.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Target {
    /// Connect (not bounded in time: the callers bound their whole
    /// exchange).
    pub(crate) async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Target::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await?),
            Target::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        })
    }

    /// The socket file, for a Unix-domain target.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            Target::Tcp(_) => None,
            Target::Unix(p) => Some(p),
        }
    }
}

/// A socket path of its own for each call in this test process (short
/// enough for `sun_path`), nothing there yet.
pub(crate) fn socket_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("pw-{}-{n}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Start `s` (a helper mode that serves, e.g. `serve`) on a new listener of
/// `kind`, under the policy `s` names (round-robin by default), until `n`
/// workers listen:
/// the cluster and where its clients connect. An inherited socket is
/// opened here and given to the cluster before the first fork.
pub(crate) async fn serving_on(mut s: Settings, kind: Kind, n: usize) -> (Cluster<Msg>, Target) {
    let (target, inherited) = match kind {
        Kind::Tcp => {
            s.env("HELPER_ADDR", "127.0.0.1:0");
            (None, None)
        }
        Kind::Unix => {
            let path = socket_path("unix");
            s.env("HELPER_UNIX", &path);
            (Some(Target::Unix(path)), None)
        }
        Kind::InheritedTcp => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let target = Target::Tcp(l.local_addr().unwrap());
            (Some(target), Some(cluster_core::InheritedSocket::Tcp(l)))
        }
        Kind::InheritedUnix => {
            let path = socket_path("inherited");
            let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
            (
                Some(Target::Unix(path)),
                Some(cluster_core::InheritedSocket::Unix(l)),
            )
        }
    };
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    if let Some(socket) = inherited {
        let fd = cluster.inherit_socket(socket);
        cluster
            .setup(|s| {
                s.env("HELPER_FD", fd.to_string());
            })
            .unwrap();
    }
    cluster.start().unwrap();
    let mut addr = None;
    let mut listening = 0;
    until(&mut cluster, |ev| {
        match ev {
            Event::Listening { addr: a, .. } => {
                addr = Some(*a);
                listening += 1;
            }
            Event::ListeningOn { .. } => listening += 1,
            _ => {}
        }
        listening == n
    })
    .await;
    let target = target.unwrap_or_else(|| Target::Tcp(addr.expect("an address")));
    (cluster, target)
}
