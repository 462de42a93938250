//! The seed's guarding snippet: restart workers that die.
//!
//! ```sh
//! cargo run -p cluster-core --example guard
//! ```
//!
//! In Node this is user code (and the seed's second variant has its
//! condition inverted). Here it is a setting: the restart policy, with
//! backoff and a crash-loop limit. The workers of this example crash on
//! purpose a few times; the primary restarts them, then shuts down.
//! `--manual` shows the Node-style hand-written guard instead.

use std::time::Duration;

use cluster_core::{
    Backoff, Cluster, CrashLoopLimit, Event, RestartPolicy, Settings, Worker, WorkerStdio,
};

fn main() -> anyhow::Result<()> {
    let is_worker = cluster_core::is_worker();
    let rt = tokio::runtime::Runtime::new()?;
    if is_worker {
        return rt.block_on(worker());
    }
    let manual = std::env::args().any(|a| a == "--manual");
    rt.block_on(primary(manual))
}

async fn primary(manual: bool) -> anyhow::Result<()> {
    let mut settings = Settings::new();
    settings
        .n_workers(2)
        .stdio(WorkerStdio::Piped)
        .restart(if manual {
            RestartPolicy::Never
        } else {
            RestartPolicy::OnFailure
        })
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            ..Backoff::default()
        })
        .crash_loop_limit(CrashLoopLimit {
            max_restarts: 5,
            window: Duration::from_secs(10),
        });
    let mut cluster = Cluster::<String>::new(settings)?;
    cluster.start()?;
    let mut exits = 0;
    while let Some(event) = cluster.next_event().await {
        match event {
            Event::Exit {
                worker,
                exit,
                exited_after_disconnect,
                ..
            } => {
                println!("worker {worker} ended: {exit}");
                exits += 1;
                // The hand-written guard of the seed, with the condition the
                // right way round: restart what died unintentionally.
                if manual && !exit.success() && !exited_after_disconnect && exits < 6 {
                    println!("starting another worker");
                    cluster.fork()?;
                }
                if exits == 6 {
                    cluster.shutdown().await?;
                }
            }
            Event::RestartScheduled { slot, delay } => {
                println!("slot {slot}: restart in {delay:?}");
            }
            Event::GaveUp { slot, last_exit } => {
                println!("slot {slot}: gave up after {last_exit}");
            }
            _ => {}
        }
    }
    Ok(())
}

async fn worker() -> anyhow::Result<()> {
    let me = Worker::<String>::connect().await?;
    // Crash after a moment: a bug that the guard papers over.
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("worker {} crashes", me.id());
    std::process::exit(1);
}
