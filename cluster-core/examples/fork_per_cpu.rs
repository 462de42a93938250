//! The seed's first cluster snippet: fork one worker per CPU.
//!
//! ```sh
//! cargo run -p cluster-core --example fork_per_cpu
//! ```
//!
//! The program runs twice over: once as the primary, then once per worker,
//! re-executed by the primary (the worker learns its role from an injected
//! variable, like Node's `NODE_UNIQUE_ID`).

use cluster_core::{Cluster, Event, Settings, Worker};

fn main() -> anyhow::Result<()> {
    // Decide the role before any thread exists (it reads and removes the
    // injected variable).
    let is_worker = cluster_core::is_worker();
    let rt = tokio::runtime::Runtime::new()?;
    if is_worker {
        return rt.block_on(worker());
    }
    rt.block_on(primary())
}

async fn primary() -> anyhow::Result<()> {
    let mut settings = Settings::new();
    // `setupPrimary({ exec })`: the default is this very program.
    settings.program(std::env::current_exe()?);
    let cpus = std::thread::available_parallelism()?.get();
    println!("forking for {cpus} CPUs");
    let mut cluster = Cluster::<String>::new(settings)?;
    for _ in 0..cpus {
        let worker = cluster.fork()?;
        println!("forked worker pid {}", worker.pid());
    }
    // Wait until all are online, then end the example gracefully.
    let mut online = 0;
    while let Some(event) = cluster.next_event().await {
        if let Event::Online { worker, .. } = event {
            online += 1;
            println!("worker {worker} is online");
            if online == cpus {
                cluster.shutdown().await?;
            }
        }
    }
    Ok(())
}

async fn worker() -> anyhow::Result<()> {
    let mut me = Worker::<String>::connect().await?;
    // Serve until the primary asks us to disconnect.
    while me.recv().await?.is_some() {}
    Ok(())
}
