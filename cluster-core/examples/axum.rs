//! A plain axum app, clustered: one worker per CPU behind one port; SIGHUP
//! reloads the workers one by one and SIGTERM or Ctrl-C drains them, and
//! neither fails a request, keep-alive clients included. With every
//! operator feature, each off until the operator asks: `WORKERS`,
//! `METRICS_PORT` (Prometheus), `LOG_FORMAT=json` and `RUST_LOG`,
//! recycling (`MAX_REQUESTS`, `MAX_MEMORY_MB`, `MAX_AGE_SECS`), SIGTTIN and
//! SIGTTOU scaling, SIGUSR2 upgrades, systemd (socket activation, notify,
//! `PID_FILE`). docs/cluster.md opens with it, beside the same app without
//! the cluster.
//!
//! ```sh
//! cargo run --release --example axum
//! curl http://127.0.0.1:3000/        # hello from pid 4242
//! ```
//!
//! `GET /slow` answers the same a second later (to watch a drain finish a
//! request in flight). The primary prints one line per cluster event.

use axum::{Router, routing::get};
use cluster_core::{Cluster, Settings, Worker};

async fn hello() -> String {
    format!("hello from pid {}\n", std::process::id())
}

async fn slow() -> String {
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    hello().await
}

fn main() -> anyhow::Result<()> {
    cluster_core::main(primary, worker)
}

async fn primary() -> anyhow::Result<()> {
    let mut settings = Settings::from_env()?;
    settings.handle_signals().reload_on_hangup();
    settings.upgrade_on_signal().scale_on_signals();
    Ok(Cluster::<()>::new(settings)?.run().await?)
}

async fn worker(worker: Worker<()>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow));
    let port = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    let listener = worker.listen(("127.0.0.1", port)).await?;
    cluster_core::axum::serve(listener, app).await;
    Ok(())
}
