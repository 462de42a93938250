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
//!   address (a deployment's, see `docs/deploy.md`). The cluster's own variables
//!   apply too (`cluster_core::env_vars`: `CLUSTER_HANDOFF_WINDOW`,
//!   `CLUSTER_HANDOFF_DEADLINE_MS`, `CLUSTER_HEARTBEAT_INTERVAL_MS`,
//!   `CLUSTER_HEARTBEAT_TIMEOUT_MS`, `CLUSTER_CRASH_LOOP_LIMIT`,
//!   `CLUSTER_CRASH_LOOP_WINDOW_MS`). When every slot gave up (workers that
//!   cannot start), the primary exits 1.
//!   `SOCKET_PATH` serves on that Unix-domain socket instead (`curl --unix-socket $SOCKET_PATH
//!   http://localhost/`).
//! - `GET /` answers `hello from worker <id> (pid <pid>)` and a newline;
//!   `GET /slow` answers the same line, then `done` a second later (to watch
//!   a drain finish a request in flight); anything else is a 404.
//! - The primary prints one line per cluster event (fork, online, listening,
//!   disconnect, exit with its code or signal, restart scheduled, gave up,
//!   reload), restarts workers that die (`kill -9` one: a new one takes its
//!   slot), reloads them one by one on SIGHUP (`kill -HUP <primary pid>`),
//!   and drains on SIGTERM or Ctrl-C, then exits 0. Neither loses a request,
//!   keep-alive clients included: `cluster_core::hyper::serve` drains each
//!   worker (see docs/cluster.md, "Draining without failing a request").
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
//! - Operations (see `docs/operations.md`): the primary logs the cluster's
//!   `tracing` events on stderr, readable, or JSON lines with
//!   `LOG_FORMAT=json`, filtered by `RUST_LOG` (default `warn`: the stdout
//!   lines already tell the lifecycle; `RUST_LOG=info` for every event).
//!   `METRICS_PORT` serves the stats snapshot in Prometheus' text format on
//!   `http://127.0.0.1:<METRICS_PORT>/metrics` (loopback only).
//!   SIGTTIN adds a worker, SIGTTOU removes one (it drains). Recycling:
//!   `MAX_REQUESTS` (and `MAX_REQUESTS_JITTER`), `MAX_MEMORY_MB`,
//!   `MAX_AGE_SECS`.
//!
//! Workers are this program, re-executed by the primary, one current-thread
//! runtime per worker process, like one Node.js process per CPU.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use cluster_core::{Close, Cluster, Event, PolicyKind, Settings, Worker, WorkerId};
use http_body_util::{BodyExt as _, Channel, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header, service::service_fn};
use tokio::signal::unix::{SignalKind, signal};

/// `println!` that never blocks: the line goes to cluster-core's stdout
/// queue, written by its own thread, so a stalled reader of this program's
/// output cannot stall the event loop (a dropped line is counted instead).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _queued = cluster_core::output::Output::stdout().line(format!($($arg)*));
    }};
}

fn main() -> anyhow::Result<()> {
    // Decide the role before any thread exists.
    if cluster_core::is_worker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(worker());
    }
    tokio::runtime::Runtime::new()?.block_on(primary())
}

/// The variable `name` parsed, or `default` when it is not set.
fn env<T: std::str::FromStr<Err: std::fmt::Display>>(name: &str, default: T) -> anyhow::Result<T> {
    let Ok(v) = std::env::var(name) else {
        return Ok(default);
    };
    v.trim().parse().map_err(|e| anyhow!("{name}={v}: {e}"))
}

