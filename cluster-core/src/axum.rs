//! axum on a worker's listener, with the drain (feature `axum`): [`serve`]
//! serves an app on any listener of a worker ([`Accept`]: TCP, Unix-domain,
//! inherited) through the one serve path of [`crate::hyper`] (HTTP/1.1 and
//! HTTP/2, the drain rules).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use cluster_core::Worker;
//!
//! async fn worker(worker: Worker<()>) -> cluster_core::Result<()> {
//!     let app = Router::new().route("/", get(|| async { "hello\n" }));
//!     let listener = worker.listen(("127.0.0.1", 3000)).await?;
//!     cluster_core::axum::serve(listener, app).await; // returns once drained
//!     Ok(())
//! }
//! ```
//!
//! `axum::serve` works too: the cluster's [`Listener`], of every stream
//! kind (TCP, or a [`UnixListener`](crate::UnixListener)), is an
//! [`axum::serve::Listener`], and [`DrainLayer`] marks the responses sent
//! while draining:
//!
//! ```no_run
//! # use axum::{Router, routing::get};
//! # use cluster_core::Worker;
//! # async fn worker(worker: Worker<()>) -> std::io::Result<()> {
//! # let app = Router::new().route("/", get(|| async { "hello\n" }));
//! let listener = worker.listen(("127.0.0.1", 3000)).await.map_err(std::io::Error::other)?;
//! axum::serve(listener, app.layer(worker.drain_layer()))
//!     .with_graceful_shutdown(worker.shutdown_signal())
//!     .await
//! # }
//! ```
//!
//! What each part does in the drain there (rules and reasons in
//! `docs/cluster.md`): [`DrainLayer`] adds `Connection: close` to every
//! HTTP/1 response sent while the worker drains, so a keep-alive client
//! moves to a new connection after its next response instead of racing a
//! close; [`Worker::shutdown_signal`](crate::Worker::shutdown_signal)
//! resolves once every connection has closed or the drain grace has
//! passed, and only then does axum close the connections still idle; and
//! `accept` pends once the worker drains (axum's loop expects a listener
//! that never ends), after the connections already handed over.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::axum::http::{Request, Response};
use ::hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::{Layer, Service};

use crate::accept::Accept;
use crate::worker::{Connection, DrainSignal, ListenStream, Listener};

/// Serve `app` (an axum `Router`, or any tower service of HTTP requests)
/// on every connection of `listener` until the worker has drained:
/// [`crate::hyper::serve`] with the app, so with the same drain rules
/// (`Connection: close` on HTTP/1 responses while draining, GOAWAY on
/// HTTP/2, idle connections closed at the drain grace's end). No layer to
/// add, no shutdown signal to pass.
pub async fn serve<L, S, B>(listener: L, app: S)
where
    L: Accept,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: ::hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::hyper::serve(listener, TowerToHyperService::new(app)).await;
}

/// [`serve`] with connections built by `builder` (see
/// [`crate::hyper::builder`]: header-read timeout, keep-alive, HTTP/2
/// limits).
pub async fn serve_with<L, S, B>(listener: L, builder: auto::Builder<TokioExecutor>, app: S)
where
    L: Accept,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: ::hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::hyper::serve_with(listener, builder, TowerToHyperService::new(app)).await;
}

impl<S: ListenStream> ::axum::serve::Listener for Listener<S> {
    type Io = Connection<S>;
    type Addr = S::Peer;

    /// The next connection; once the worker drains (after the connections
    /// already handed over), it never resolves: axum stops accepting when
    /// its graceful-shutdown future resolves.
    async fn accept(&mut self) -> (Connection<S>, S::Peer) {
        match Listener::accept(self).await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<S::Peer> {
        S::local_peer(&Listener::local_addr(self))
    }
}

/// A tower layer that adds `Connection: close` to every HTTP/1 response sent
/// while the worker drains (made by
/// [`Worker::drain_layer`](crate::Worker::drain_layer) or
/// [`DrainLayer::new`]). hyper then closes the connection after that
/// response, and the client opens a new one, to another worker.
#[derive(Debug, Clone)]
pub struct DrainLayer {
    drain: DrainSignal,
}

impl DrainLayer {
    /// The layer for this drain.
    pub fn new(drain: DrainSignal) -> Self {
        Self { drain }
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = CloseWhenDraining<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CloseWhenDraining {
            inner,
            drain: self.drain.clone(),
        }
    }
}

/// The service of [`DrainLayer`].
#[derive(Debug, Clone)]
pub struct CloseWhenDraining<S> {
    inner: S,
    drain: DrainSignal,
}

impl<S, B, R> Service<Request<B>> for CloseWhenDraining<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let version = req.version();
        let response = self.inner.call(req);
        let drain = self.drain.clone();
        Box::pin(async move {
            let mut response = response.await?;
            drain.mark_last(version, &mut response);
            Ok(response)
        })
    }
}
