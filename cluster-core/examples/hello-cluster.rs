//! The README's first command: a primary and its workers serving HTTP on
//! loopback, guarded, reloadable and drained like a production server.
//!
//! ```sh
//! cargo run --release --example hello-cluster
//! curl http://127.0.0.1:3000/        # hello from worker 2 (pid 4242)
//! ```
//!
//! - `PORT` (default 3000; 0 picks a free port, printed in the listening
//!   lines), `WORKERS` (default: the available parallelism) and
//!   `CLUSTER_SCHED_POLICY` (`rr`, `none`, `sticky`, `least-conn`, `p2c`;
//!   default `rr`). Only 127.0.0.1 is bound, unless `HOST` names another
//!   address (a deployment's, see `docs/deploy.md`).
//! - `GET /` answers `hello from worker <id> (pid <pid>)` and a newline;
//!   `GET /slow` answers the same line, then `done` a second later (to watch
//!   a drain finish a request in flight); anything else is a 404.
//! - The primary prints one line per cluster event (fork, online, listening,
//!   disconnect, exit with its code or signal, restart scheduled, gave up),
//!   restarts workers that die (`kill -9` one: a new one takes its slot),
//!   reloads them one by one on SIGHUP (`kill -HUP <primary pid>`: each
//!   replacement listens before its predecessor leaves, no request fails),
//!   and drains on SIGTERM or Ctrl-C: every worker stops accepting, finishes
//!   its requests in flight (hyper's graceful shutdown, after the first
//!   request of a connection handed over just before), exits; then the
//!   primary exits 0.
//!
//! - Run as a service (see `docs/deploy.md`): it takes its listening socket
//!   from systemd (socket activation) and reports to it (`NOTIFY_SOCKET`),
//!   by itself. SIGUSR2 upgrades the primary itself with no downtime: the
//!   program now on disk starts as a new primary on the same socket, and
//!   this one drains once the new one's workers listen. `VERSION` (or the
//!   first line of the file named by `VERSION_FILE`, read when the primary
//!   starts, so a new primary reads it anew) is appended to each answer,
//!   only when set; `PID_FILE` names a pid file.
//!
//! Workers are this program, re-executed by the primary; hyper serves each
//! connection the primary hands over (`Worker::listen`), one current-thread
//! runtime per worker process, like one Node.js process per CPU.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use cluster_core::{
    Cluster, Connection, DrainSignal, Event, Exit, PolicyKind, Settings, Worker, WorkerId,
};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How long `GET /slow` takes between its two parts.
const SLOW: Duration = Duration::from_secs(1);

/// How long a draining worker waits for the first request of a connection
/// it was handed just before the drain.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    // Decide the role before any thread exists.
    if cluster_core::is_worker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(worker());
    }
    // `cargo test --all-targets` and nextest build every example as a test
    // and run it (this one without a harness: its own `main`). There it is
    // the demo only when cluster-core's demo tests ask with `--serve`.
    if cfg!(test) && !std::env::args().any(|a| a == "--serve") {
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(primary())
}

/// `PORT`, default 3000.
fn port() -> anyhow::Result<u16> {
    match std::env::var("PORT") {
        Ok(p) => p.trim().parse().with_context(|| format!("PORT={p}")),
        Err(_) => Ok(3000),
    }
}

/// `HOST`, default 127.0.0.1.
fn host() -> anyhow::Result<IpAddr> {
    match std::env::var("HOST") {
        Ok(h) => h.trim().parse().with_context(|| format!("HOST={h}")),
        Err(_) => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    }
}

