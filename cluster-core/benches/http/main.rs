//! Workload: HTTP on 127.0.0.1 with a new TCP connection per request
//! (`GET / HTTP/1.1`, `Connection: close`, read to EOF), by a bounded Rust
//! client in this process (threads, bounded in requests and in time), against
//! four servers of 2 worker processes each, all answering with the same few
//! lines of code (`serve.rs`: blocking in the raw workers, the same steps
//! awaited in ours, which serve on a current-thread tokio runtime as users of
//! `Worker::listen` do), so only the way a connection reaches a worker
//! differs:
//!
//! - (a) our cluster, round-robin: the primary accepts and hands each
//!   connection to a worker over its `cluster-ipc` channel, the worker acks;
//! - (b) our cluster, `none`: the workers accept on the shared listener;
//! - (c) raw hand-off: a bare accept loop passing each descriptor with one
//!   `sendmsg` (`SCM_RIGHTS`) to bare worker processes (`raw.rs`);
//! - (d) raw shared accept: bare worker processes accepting on one listener;
//! - (e) our cluster, round-robin, on a Unix-domain socket (the client
//!   connects to a path; `Worker::listen_unix`);
//! - (f) raw hand-off on a Unix-domain socket: (c)'s loop on a Unix-domain
//!   listener;
//! - (g) our cluster, round-robin, of 16 workers on the same 2 CPUs.
//!
//! Rows (one JSON line each on stdout):
//! - `http.rr_conn_per_s`: (a) against (c). Good: >= 0.9 x raw (Node.js 20:
//!   12.5k/s against a C hand-off of 26k/s on a 2-vCPU machine, 0.48 x).
//! - `http.none_conn_per_s`: (b) against (d). Good: >= 0.9 x raw (Node.js:
//!   23.7k/s against a C shared accept of 39k/s).
//! - `http.unix_rr_conn_per_s`: (e) against (f). Good: >= 0.9 x raw (no
//!   Node.js figure: its cluster script serves TCP only).
//! - `http.rr_conn_per_s_16w`: (g) against (a): how the hand-off's rate
//!   holds with 16 workers for 2 CPUs. Should not fall much: the primary's
//!   work per connection is the same, and a pick among 16 costs what one
//!   among 2 does (sched-policy's rows); but each worker now gets every
//!   16th connection and sleeps in between, so most connections wake their
//!   worker, where 2 busy workers usually find the next one waiting.
//!   Good: >= 0.8 x raw (raw: (a)).
//! - `http.rr_fairness`: under round-robin, the busiest worker's answers over
//!   the quietest's (counted from the bodies, which name the worker), the
//!   worst of a light load (1 connection at a time), the rate runs' load (8)
//!   and a heavy load (32). No raw baseline. Good: <= 1.05 (Node.js:
//!   1.02-1.44).
//!
//! The ids are those `bench/node/http.js` prints, so `cargo xtask bench` puts
//! Node's figures beside ours. The four servers run side by side and the
//! client alternates a b c d over the repetitions (A B A B); a figure is the
//! median of the repetitions and its spread is (max - min) / 2 of them.
//!
//! `--quick` runs a tiny workload (seconds, even in a debug build), as does a
//! debug build run without `--bench` (`cargo test --all-targets`); `--list`
//! (cargo-nextest asking for tests) lists one test, `quick_smoke`, which
//! nextest then runs as that smoke test; `--ops` measures the stats
//! snapshot and tracing's cost instead (`ops.rs`); other arguments are
//! ignored.
//! The bench re-executes itself as the workers: as a cluster worker (the
//! variable cluster-core injects) or with `--raw-worker <kind> <tag>`.

mod client;
mod ops;
mod ours;
mod raw;
mod serve;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use client::{Load, Target};
use support::row;

/// Workers per server.
const WORKERS: usize = 2;

/// Workers of the server that shows how the hand-off holds with many.
const MANY_WORKERS: usize = 16;

