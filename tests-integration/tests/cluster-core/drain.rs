//! The drain, end to end, on the two HTTP examples (`axum`, on
//! `axum::serve`, and `hello-cluster`, on `cluster_core::hyper::serve`):
//! rolling reloads (SIGHUP) under keep-alive and connection-per-request load
//! fail no request and show the clients no connection error, and a SIGTERM
//! finishes the requests in flight, answers a connection accepted just
//! before it, closes idle keep-alive connections after the drain grace and
//! ends the primary with 0.
//!
//! The clients are raw HTTP/1.1 over `TcpStream`: a keep-alive client that
//! receives `Connection: close` opens a new connection (as every HTTP client
//! does); that is not an error. Anything else is: a failed connect, write or
//! read, an answer cut short, a status other than 200.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::demo::{example_binary, get};
use crate::support::{BOUND, Lines};

/// Which example serves.
#[derive(Debug, Clone, Copy)]
enum App {
    /// `examples/axum.rs`: `Cluster::run`'s event log (`listening on <addr>`).
    Axum,
    /// `examples/hello-cluster.rs`: the event log with URLs (`listening on
    /// http://<addr>/`).
    Hello,
}

impl App {
    fn binary(self) -> std::path::PathBuf {
        example_binary(match self {
            App::Axum => "axum",
            App::Hello => "hello-cluster",
        })
    }

    /// The listening address in a line announcing a listening worker.
    fn listening(self, line: &str) -> Option<SocketAddr> {
        let rest = match self {
            App::Axum => line.split_once(" listening on ")?.1,
            App::Hello => line.split_once(" listening on http://")?.1,
        };
        rest.trim_end_matches('/').parse().ok()
    }

    /// Whether the line ends a rolling reload; `Err` with the line if the
    /// reload failed.
    fn reloaded(self, line: &str) -> Option<Result<(), String>> {
        let (done, failed) = ("reload done", "reload failed");
        if line == done {
            Some(Ok(()))
        } else if line.starts_with(failed) {
            Some(Err(line.to_owned()))
        } else {
            None
        }
    }
}

/// A running example: its primary, its output lines, where it listens.
struct Server {
    app: App,
    child: Child,
    lines: Lines,
    addr: SocketAddr,
    pid: Pid,
}

impl Server {
    /// Start `app` with `workers` workers on a free port under `policy`;
    /// returns once every worker listens.
    async fn start(app: App, policy: &str, workers: usize) -> Server {
        let mut child = Command::new(app.binary())
            .env("PORT", "0")
            .env("WORKERS", workers.to_string())
            .env("CLUSTER_SCHED_POLICY", policy)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the example");
        let pid = Pid::from_raw(child.id().expect("a pid") as i32);
        let lines = Lines::read(child.stdout.take().expect("piped stdout"));
        let mut server = Server {
            app,
            child,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
        };
        for _ in 0..workers {
            let line = server.lines.wait_line(|l| app.listening(l).is_some()).await;
            server.addr = app.listening(&line).expect("an address");
        }
        server
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid, signal).expect("signal the primary");
    }

    /// SIGHUP, then wait for the end of the rolling reload, which must
    /// have replaced every worker.
    async fn reload(&mut self) {
        self.signal(Signal::SIGHUP);
        let app = self.app;
        let line = self.lines.wait_line(|l| app.reloaded(l).is_some()).await;
        if let Some(Err(failed)) = app.reloaded(&line) {
            panic!("{failed}; seen: {:#?}", self.lines.seen);
        }
    }

    /// SIGTERM, then the primary's exit code (bounded) and its output.
    async fn terminate(self) -> (Option<i32>, Vec<String>) {
        self.signal(Signal::SIGTERM);
        self.exit().await
    }

    /// The primary's exit code (bounded) and its output.
    async fn exit(mut self) -> (Option<i32>, Vec<String>) {
        let status = tokio::time::timeout(BOUND, self.child.wait())
            .await
            .expect("the primary did not exit in time")
            .expect("wait for the primary");
        self.lines.rest().await;
        (status.code(), self.lines.seen)
    }
}

/// One HTTP/1.1 answer: its status, whether it ends its connection
/// (`Connection: close`), and its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    close: bool,
    body: String,
}

