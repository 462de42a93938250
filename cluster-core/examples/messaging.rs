//! The seed's messaging snippet: the primary sends every worker a message,
//! the worker prints it (and, beyond the seed, answers).
//!
//! ```sh
//! cargo run -p cluster-core --example messaging
//! ```
//!
//! Messages are typed: any `serde` type, here an enum, both ways.

use cluster_core::{Cluster, Event, Settings, Worker, WorkerStdio};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// Primary → worker.
    Hello { text: String, id: u64 },
    /// Worker → primary.
    Thanks { from: u64 },
}

fn main() -> anyhow::Result<()> {
    let is_worker = cluster_core::is_worker();
    let rt = tokio::runtime::Runtime::new()?;
    if is_worker {
        return rt.block_on(worker());
    }
    rt.block_on(primary())
}

async fn primary() -> anyhow::Result<()> {
    let mut settings = Settings::new();
    settings.n_workers(2).stdio(WorkerStdio::Piped);
    let mut cluster = Cluster::<Msg>::new(settings)?;
    cluster.start()?;
    let mut online = 0;
    let mut thanks = 0;
    while let Some(event) = cluster.next_event().await {
        match event {
            Event::Online { .. } => {
                online += 1;
                if online == 2 {
                    // `Object.values(cluster.workers).forEach(w => w.send(...))`
                    for (id, worker) in cluster.workers() {
                        let text = "hello worker".to_string();
                        worker.send(&Msg::Hello { text, id: id.0 }).await?;
                    }
                }
            }
            Event::Message(m) => {
                println!("primary got {:?}", m.value());
                thanks += 1;
                if thanks == 2 {
                    cluster.shutdown().await?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

async fn worker() -> anyhow::Result<()> {
    let mut me = Worker::<Msg>::connect().await?;
    // `process.on("message", ...)`
    while let Some(msg) = me.recv().await? {
        if let Msg::Hello { text, id } = msg {
            println!("Message from master: {text} {id}");
            me.send(&Msg::Thanks { from: me.id().0 }).await?;
        }
    }
    Ok(())
}