/// `HOST`, default 127.0.0.1.
fn host() -> anyhow::Result<IpAddr> {
    env("HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))
}

async fn primary() -> anyhow::Result<()> {
    init_logging();
    let port: u16 = env("PORT", 3000)?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let n_workers = env("WORKERS", cpus)?;
    anyhow::ensure!(
        n_workers > 0,
        "WORKERS=0: a cluster needs at least one worker"
    );
    let policy = env(cluster_core::sched_policy::ENV_VAR, PolicyKind::RoundRobin)?;
    let mut settings = Settings::new();
    settings.n_workers(n_workers).scheduling_policy(policy);
    settings
        .handle_signals()
        .reload_on_hangup()
        .upgrade_on_signal();
    // Upgrade support: the version this primary's workers report, and the
    // pid file.
    if let Ok(path) = std::env::var("VERSION_FILE") {
        let text =
            std::fs::read_to_string(&path).map_err(|e| anyhow!("VERSION_FILE={path}: {e}"))?;
        settings.env("VERSION", text.lines().next().unwrap_or("").trim());
    }
    if let Ok(path) = std::env::var("PID_FILE") {
        settings.pid_file(path);
    }
    if let Some(n) = env_opt::<u64>("MAX_REQUESTS")? {
        settings.max_requests(n, env("MAX_REQUESTS_JITTER", 0)?);
    }
    if let Some(mb) = env_opt::<u64>("MAX_MEMORY_MB")? {
        settings.max_memory(mb * 1024 * 1024);
    }
    if let Some(secs) = env_opt::<u64>("MAX_AGE_SECS")? {
        settings.max_age(Duration::from_secs(secs));
    }
    let metrics = match env_opt::<u16>("METRICS_PORT")? {
        Some(port) => Some(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?),
        None => None,
    };
    let mut ttin = signal(SignalKind::from_raw(libc_sig::SIGTTIN))?;
    let mut ttou = signal(SignalKind::from_raw(libc_sig::SIGTTOU))?;
    let mut cluster = Cluster::<()>::new(settings)?;
    say!(
        "primary (pid {}): {n_workers} worker(s) on {}:{port}, scheduling {policy}; \
         SIGHUP reloads, SIGUSR2 upgrades, SIGTERM or Ctrl-C drains",
        std::process::id(),
        host()?
    );
    if let Some(m) = &metrics {
        say!("metrics on http://{}/metrics", m.local_addr()?);
    }
    cluster.start()?;
    let mut pids = HashMap::new();
    loop {
        let event = tokio::select! {
            event = cluster.next_event() => match event {
                Some(event) => event,
                None => break,
            },
            Some(accepted) = async { Some(metrics.as_ref()?.accept().await) } => {
                if let Ok((conn, _)) = accepted {
                    tokio::spawn(serve_metrics(conn, cluster.stats().await.render_prometheus()));
                }
                continue;
            }
            _ = ttin.recv() => {
                let n = cluster.slots() + 1;
                say!("SIGTTIN: scaling to {n} worker(s)");
                if let Err(e) = cluster.scale_to(n) {
                    say!("scaling failed: {e}");
                }
                continue;
            }
            _ = ttou.recv() => {
                let n = cluster.slots().saturating_sub(1).max(1);
                say!("SIGTTOU: scaling to {n} worker(s)");
                if let Err(e) = cluster.scale_to(n) {
                    say!("scaling failed: {e}");
                }
                continue;
            }
        };
        if let Event::Fork { worker, pid, .. } = event {
            pids.insert(worker, pid);
        }
        if let Some(line) = describe(&event, &pids) {
            say!("{line}");
        }
        if let Event::Exit { worker, .. } = event {
            pids.remove(&worker);
        }
        if cluster.has_given_up() {
            say!("every slot gave up: stopping");
            flush_output().await;
            anyhow::bail!("no worker could be kept running");
        }
    }
    if cluster.has_given_up() {
        flush_output().await;
        anyhow::bail!("no worker could be kept running");
    }
    say!("every worker exited: bye");
    flush_output().await;
    Ok(())
}

/// The variable `name` parsed, `None` when it is not set.
fn env_opt<T: std::str::FromStr<Err: std::fmt::Display>>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| anyhow!("{name}={v}: {e}")),
        Err(_) => Ok(None),
    }
}

/// The signal numbers tokio has no constructor for.
mod libc_sig {
    pub(crate) const SIGTTIN: i32 = libc::SIGTTIN;
    pub(crate) const SIGTTOU: i32 = libc::SIGTTOU;
}

/// Answer one scrape: read the request's head (bounded), send `body`.
async fn serve_metrics(mut conn: tokio::net::TcpStream, body: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    });
    let _ = read.await;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// The primary's `tracing` output: readable, or JSON lines with
/// `LOG_FORMAT=json`; `RUST_LOG` filters (default `warn`). Each record is
/// queued on cluster-core's stderr queue, so a stalled reader never blocks
/// the primary (a record is dropped and counted instead).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| QueuedStderr(Vec::new()));
    let _ = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