async fn primary() -> anyhow::Result<()> {
    let port = port()?;
    let n_workers = match std::env::var("WORKERS") {
        Ok(n) => n.trim().parse().with_context(|| format!("WORKERS={n}"))?,
        Err(_) => std::thread::available_parallelism().map_or(1, usize::from),
    };
    anyhow::ensure!(
        n_workers > 0,
        "WORKERS=0: a cluster needs at least one worker"
    );
    let policy: PolicyKind = match std::env::var(cluster_core::sched_policy::ENV_VAR) {
        Ok(name) => name
            .parse()
            .with_context(|| format!("{}={name}", cluster_core::sched_policy::ENV_VAR))?,
        Err(_) => PolicyKind::RoundRobin,
    };
    let mut settings = Settings::new();
    settings
        .n_workers(n_workers)
        .scheduling_policy(policy)
        .handle_signals()
        .upgrade_on_signal();
    // Upgrade support: the version this primary's workers report, and the
    // pid file.
    if let Ok(path) = std::env::var("VERSION_FILE") {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("VERSION_FILE={path}"))?;
        settings.env("VERSION", text.lines().next().unwrap_or("").trim());
    }
    if let Ok(path) = std::env::var("PID_FILE") {
        settings.pid_file(path);
    }
    let mut cluster = Cluster::<()>::new(settings)?;
    let mut hangup = signal(SignalKind::hangup())?;
    println!(
        "primary (pid {}): {n_workers} worker(s) on {}:{port}, scheduling {policy}; \
         SIGHUP reloads, SIGUSR2 upgrades, SIGTERM or Ctrl-C drains",
        std::process::id(),
        host()?
    );
    cluster.start()?;

    let mut log = EventLog::default();
    loop {
        tokio::select! {
            event = cluster.next_event() => {
                let Some(event) = event else { break };
                log.print(&event);
            }
            _ = hangup.recv() => {
                println!("SIGHUP: rolling reload");
                let result = cluster.reload().await;
                // The reload's events waited in the cluster's queue (the
                // reload borrows the cluster): print those already there.
                loop {
                    tokio::select! {
                        biased;
                        Some(event) = cluster.next_event() => log.print(&event),
                        () = std::future::ready(()) => break,
                    }
                }
                match result {
                    Ok(()) => println!("reload done"),
                    Err(e) => println!("reload failed: {e}"),
                }
            }
        }
        if log.gave_up == n_workers {
            println!("every slot gave up: stopping");
            cluster.shutdown().await?;
            anyhow::bail!("no worker could be kept running");
        }
    }
    println!("every worker exited: bye");
    Ok(())
}

/// Prints one line per event, naming workers with their pids.
#[derive(Default)]
struct EventLog {
    pids: HashMap<WorkerId, u32>,
    gave_up: usize,
}

impl EventLog {
    fn print(&mut self, event: &Event<()>) {
        let pids = &mut self.pids;
        let who = |w: &WorkerId, pids: &HashMap<WorkerId, u32>| match pids.get(w) {
            Some(pid) => format!("worker {w} (pid {pid})"),
            None => format!("worker {w}"),
        };
        match event {
            Event::Fork { worker, slot, pid } => {
                pids.insert(*worker, *pid);
                println!("{} forked in slot {slot}", who(worker, pids));
            }
            Event::Online { worker } => println!("{} online", who(worker, pids)),
            Event::Listening { worker, addr } => {
                println!("{} listening on http://{addr}/", who(worker, pids));
            }
            Event::Disconnect { worker } => println!("{} disconnected", who(worker, pids)),
            Event::Exit {
                worker,
                exit,
                exited_after_disconnect,
                ..
            } => {
                let how = match exit {
                    Exit::Code(c) => format!("exited with code {c}"),
                    Exit::Signal(s) => format!("killed by signal {s}"),
                };
                let why = if *exited_after_disconnect {
                    " after disconnecting"
                } else {
                    ""
                };
                println!("{} {how}{why}", who(worker, pids));
                pids.remove(worker);
            }
            Event::RestartScheduled { slot, delay } => {
                println!("slot {slot}: restart in {} ms", delay.as_millis());
            }
            Event::GaveUp { slot, last_exit } => {
                self.gave_up += 1;
                println!("slot {slot}: gave up (crash loop), last {last_exit}");
            }
            Event::Unresponsive { worker } => println!("{} unresponsive", who(worker, pids)),
            Event::ChannelError { worker, error } => {
                println!("{} channel error: {error}", who(worker, pids));
            }
            Event::ForkError { slot, error } => println!("slot {slot}: fork failed: {error}"),
            Event::Message(_) => {}
            Event::Upgraded { pid } => {
                println!("upgraded: the new primary (pid {pid}) serves; draining");
            }
            Event::UpgradeFailed { reason } => println!("upgrade failed: {reason}"),
            other => println!("{other:?}"),
        }
    }
}

