//! The README's first command: a primary and its workers serving HTTP on
//! loopback, guarded, reloadable and drained like a production server.
//!
//! ```sh
//! cargo run --release --example hello-cluster
//! curl http://127.0.0.1:3000/        # hello from worker 2 (pid 4242)
//! ```
//!
//! - `PORT` (default 3000; 0 picks a free port, printed in the listening
//!   lines) on 127.0.0.1, or on `HOST` (a deployment's address, see
//!   `docs/deploy.md`); `SOCKET_PATH` serves on that Unix-domain socket
//!   instead (`curl --unix-socket $SOCKET_PATH http://localhost/`).
//! - `GET /` answers `hello from worker <id> (pid <pid>)` and a newline;
//!   `GET /slow` answers the same line, then `done` a second later (to watch
//!   a drain finish a request in flight); anything else is a 404.
//! - The operator's variables, read by `Settings::read_env`
//!   (`cluster_core::env_vars`): `WORKERS` (default: the available
//!   parallelism), `CLUSTER_SCHED_POLICY` (`rr`, `none`, `sticky`,
//!   `least-conn`, `p2c`; default `rr`), recycling (`MAX_REQUESTS`,
//!   `MAX_REQUESTS_JITTER`, `MAX_MEMORY_MB`, `MAX_AGE_SECS`), `PID_FILE`,
//!   `METRICS_PORT` (Prometheus' text format on
//!   `http://127.0.0.1:<METRICS_PORT>/metrics`), `LOG_FORMAT` (`plain`,
//!   `json`) and `RUST_LOG` (the cluster's `tracing` records on stderr,
//!   default `warn`: the stdout lines already tell the lifecycle), and the
//!   hand-off, heartbeat and crash-loop settings (`CLUSTER_HANDOFF_*`,
//!   `CLUSTER_HEARTBEAT_*`, `CLUSTER_CRASH_LOOP_*`).
//! - The primary's first line says where the workers serve (the URL, or
//!   `unix:<SOCKET_PATH>`), how many, the policy and the signals; then it
//!   prints one line per cluster event (fork, online, listening,
//!   disconnect, exit with its code or signal, restart scheduled, gave up,
//!   reload, scaling), restarts workers that die
//!   (`kill -9` one: a new one takes its slot), reloads them one by one on
//!   SIGHUP, adds one on SIGTTIN and removes one on SIGTTOU, and drains on
//!   SIGTERM or Ctrl-C, then exits 0 (1 when every slot gave up: workers
//!   that cannot start). No request is lost, keep-alive clients included
//!   (`cluster_core::hyper::serve` drains each worker: docs/cluster.md,
//!   "Draining without failing a request").
//! - Runs as a service (`docs/deploy.md`): it takes its listening socket
//!   from systemd (socket activation; one no worker listens on is an error)
//!   and reports to it (`NOTIFY_SOCKET`). SIGUSR2 upgrades the primary with
//!   no downtime: the program now on disk starts as a new primary on the
//!   same socket (the port, or `SOCKET_PATH`'s, kept bound all along), and
//!   this one drains once the new one's workers listen.
//!   `VERSION` (or the first line of the file named by `VERSION_FILE`, read
//!   when the primary starts, so a new primary reads it anew) is appended
//!   to each answer, only when set.
//!
//! Workers are this program, re-executed by the primary, one current-thread
//! runtime per worker process, like one Node.js process per CPU
//! (`cluster_core::main` says why).

use std::{convert::Infallible, net::IpAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use cluster_core::{Cluster, EventLog, ListenTarget, LogFormat, Settings, Worker};
use http_body_util::{BodyExt as _, Channel, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header, service::service_fn};

fn main() -> anyhow::Result<()> {
    cluster_core::main(primary, worker)
}

async fn primary() -> anyhow::Result<()> {
    let mut settings = Settings::new();
    settings.logs(LogFormat::Plain, "warn").read_env()?;
    settings.handle_signals().reload_on_hangup();
    settings.upgrade_on_signal().scale_on_signals();
    if let Some(path) = std::env::var_os("VERSION_FILE") {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("VERSION_FILE={path:?}"))?;
        settings.env("VERSION", text.lines().next().unwrap_or("").trim());
    }
    Cluster::<()>::new(settings)?
        .run_logged(EventLog::http().on(endpoint()?))
        .await?;
    EventLog::new().say("every worker exited: bye");
    Ok(())
}

async fn worker(me: Worker<()>) -> anyhow::Result<()> {
    let version = std::env::var("VERSION").ok().filter(|v| !v.is_empty());
    let version = version.map(|v| format!(" version {v}")).unwrap_or_default();
    let hello: Arc<str> = format!(
        "hello from worker {} (pid {}){version}\n",
        me.id(),
        std::process::id()
    )
    .into();
    let service = service_fn(move |req| answer(req, Arc::clone(&hello)));
    // Serves until this worker has drained (a reload, the shutdown), on a
    // TCP port or a Unix-domain socket alike.
    cluster_core::hyper::serve(me.listen_target(&endpoint()?).await?, service).await;
    Ok(())
}

/// Where the workers serve: `SOCKET_PATH`, else `HOST` (127.0.0.1) and
/// `PORT` (3000).
fn endpoint() -> anyhow::Result<ListenTarget> {
    if let Some(path) = std::env::var_os("SOCKET_PATH") {
        return Ok(ListenTarget::Unix(std::path::PathBuf::from(path).into()));
    }
    let var = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let host: IpAddr = var("HOST", "127.0.0.1").parse().context("HOST")?;
    let port: u16 = var("PORT", "3000").parse().context("PORT")?;
    Ok(ListenTarget::Tcp((host, port).into()))
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