/// One log record, queued whole on drop.
struct QueuedStderr(Vec<u8>);

impl std::io::Write for QueuedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedStderr {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _queued = cluster_core::output::Output::stderr().line(&self.0);
        }
    }
}

/// Write out the queued lines before `main` returns (bounded: a stalled
/// reader must not keep the primary from exiting).
async fn flush_output() {
    let out = cluster_core::output::Output::stdout();
    let _ = tokio::time::timeout(Duration::from_secs(1), out.flush()).await;
    let err = cluster_core::output::Output::stderr();
    let _ = tokio::time::timeout(Duration::from_secs(1), err.flush()).await;
}

/// One line for an event, naming workers with their pids.
fn describe(event: &Event<()>, pids: &HashMap<WorkerId, u32>) -> Option<String> {
    let who = |w: &WorkerId| match pids.get(w) {
        Some(pid) => format!("worker {w} (pid {pid})"),
        None => format!("worker {w}"),
    };
    Some(match event {
        Event::Fork { worker, slot, .. } => format!("{} forked in slot {slot}", who(worker)),
        Event::Online { worker } => format!("{} online", who(worker)),
        Event::Listening { worker, addr } => format!("{} listening on http://{addr}/", who(worker)),
        Event::Disconnect { worker } => format!("{} disconnected", who(worker)),
        Event::Exit {
            worker,
            exit,
            exited_after_disconnect: after,
            ..
        } => {
            let how = match exit {
                Close::Exited(c) => format!("exited with code {c}"),
                Close::Signaled(s) => format!("killed by signal {s}"),
            };
            let why = if *after { " after disconnecting" } else { "" };
            format!("{} {how}{why}", who(worker))
        }
        Event::RestartScheduled { slot, delay } => {
            format!("slot {slot}: restart in {} ms", delay.as_millis())
        }
        Event::GaveUp { slot, last_exit } => {
            format!("slot {slot}: gave up (crash loop), last {last_exit}")
        }
        Event::Unresponsive { worker } => format!("{} unresponsive", who(worker)),
        Event::ChannelError { worker, error } => format!("{} channel error: {error}", who(worker)),
        Event::ForkError { slot, error } => format!("slot {slot}: fork failed: {error}"),
        Event::ReloadStarted => "SIGHUP: rolling reload".to_owned(),
        Event::ReloadFinished { error: None } => "reload done".to_owned(),
        Event::ReloadFinished { error: Some(e) } => format!("reload failed: {e}"),
        Event::Upgraded { pid } => {
            format!("upgraded: the new primary (pid {pid}) serves; draining")
        }
        Event::UpgradeFailed { reason } => format!("upgrade failed: {reason}"),
        Event::Recycling { worker, reason, .. } => {
            format!("{} recycling: {reason}", who(worker))
        }
        Event::SlotRemoved { slot, .. } => format!("slot {slot}: removed (scaled down)"),
        Event::Message(_) => return None,
        other => format!("{other:?}"),
    })
}

async fn worker() -> anyhow::Result<()> {
    let me = Worker::<()>::connect().await?;
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
    let service = service_fn(move |req| answer(req, Arc::clone(&hello)));
    // Serves until this worker has drained (a reload, the shutdown): the
    // same way on a Unix-domain socket as on a TCP port.
    match std::env::var("SOCKET_PATH") {
        Ok(path) => cluster_core::hyper::serve(me.listen_unix(path.as_str()).await?, service).await,
        Err(_) => {
            let addr = SocketAddr::new(host()?, env("PORT", 3000)?);
            cluster_core::hyper::serve(me.listen(addr).await?, service).await;
        }
    }
    Ok(())
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, hello: Arc<str>) -> Result<Response<Body>, Infallible> {
    let text = |t: &str| Full::new(Bytes::copy_from_slice(t.as_bytes())).boxed();
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => Response::new(text(&hello)),
        (&Method::GET, "/slow") => {
            // The line now, `done` a second later: one body of a known length.
            let (mut tx, body) = Channel::new(2);
            let len = hello.len() + "done\n".len();
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::copy_from_slice(hello.as_bytes())).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send_data(Bytes::from_static(b"done\n")).await;
            });
            let mut r = Response::new(body.boxed());
            r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
            r
        }
        _ => {
            let mut r = Response::new(text("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}