/// Send `GET path` on a keep-alive connection and read the whole answer
/// (its `Content-Length`), bounded in time.
async fn exchange(conn: &mut BufReader<TcpStream>, path: &str) -> Result<Answer, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: cluster\r\n\r\n");
    let io = async {
        conn.get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        read_answer(conn).await
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Read one answer: status line, headers, a body of `Content-Length`.
async fn read_answer(conn: &mut BufReader<TcpStream>) -> Result<Answer, String> {
    let mut line = String::new();
    let read_line = async |conn: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        match conn.read_line(line).await {
            Ok(0) => Err("closed before a whole answer".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    read_line(conn, &mut line).await?;
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {line:?}"))?;
    let (mut len, mut close) = (0, false);
    loop {
        read_line(conn, &mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = value
                .parse()
                .map_err(|_| format!("bad length: {header:?}"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body)
        .await
        .map_err(|e| format!("body cut short: {e}"))?;
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(Answer {
        status,
        close,
        body,
    })
}

async fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    Ok(BufReader::new(stream))
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    answered: usize,
    /// Connections the server ended with `Connection: close`.
    closed_by_server: usize,
    failures: Vec<String>,
}

/// The most requests of one client, and the longest it runs.
const MAX_REQUESTS: usize = 20_000;
const MAX_RUN: Duration = Duration::from_secs(90);

/// A keep-alive client: one connection for request after request, a new
/// one only when the server ends it with `Connection: close`. Counts its
/// answers in `done` until told to stop.
async fn keep_alive_client(
    addr: SocketAddr,
    done: watch::Sender<usize>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let started = Instant::now();
    let mut seen = Seen::default();
    let mut conn = None;
    for n in 1..=MAX_REQUESTS {
        if *stop.borrow_and_update() || started.elapsed() > MAX_RUN {
            break;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => match connect(addr).await {
                Ok(c) => c,
                Err(e) => {
                    seen.failures.push(format!("#{n}: {e}"));
                    continue;
                }
            },
        };
        match exchange(&mut c, "/").await {
            Ok(a) if a.status == 200 => {
                seen.answered += 1;
                if a.close {
                    seen.closed_by_server += 1;
                } else {
                    conn = Some(c);
                }
            }
            Ok(a) => seen.failures.push(format!("#{n}: {a:?}")),
            Err(e) => seen.failures.push(format!("#{n}: {e}")),
        }
        done.send_modify(|d| *d += 1);
    }
    seen
}

/// A connection-per-request client (`Connection: close` on every request).
async fn per_request_client(
    addr: SocketAddr,
    done: watch::Sender<usize>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let started = Instant::now();
    let mut seen = Seen::default();
    for n in 1..=MAX_REQUESTS {
        if *stop.borrow_and_update() || started.elapsed() > MAX_RUN {
            break;
        }
        match get(addr, "/").await {
            Ok((200, _)) => seen.answered += 1,
            Ok((status, body)) => seen.failures.push(format!("#{n}: {status} {body:?}")),
            Err(e) => seen.failures.push(format!("#{n}: {e}")),
        }
        done.send_modify(|d| *d += 1);
    }
    seen
}

/// How many rolling reloads each load goes through.
const RELOADS: usize = 5;

/// Keep-alive clients and connection-per-request clients at once, through
/// [`RELOADS`] rolling reloads: no failure of either kind.
async fn reloads_under_load_fail_nothing(app: App, policy: &str) {
    const KEEP_ALIVE: usize = 3;
    const PER_REQUEST: usize = 2;
    let mut server = Server::start(app, policy, 2).await;
    let (done_tx, mut done) = watch::channel(0usize);
    let (stop_tx, stop) = watch::channel(false);
    let keep_alive: Vec<_> = (0..KEEP_ALIVE)
        .map(|_| {
            tokio::spawn(keep_alive_client(
                server.addr,
                done_tx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let per_request: Vec<_> = (0..PER_REQUEST)
        .map(|_| {
            tokio::spawn(per_request_client(
                server.addr,
                done_tx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Under load before, between and after the reloads.
    let mut progress = async |more: usize| {
        let now = *done.borrow();
        tokio::time::timeout(BOUND, done.wait_for(|d| *d >= now + more))
            .await
            .expect("the load goes on")
            .expect("the load runs");
    };
    progress(50).await;
    for _ in 0..RELOADS {
        server.reload().await;
        progress(50).await;
    }
    stop_tx.send_replace(true);
    let collect = async |tasks: Vec<tokio::task::JoinHandle<Seen>>| {
        let mut all = Seen::default();
        for t in tasks {
            let seen = tokio::time::timeout(BOUND, t)
                .await
                .expect("the client stopped")
                .expect("the client ran");
            all.answered += seen.answered;
            all.closed_by_server += seen.closed_by_server;
            all.failures.extend(seen.failures);
        }
        all
    };
    let keep_alive = collect(keep_alive).await;
    let per_request = collect(per_request).await;
    eprintln!(
        "{app:?} ({policy}), {RELOADS} reloads: keep-alive: {} answered, {} failed, {} \
         connections ended by the server; per request: {} answered, {} failed",
        keep_alive.answered,
        keep_alive.failures.len(),
        keep_alive.closed_by_server,
        per_request.answered,
        per_request.failures.len(),
    );
    assert!(
        keep_alive.failures.is_empty() && per_request.failures.is_empty(),
        "keep-alive failures: {:#?}\nper-request failures: {:#?}",
        keep_alive.failures,
        per_request.failures
    );
    // The keep-alive clients did move: each reload ended their connections.
    assert!(keep_alive.closed_by_server >= RELOADS, "{keep_alive:?}");
    let (code, lines) = server.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_reloads_under_keep_alive_and_per_request_load_fail_nothing() {
    reloads_under_load_fail_nothing(App::Axum, "rr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_reloads_under_keep_alive_and_per_request_load_fail_nothing() {
    reloads_under_load_fail_nothing(App::Hello, "rr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_reloads_on_a_shared_listener_fail_nothing() {
    reloads_under_load_fail_nothing(App::Axum, "none").await;
}

/// SIGTERM with one worker (round-robin, so the hand-off keeps the
/// connections' order): a request in flight finishes; a connection accepted
/// just before the drain and a keep-alive connection idle at its start are
/// answered after it, with `Connection: close`; a keep-alive connection that
/// stays idle is closed at the grace's end; the primary exits 0.
async fn sigterm_drains_keep_alive_connections(app: App) {
    let server = Server::start(app, "rr", 1).await;
    let addr = server.addr;
    // A keep-alive connection served once, that will stay silent.
    let mut silent = connect(addr).await.unwrap();
    let first = exchange(&mut silent, "/").await.unwrap();
    assert!(first.status == 200 && !first.close, "{first:?}");
    // One that sends its first request only after the drain started, and
    // one to see the drain start.
    let mut fresh = connect(addr).await.unwrap();
    let mut probe = connect(addr).await.unwrap();
    // A request in flight.
    let mut slow = connect(addr).await.unwrap();
    slow.get_mut()
        .write_all(b"GET /slow HTTP/1.1\r\nHost: cluster\r\n\r\n")
        .await
        .unwrap();
    // The primary hands connections over in the order it accepts them, to
    // the one worker, which accepts them in that order: this one answered
    // means the worker took every connection above.
    let (status, _) = get(addr, "/").await.unwrap();
    assert_eq!(status, 200);
    let slow = tokio::spawn(async move { read_answer(&mut slow).await });

    server.signal(Signal::SIGTERM);
    // The worker drains once its answers end their connections.
    let started = Instant::now();
    loop {
        let answer = exchange(&mut probe, "/").await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        if answer.close {
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "no answer ended its connection after SIGTERM"
        );
    }
    // Accepted before the drain, its first request sent after: answered,
    // and told to move on.
    let answer = exchange(&mut fresh, "/").await.unwrap();
    assert!(answer.status == 200 && answer.close, "{answer:?}");
    // The request in flight finished.
    let answer = tokio::time::timeout(BOUND, slow)
        .await
        .expect("the request in flight finished in time")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.starts_with("hello from"), "{answer:?}");
    // Still idle at the drain grace's end: closed (the end of the stream,
    // not an error).
    let mut rest = Vec::new();
    let end = tokio::time::timeout(BOUND, silent.read_to_end(&mut rest))
        .await
        .expect("the idle connection closed in time");
    assert!(
        matches!(end, Ok(0)),
        "{end:?} {:?}",
        String::from_utf8_lossy(&rest)
    );
    let (code, lines) = server.exit().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_sigterm_drains_keep_alive_connections() {
    sigterm_drains_keep_alive_connections(App::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_sigterm_drains_keep_alive_connections() {
    sigterm_drains_keep_alive_connections(App::Hello).await;
}

/// An HTTP/2 connection (prior knowledge) to `addr`: its request half and
/// its connection task.
async fn http2(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("an HTTP/2 handshake");
    (send, tokio::spawn(conn))
}

/// `GET path` over HTTP/2: the status and the body.
async fn http2_get(
    mut send: hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    path: &str,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt as _;
    let exchange = async {
        send.ready().await.map_err(|e| format!("ready: {e}"))?;
        let req = hyper::Request::get(format!("http://cluster{path}"))
            .body(http_body_util::Empty::new())
            .expect("a request");
        let response = send
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// HTTP/2 through the one serve: a request in flight when its worker
/// drains (a reload) finishes, the connection is then ended by the server
/// (GOAWAY, not an error), and a new connection goes to a new worker.
async fn http2_is_served_and_drained(app: App) {
    let mut server = Server::start(app, "rr", 2).await;
    let (send, conn) = http2(server.addr).await;
    let (status, first) = http2_get(send.clone(), "/").await.expect("an answer");
    assert_eq!(status, 200, "{first}");
    let slow = tokio::spawn(http2_get(send.clone(), "/slow"));
    server.reload().await;
    let (status, body) = slow.await.unwrap().expect("the slow answer");
    assert_eq!(status, 200);
    assert!(body.contains("hello from"), "{body:?}");
    let ended = tokio::time::timeout(BOUND, conn)
        .await
        .expect("the server never ended the HTTP/2 connection")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    let (send, _conn) = http2(server.addr).await;
    let (status, after) = http2_get(send, "/").await.expect("an answer");
    assert_eq!(status, 200);
    assert_ne!(first, after, "a drained worker answered");
    let (code, lines) = server.terminate().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serves_http2_and_drains_it() {
    http2_is_served_and_drained(App::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_serves_http2_and_drains_it() {
    http2_is_served_and_drained(App::Hello).await;
}
