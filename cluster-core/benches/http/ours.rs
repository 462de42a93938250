//! Our cluster as the server: this bench binary is the primary (the
//! `Cluster` runs on the bench's tokio runtime, beside the client threads)
//! and, re-executed, the workers, which listen through the primary and serve
//! each connection with the same few lines as the raw workers (`serve.rs`,
//! here on the worker's current-thread runtime).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cluster_core::{Cluster, PolicyKind, Settings, Worker};

use crate::serve::Answer;

/// The variable that makes the workers listen on a Unix-domain socket.
const UNIX_ENV: &str = "BENCH_UNIX_PATH";

/// A running cluster and the port its workers listen on (0 on a
/// Unix-domain socket).
pub(crate) struct OurServer {
    pub(crate) port: u16,
    cluster: Cluster<()>,
}

impl OurServer {
    /// The cluster (`--ops`: its stats).
    pub(crate) fn cluster(&self) -> &Cluster<()> {
        &self.cluster
    }

    /// Shut the cluster down gracefully.
    pub(crate) async fn shutdown(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.cluster.shutdown()).await;
    }
}

/// Start a cluster of `n` workers under `policy`; returns once all listen.
pub(crate) fn start(
    rt: &tokio::runtime::Runtime,
    policy: PolicyKind,
    n: usize,
) -> anyhow::Result<OurServer> {
    start_on(rt, policy, n, None)
}

/// [`start`], the workers listening on the Unix-domain socket `path`.
pub(crate) fn start_unix(
    rt: &tokio::runtime::Runtime,
    policy: PolicyKind,
    n: usize,
    path: &std::path::Path,
) -> anyhow::Result<OurServer> {
    start_on(rt, policy, n, Some(path))
}

fn start_on(
    rt: &tokio::runtime::Runtime,
    policy: PolicyKind,
    n: usize,
    unix: Option<&std::path::Path>,
) -> anyhow::Result<OurServer> {
    rt.block_on(async {
        let mut settings = Settings::new();
        settings
            .n_workers(n)
            .scheduling_policy(policy)
            .shutdown_deadline(Duration::from_secs(5));
        if let Some(path) = unix {
            settings.env(UNIX_ENV, path);
        }
        let mut cluster = Cluster::<()>::new(settings)?;
        cluster.start()?;
        let port = crate::support::until_listening(&mut cluster, n)
            .await
            .map_err(|e| e.context(format!("the {policy} cluster")))?;
        // Nobody reads the events from here on; the cluster emits only a
        // few (no restarts, no messages) and its queue is unbounded.
        Ok(OurServer { port, cluster })
    })
}

/// The body of a cluster worker: listen on 127.0.0.1:0 (or on the
/// Unix-domain socket `BENCH_UNIX_PATH`) through the primary and serve connections one at a time until asked to leave.
pub(crate) fn worker_main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let me = Worker::<()>::connect().await?;
        let answer = Answer::new(&me.id().to_string());
        if let Some(path) = std::env::var_os(UNIX_ENV) {
            let mut listener = me.listen_unix(std::path::PathBuf::from(path)).await?;
            while let Some((mut conn, _)) = listener.accept().await {
                let _ = answer.serve_async(&mut conn).await;
            }
            return Ok(());
        }
        let mut listener = me
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
        while let Some((mut conn, _)) = listener.accept().await {
            let _ = answer.serve_async(&mut conn).await;
        }
        Ok(())
    })
}