async fn worker() -> anyhow::Result<()> {
    let me = Worker::<()>::connect().await?;
    let addr = SocketAddr::new(host()?, port()?);
    let mut listener = me.listen(addr).await?;
    // `VERSION` is appended only when set: the default body is unchanged.
    let version = match std::env::var("VERSION") {
        Ok(v) if !v.is_empty() => format!(" version {v}"),
        _ => String::new(),
    };
    let hello: Arc<str> = format!(
        "hello from worker {} (pid {}){version}\n",
        me.id(),
        std::process::id()
    )
    .into();
    let mut connections = JoinSet::new();
    // `accept` ends when the primary asks this worker to leave (a reload,
    // the shutdown), after the connections already handed to it.
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((conn, _peer)) = accepted else { break };
                connections.spawn(serve(conn, Arc::clone(&hello), me.drain_signal()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Draining: every connection finishes its request in flight, then closes.
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serve one connection with hyper until the client closes it, or until the
/// worker drains: then it finishes the request in flight and closes (hyper's
/// graceful shutdown).
async fn serve(conn: Connection, hello: Arc<str>, mut drain: DrainSignal) {
    let first_request = Arc::new(Notify::new());
    let service = service_fn({
        let first_request = Arc::clone(&first_request);
        move |req| {
            first_request.notify_one();
            answer(req, Arc::clone(&hello))
        }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(conn), service);
    let mut conn = std::pin::pin!(conn);
    let draining = async {
        drain.wait().await;
        // A connection handed over just before the drain has its request on
        // the way: hyper would close it as idle. Serve that one first.
        let _ = tokio::time::timeout(FIRST_REQUEST_GRACE, first_request.notified()).await;
    };
    tokio::select! {
        // A client that goes away mid-request is not this worker's error.
        _ = conn.as_mut() => return,
        () = draining => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

async fn answer(req: Request<Incoming>, hello: Arc<str>) -> Result<Response<Reply>, Infallible> {
    // Read (and drop) any request body, so the connection can be reused.
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    Ok(match (parts.method, parts.uri.path()) {
        (Method::GET, "/") => Response::new(Reply::now(hello.as_bytes())),
        (Method::GET, "/slow") => Response::new(Reply::later(hello.as_bytes(), b"done\n", SLOW)),
        _ => {
            let mut r = Response::new(Reply::now(b"not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

/// A response body in one part, or in two with a pause between them (of a
/// known total length either way, so it goes out with `Content-Length`).
struct Reply {
    first: Option<Bytes>,
    second: Option<(Pin<Box<tokio::time::Sleep>>, Bytes)>,
    len: u64,
}

impl Reply {
    fn now(text: &[u8]) -> Self {
        Self {
            first: Some(Bytes::copy_from_slice(text)),
            second: None,
            len: text.len() as u64,
        }
    }

    fn later(first: &[u8], second: &[u8], pause: Duration) -> Self {
        Self {
            first: Some(Bytes::copy_from_slice(first)),
            second: Some((
                Box::pin(tokio::time::sleep(pause)),
                Bytes::copy_from_slice(second),
            )),
            len: (first.len() + second.len()) as u64,
        }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some((pause, _)) = &mut this.second {
            ready!(pause.as_mut().poll(cx));
        }
        Poll::Ready(this.second.take().map(|(_, b)| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.second.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
