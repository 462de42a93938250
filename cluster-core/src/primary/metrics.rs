//! The metrics endpoint ([`Settings::metrics`](crate::Settings::metrics),
//! feature `prometheus`): `GET /metrics` answers the cluster's stats in
//! Prometheus' text format (`ClusterStats::render_prometheus`).
//!
//! Served off the primary's hot path: a thread of its own
//! (`cluster-metrics`) with a current-thread runtime accepts and answers
//! the scrapes, so neither the `/proc` reads of a snapshot nor a slow
//! scraper take time from the supervisor (the caller's runtime) or the
//! hand-off (the network thread). A snapshot takes the cluster's lock only
//! to clone the workers' handles. hyper serves HTTP/1.1 (keep-alive, a
//! 10 s header-read timeout); the thread ends when the cluster is gone.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use ::hyper::body::Incoming;
use ::hyper::server::conn::http1;
use ::hyper::service::service_fn;
use ::hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::Payload;
use crate::error::{Error, Result};
use crate::primary::Shared;

/// How long a scraper may take to send its request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bind the endpoint's socket now, so a taken port fails `Cluster::new`.
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let fail = |source| Error::Metrics { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    Ok(listener)
}

/// Serve the scrapes on `listener` from a thread of its own until `stop`'s
/// sender is dropped (with the cluster).
pub(crate) fn serve<M: Payload>(
    listener: std::net::TcpListener,
    shared: Weak<Shared<M>>,
    mut stop: watch::Receiver<()>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let fail = |source| Error::Metrics { addr, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    std::thread::Builder::new()
        .name("cluster-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((conn, _)) = accepted {
                                tokio::spawn(scrape(conn, Weak::clone(&shared)));
                            }
                        }
                        // An error: the cluster (the sender) is gone.
                        Err(_) = stop.changed() => return,
                    }
                }
            });
        })
        .map_err(fail)?;
    Ok(())
}

/// One scraper's connection.
async fn scrape<M: Payload>(conn: tokio::net::TcpStream, shared: Weak<Shared<M>>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Weak::clone(&shared);
        async move { Ok::<_, Infallible>(answer(&req, &shared)) }
    });
    let _client_error = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(conn), service)
        .await;
}

fn answer<M: Payload>(req: &Request<Incoming>, shared: &Weak<Shared<M>>) -> Response<String> {
    let status = |code: StatusCode, body: &str| {
        let mut r = Response::new(body.to_owned());
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return status(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
    }
    let Some(shared) = shared.upgrade() else {
        return status(StatusCode::SERVICE_UNAVAILABLE, "the cluster is gone\n");
    };
    // This thread is the endpoint's own: reading `/proc` here blocks no
    // runtime of the cluster.
    let body = shared.stats_now().render_prometheus();
    drop(shared);
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}
