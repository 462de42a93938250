//! The primary's network thread: one process-wide current-thread tokio
//! runtime that runs every worker's reader (and so its channel's writer,
//! which the handshake spawns there) and every accept loop.
//!
//! The hand-off path (accept, schedule, queue `NewConnection`, write it,
//! read the ack, close the duplicate) then stays on one thread: waking a
//! channel's writer or reading an ack is a local wake-up, and one
//! `epoll_wait` returns the listener's and the channels' readiness
//! together, instead of the user's multi-thread scheduler waking its
//! workers across threads for each step. Like spawn-core's spawner thread it
//! is started once, on first use, and never exits; a cluster's tasks there
//! end with the cluster (see [`spawn_until`]).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The network runtime, started on first use; `None` if it could not be.
static NET: OnceLock<Option<Handle>> = OnceLock::new();

/// Where the readers and accept loops run: the network thread, or the
/// caller's runtime if that thread could not be started.
pub(crate) fn handle() -> Handle {
    NET.get_or_init(|| start().ok())
        .clone()
        .unwrap_or_else(Handle::current)
}

fn start() -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("cluster-net".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// Run `task` on the network runtime until it ends or `stop`'s sender drops
/// (the cluster is gone: its reader must not keep a worker's channel open).
pub(crate) fn spawn_until<F>(task: F, mut stop: watch::Receiver<()>) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    handle().spawn(async move {
        tokio::select! {
            () = task => {}
            _ = stop.changed() => {}
        }
    })
}
