//! [`main`]: the entry point that runs each role on its runtime, so a
//! program need not ask for its role and build runtimes itself.

use std::future::Future;

use crate::Payload;
use crate::worker::Worker;

/// Run this program as the primary or as a worker, each on its own runtime:
/// `primary()` on a multi-thread tokio runtime, or, in a process the
/// primary started, `worker(w)` with `w` connected to the primary, on a
/// current-thread runtime. The primary's queued output is written out
/// (bounded, one second per stream) before this returns, so no line of
/// the event log is lost at exit.
///
/// ```no_run
/// use cluster_core::{Cluster, Settings, Worker};
///
/// fn main() -> anyhow::Result<()> {
///     cluster_core::main(primary, worker)
/// }
///
/// async fn primary() -> anyhow::Result<()> {
///     let mut settings = Settings::from_env()?;
///     settings.handle_signals().reload_on_hangup();
///     Ok(Cluster::<()>::new(settings)?.run().await?)
/// }
///
/// async fn worker(worker: Worker<()>) -> anyhow::Result<()> {
///     let listener = worker.listen(("127.0.0.1", 3000)).await?;
///     # let _ = listener;
///     // … serve it (`cluster_core::hyper::serve`, `cluster_core::axum::serve`)
///     Ok(())
/// }
/// ```
///
/// # Why these runtimes
///
/// - **A worker runs on one thread.** The workers are the parallelism
///   (one per CPU, like Node's processes), so a multi-thread runtime in
///   each would only add threads that contend for the same CPUs, and
///   memory. Measured on a 2-core machine, 2 workers serving
///   `hello-cluster`'s `GET /` to 8 keep-alive connections on loopback:
///   the same requests per second as multi-thread workers (2 threads
///   each), with 11% less CPU per request and 7% less idle resident memory
///   (`docs/cluster.md`, "The runtimes", has the figures). The cost: one
///   task that blocks its thread blocks the worker (its heartbeat too,
///   which the primary then notices).
/// - **The primary runs on several threads**, so the program's own code in
///   the primary (a route beside the cluster, a slow `/proc` read) never
///   holds up supervision. The hand-off does not run there anyway: the
///   primary's network thread does it (see `Cluster`).
///
/// A program that wants other runtimes builds them itself:
/// `if cluster_core::is_worker() { … } else { … }`.
///
/// # Errors
///
/// What `primary` or `worker` returns; a runtime that cannot be built (an
/// `io::Error`), or a worker that cannot connect to its primary (an
/// [`Error`](crate::Error)), converted into `E`.
pub fn main<M, E, P, PF, W, WF>(primary: P, worker: W) -> Result<(), E>
where
    M: Payload,
    P: FnOnce() -> PF,
    PF: Future<Output = Result<(), E>>,
    W: FnOnce(Worker<M>) -> WF,
    WF: Future<Output = Result<(), E>>,
    E: From<std::io::Error> + From<crate::Error>,
{
    if crate::is_worker() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(async {
            let connected = Worker::<M>::connect().await?;
            worker(connected).await
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let result = primary().await;
        crate::output::flush_both(crate::primary::FLUSH_BOUND).await;
        result
    })
}
