//! Serve a hyper service over a worker's connections, with the drain
//! (feature `hyper`): [`serve`].
//!
//! ```no_run
//! use std::convert::Infallible;
//! use cluster_core::Worker;
//! use hyper::{Request, Response, body::Incoming, service::service_fn};
//!
//! async fn worker() -> cluster_core::Result<()> {
//!     let worker = Worker::<()>::connect().await?;
//!     let listener = worker.listen("127.0.0.1:3000".parse().unwrap()).await?;
//!     let hello = service_fn(|_: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new("hello\n".to_owned()))
//!     });
//!     cluster_core::hyper::serve(listener, hello).await; // returns once drained
//!     Ok(())
//! }
//! ```
//!
//! A tower service (a framework built on tower) goes through hyper-util's
//! `TowerToHyperService::new(service)` (its `service` feature).
//!
//! HTTP/1.1 only (`hyper::server::conn::http1`), as hyper serves it by
//! default; the drain's rules are in `docs/cluster.md`.

use std::error::Error as StdError;

use ::hyper::body::{Body, Incoming};
use ::hyper::server::conn::http1;
use ::hyper::service::{Service, service_fn};
use ::hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

use crate::worker::{Connection, DrainSignal, ListenStream, Listener};

/// Serve `service` on every connection of `listener` (TCP, or a
/// [`UnixListener`](crate::UnixListener): any kind of listener) until the
/// worker has drained, with the drain rules of `docs/cluster.md`:
///
/// - requests in flight when the drain starts finish;
/// - every response sent while draining carries `Connection: close`, and
///   its connection then closes: a keep-alive client moves to a new
///   connection (another worker) without an error;
/// - a connection still idle when the [drain grace](DrainSignal::grace)
///   ends is closed (after its request in flight, if one arrived);
/// - a connection handed over just before the drain is served its first
///   request, if it arrives within the grace.
///
/// Returns once `accept` has ended and every connection has closed. Each
/// connection is served by its own task (`tokio::spawn`). A connection that
/// fails (the client went away, a malformed request) ends quietly: it is
/// the client's error, not the worker's.
pub async fn serve<K, S, B>(mut listener: Listener<K>, service: S)
where
    K: ListenStream,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let drain = listener.drain_signal();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((conn, _peer)) = accepted else { break };
                connections.spawn(serve_connection(conn, service.clone(), drain.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // What was handed over but not accepted goes back to the primary.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One connection: served until the client closes it, a response while
/// draining closes it, or the drain grace ends (then hyper's graceful
/// shutdown: the request in flight finishes, an idle connection closes).
async fn serve_connection<K, S, B>(conn: Connection<K>, service: S, mut drain: DrainSignal)
where
    K: ListenStream,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let closing = drain.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let version = req.version();
        let response = service.call(req);
        let closing = closing.clone();
        async move {
            let mut response = response.await?;
            closing.mark_last(version, &mut response);
            Ok::<_, S::Error>(response)
        }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(conn), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // A client that goes away mid-request is not this worker's error.
        _ = conn.as_mut() => return,
        () = drain.wait_grace() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