fn main() -> anyhow::Result<()> {
    // Roles first, before any thread exists.
    if cluster_core::is_worker() {
        return ours::worker_main();
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--raw-worker") {
        let kind = args.get(i + 1).map_or("", String::as_str);
        let tag = args.get(i + 2).map_or("0", String::as_str);
        return raw::worker_main(kind, tag);
    }
    let Some(quick) = support::quick(&args) else {
        return Ok(());
    };
    let budget = Duration::from_secs(if quick { 5 } else { 15 });
    if args.iter().any(|a| a == "--ops") {
        return ops::run(quick);
    }
    let (reps, total) = if quick { (2, 100) } else { (5, 4000) };
    let rate_load = Load {
        total,
        concurrency: 8,
        budget,
    };
    let light = Load {
        total: if quick { 40 } else { 400 },
        concurrency: 1,
        budget,
    };
    let heavy = Load {
        total: if quick { 200 } else { 4000 },
        concurrency: 32,
        budget,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rr = ours::start(&rt, sched_policy::PolicyKind::RoundRobin, WORKERS)?;
    let none = ours::start(&rt, sched_policy::PolicyKind::None, WORKERS)?;
    let handoff = raw::start_handoff(WORKERS)?;
    let shared = raw::start_shared(WORKERS)?;
    let sock = |name: &str| {
        std::env::temp_dir().join(format!("procwork-bench-{}-{name}.sock", std::process::id()))
    };
    let unix_rr = ours::start_unix(
        &rt,
        sched_policy::PolicyKind::RoundRobin,
        WORKERS,
        &sock("ours"),
    )?;
    let unix_handoff = raw::start_unix_handoff(WORKERS, sock("raw"))?;
    let rr_many = ours::start(&rt, sched_policy::PolicyKind::RoundRobin, MANY_WORKERS)?;

    let servers = [
        ("ours rr", Target::Tcp(rr.port)),
        ("raw hand-off", Target::Tcp(handoff.port)),
        ("ours none", Target::Tcp(none.port)),
        ("raw shared", Target::Tcp(shared.port)),
        ("ours unix rr", Target::Unix(sock("ours"))),
        ("raw unix hand-off", Target::Unix(unix_handoff.path.clone())),
        ("ours rr 16w", Target::Tcp(rr_many.port)),
    ];
    // `--only <server>` (a name below): load that server alone for about
    // 5 s and print nothing else, for a profiler attached to the whole
    // machine (`bench/profile-handoff.sh`).
    if let Some(i) = args.iter().position(|a| a == "--only") {
        let name = args.get(i + 1).map_or("", String::as_str);
        let (_, target) = servers
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| anyhow::anyhow!("--only: no server named {name:?}"))?;
        let start = std::time::Instant::now();
        let (mut served, mut failed) = (0, 0);
        while start.elapsed() < Duration::from_secs(5) {
            let out = client::run(target, rate_load);
            served += out.done;
            failed += out.failed;
        }
        eprintln!(
            "{name}: {served} requests ({failed} failed) in {:.2} s",
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    // Warm-up: page cache, the runtimes, the listeners' queues.
    for (_, target) in &servers {
        client::run(
            target,
            Load {
                total: 50,
                ..rate_load
            },
        );
    }

    let mut rates: [Vec<f64>; 7] = Default::default();
    let mut fairness = Vec::new();
    let mut failed = 0;
    for rep in 0..reps {
        let mut line = format!("rep {rep}:");
        for (i, (name, target)) in servers.iter().enumerate() {
            let out = client::run(target, rate_load);
            failed += out.failed;
            rates[i].push(out.rate());
            line += &format!(" {name} {:.0}/s", out.rate());
            if i == 0 {
                fairness.push(out.fairness(WORKERS));
            }
        }
        eprintln!("{line}");
    }
    let mut light_heavy = Vec::new();
    for rep in 0..reps {
        let l = client::run(&Target::Tcp(rr.port), light);
        let h = client::run(&Target::Tcp(rr.port), heavy);
        failed += l.failed + h.failed;
        eprintln!(
            "rep {rep}: round-robin fairness light {:.3} {:?}, heavy {:.3} {:?}",
            l.fairness(WORKERS),
            l.per_worker,
            h.fairness(WORKERS),
            h.per_worker
        );
        light_heavy.push(l.fairness(WORKERS).max(h.fairness(WORKERS)));
    }
    if failed > 0 {
        eprintln!("warning: {failed} request(s) failed during the bench");
    }
    let [
        rr_rates,
        handoff_rates,
        none_rates,
        shared_rates,
        unix_rr_rates,
        unix_handoff_rates,
        rr_many_rates,
    ] = rates;
    row(
        "http.rr_conn_per_s",
        "New connection per request, round-robin hand-off",
        "per_s",
        "higher",
        &rr_rates,
        Some(&handoff_rates),
        ">= 0.9x raw",
    );
    row(
        "http.none_conn_per_s",
        "New connection per request, shared listener (none)",
        "per_s",
        "higher",
        &none_rates,
        Some(&shared_rates),
        ">= 0.9x raw",
    );
    row(
        "http.unix_rr_conn_per_s",
        "New connection per request, round-robin hand-off, Unix-domain socket",
        "per_s",
        "higher",
        &unix_rr_rates,
        Some(&unix_handoff_rates),
        ">= 0.9x raw",
    );
    row(
        "http.rr_conn_per_s_16w",
        "New connection per request, round-robin hand-off to 16 workers on 2 CPUs (raw: to 2 workers)",
        "per_s",
        "higher",
        &rr_many_rates,
        Some(&rr_rates),
        ">= 0.8x raw",
    );
    // The worst of the three loads, repetition by repetition.
    let worst: Vec<f64> = fairness
        .iter()
        .zip(&light_heavy)
        .map(|(a, b)| a.max(*b))
        .collect();
    row(
        "http.rr_fairness",
        "Round-robin fairness (busiest / quietest worker)",
        "ratio",
        "lower",
        &worst,
        None,
        "<= 1.05",
    );
    drop((handoff, shared, unix_handoff));
    rt.block_on(async {
        rr.shutdown().await;
        rr_many.shutdown().await;
        none.shutdown().await;
        unix_rr.shutdown().await;
    });
    Ok(())
}
