//! `--ops` (issue 14's figures, printed on stderr, no JSON rows): the cost
//! of `Cluster::stats()` with 4 workers (µs per call over a timed loop),
//! and round-robin connections per second with and without a `tracing`
//! subscriber in one run (the subscriber records every cluster-core event,
//! at every level, into a sink; it is switched on and off between
//! alternating repetitions, A B A B).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::client::{self, Load, Target};
use crate::support::{median, spread};
use crate::{WORKERS, ours};

/// Whether the subscriber records (its filter is asked at every event).
static ON: AtomicBool = AtomicBool::new(false);

pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                    ON.load(Ordering::Relaxed)
                })),
        )
        .try_init()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // The snapshot's cost, 4 workers.
    let four = ours::start(&rt, sched_policy::PolicyKind::RoundRobin, 4)?;
    let calls = if quick { 200 } else { 2000 };
    let mut per_call = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(rt.block_on(four.cluster().stats()));
        }
        per_call.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
    }
    let stats = rt.block_on(four.cluster().stats());
    eprintln!(
        "ops.stats_us_per_call (4 workers): median {:.1} µs, spread {:.1} (rss of worker 1: {:?})",
        median(&per_call),
        spread(&per_call),
        stats.workers.first().and_then(|w| w.rss_bytes)
    );
    rt.block_on(four.shutdown());

    // Round-robin with and without a subscriber.
    let rr = ours::start(&rt, sched_policy::PolicyKind::RoundRobin, WORKERS)?;
    let target = Target::Tcp(rr.port);
    let load = Load {
        total: if quick { 100 } else { 4000 },
        concurrency: 8,
        budget: Duration::from_secs(if quick { 5 } else { 15 }),
    };
    client::run(&target, Load { total: 50, ..load });
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for rep in 0..if quick { 2 } else { 5 } {
        for (subscriber, rates) in [(false, &mut off), (true, &mut on)] {
            ON.store(subscriber, Ordering::Relaxed);
            let out = client::run(&target, load);
            failed += out.failed;
            rates.push(out.rate());
        }
        eprintln!(
            "rep {rep}: rr without subscriber {:.0}/s, with {:.0}/s",
            off[rep], on[rep]
        );
    }
    ON.store(false, Ordering::Relaxed);
    eprintln!(
        "ops.rr_conn_per_s: without a subscriber {:.0} ± {:.0}/s, with {:.0} ± {:.0}/s ({} failed)",
        median(&off),
        spread(&off),
        median(&on),
        spread(&on),
        failed
    );
    rt.block_on(rr.shutdown());
    Ok(())
}
