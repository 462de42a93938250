//! Serve a hyper service over a worker's connections, with the drain
//! (feature `hyper`): [`serve`], and [`serve_with`] for a connection
//! builder of your own.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use cluster_core::Worker;
//! use hyper::{Request, Response, body::Incoming, service::service_fn};
//!
//! async fn worker(worker: Worker<()>) -> cluster_core::Result<()> {
//!     let listener = worker.listen(("127.0.0.1", 3000)).await?;
//!     let hello = service_fn(|_: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new("hello\n".to_owned()))
//!     });
//!     cluster_core::hyper::serve(listener, hello).await; // returns once drained
//!     Ok(())
//! }
//! ```
//!
//! One serve for every kind of listener ([`Accept`]): a TCP [`Listener`]
//! (also one of an inherited or socket-activated socket), a Unix-domain
//! [`UnixListener`](crate::UnixListener), an
//! [`FdListener`](crate::FdListener). HTTP/1.1 and HTTP/2 (prior
//! knowledge, `h2c`), through hyper-util's `auto` connection builder;
//! [`builder`] gives the one [`serve`] uses, to change (a header-read
//! timeout, keep-alive, HTTP/2 limits) and hand to [`serve_with`]:
//!
//! ```no_run
//! # async fn f(listener: cluster_core::Listener) {
//! # let service = hyper::service::service_fn(|_: hyper::Request<hyper::body::Incoming>| async {
//! #     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
//! # });
//! use std::time::Duration;
//!
//! let mut builder = cluster_core::hyper::builder();
//! builder.http1().header_read_timeout(Duration::from_secs(5)).keep_alive(true);
//! builder.http2().max_concurrent_streams(64);
//! cluster_core::hyper::serve_with(listener, builder, service).await;
//! # }
//! ```
//!
//! A tower service (axum's `Router`, any tower framework) goes through
//! hyper-util's `TowerToHyperService::new(service)`; `cluster_core::axum::serve`
//! does that for axum. The drain's rules are in `docs/cluster.md`.
//!
//! [`Listener`]: crate::Listener

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::hyper::body::{Body, Incoming};
use ::hyper::service::{Service, service_fn};
use ::hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::accept::Accept;
use crate::worker::DrainSignal;

/// How long a client may take to send a request's head on an HTTP/1
/// connection, in [`builder`]'s default: Node's `server.headersTimeout`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection builder [`serve`] uses: HTTP/1.1 and HTTP/2 on tokio,
/// with tokio's timer and a [`HEADER_READ_TIMEOUT`] for HTTP/1 heads.
/// Change it and give it to [`serve_with`].
pub fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serve `service` on every connection of `listener` (any kind:
/// [`Accept`]) until the worker has drained, with the drain rules of
/// `docs/cluster.md`:
///
/// - requests in flight when the drain starts finish;
/// - every HTTP/1 response sent while draining carries `Connection: close`,
///   and its connection then closes: a keep-alive client moves to a new
///   connection (another worker) without an error;
/// - an HTTP/2 connection gets GOAWAY when the drain starts (once it has
///   made a request), which tells its client which requests will still be
///   answered: the others go to a new connection;
/// - a connection still idle when the [drain grace](DrainSignal::grace)
///   ends is closed (after its request in flight, if one arrived);
/// - a connection handed over just before the drain is served its first
///   request, if it arrives within the grace.
///
/// Returns once `accept` has ended and every connection has closed. Each
/// connection is served by its own task (`tokio::spawn`). A connection that
/// fails (the client went away, a malformed request) ends quietly: it is
/// the client's error, not the worker's.
pub async fn serve<L, S, B>(listener: L, service: S)
where
    L: Accept,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_with(listener, builder(), service).await;
}

/// [`serve`] with connections built by `builder` (from [`builder`], or
/// your own `auto::Builder`).
pub async fn serve_with<L, S, B>(mut listener: L, builder: auto::Builder<TokioExecutor>, service: S)
where
    L: Accept,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let drain = listener.drain_signal();
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.next_connection() => {
                let Some(conn) = accepted else { break };
                connections.spawn(serve_connection(
                    conn,
                    Arc::clone(&builder),
                    service.clone(),
                    drain.clone(),
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // What was handed over but not accepted goes back to the primary.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Whether a connection turned out to speak HTTP/2, and the wake-up when it
/// does.
#[derive(Default)]
struct Http2 {
    seen: AtomicBool,
    notify: Notify,
}

/// One connection: served until the client closes it, a response while
/// draining closes it (HTTP/1), the drain starts (HTTP/2) or the drain
/// grace ends; then hyper's graceful shutdown (GOAWAY for HTTP/2; for
/// HTTP/1 the request in flight finishes and an idle connection closes).
async fn serve_connection<C, S, B>(
    conn: C,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    drain: DrainSignal,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let http2 = Arc::new(Http2::default());
    let closing = drain.clone();
    let seen = Arc::clone(&http2);
    let service = service_fn(move |req: Request<Incoming>| {
        let version = req.version();
        if version == Version::HTTP_2 && !seen.seen.swap(true, Ordering::Relaxed) {
            seen.notify.notify_one();
        }
        let response = service.call(req);
        let closing = closing.clone();
        async move {
            let mut response = response.await?;
            closing.mark_last(version, &mut response);
            Ok::<_, S::Error>(response)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
    let mut conn = std::pin::pin!(conn);
    let mut grace = drain.clone();
    let mut started = drain;
    let http2_draining = async {
        started.wait().await;
        loop {
            let notified = http2.notify.notified();
            if http2.seen.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    };
    tokio::select! {
        // A client that goes away mid-request is not this worker's error.
        _ = conn.as_mut() => return,
        () = grace.wait_grace() => {}
        () = http2_draining => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
