//! A plain axum app, clustered: one worker per CPU behind one port; SIGHUP
//! reloads the workers one by one and SIGTERM or Ctrl-C drains them, and
//! neither fails a request, keep-alive clients included. docs/cluster.md
//! opens with it, beside the same app without the cluster.
//!
//! ```sh
//! cargo run --release --example axum
//! curl http://127.0.0.1:3000/        # hello from pid 4242
//! ```
//!
//! `GET /slow` answers the same a second later (to watch a drain finish a
//! request in flight). The primary prints every cluster event.

use axum::{Router, routing::get};
use cluster_core::{Cluster, Settings, Worker};

async fn hello() -> String {
    format!("hello from pid {}\n", std::process::id())
}

async fn slow() -> String {
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    hello().await
}

// One thread per process: the workers are the parallelism, and no thread
// exists yet when `is_primary` reads (and removes) the cluster's variable.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if cluster_core::is_primary() {
        let mut settings = Settings::new();
        settings.handle_signals().reload_on_hangup();
        let cluster = Cluster::<()>::new(settings)?;
        return Ok(cluster.run(|event| println!("{event:?}")).await?);
    }
    let worker = Worker::<()>::connect().await?;
    let app = Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow));
    let port = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    let listener = worker.listen(([127, 0, 0, 1], port).into()).await?;
    axum::serve(listener, app.layer(worker.drain_layer()))
        .with_graceful_shutdown(worker.shutdown_signal())
        .await?;
    Ok(())
}
