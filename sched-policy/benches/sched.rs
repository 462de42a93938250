//! Scheduling decisions per second, for each built-in policy with 2, 8 and 64
//! workers.
//!
//! Workload: one "connection" is what the primary does per accepted socket
//! in this crate: `Scheduler::assign` (the policy's pick, then the counters),
//! plus `connection_closed` for the connection assigned 8 picks earlier, so
//! the counters move as under real load (least-connections and p2c see
//! changing loads). Peers cycle through 1024 distinct loopback addresses.
//!
//! Raw baseline (round-robin rows only): the bare rotation
//! `idx = (idx + 1) % n` over the same loop, the least work any picker does.
//! The other rows have no raw figure (`raw: null`).
//!
//! What "good" is: a decision should cost well under 1% of a connection
//! hand-off; a bare C accept-and-pass-the-fd loop runs about 26k
//! connections/s on the reference 2-core machine, so the target is >= 2.6M
//! decisions/s for every policy at every worker count, i.e. under 400 ns
//! (the `sched.*` rows' target in `docs/benchmarks.md`).
//!
//! Method: 7 repetitions, ours and raw interleaved A B A B; medians, and
//! spread = (max - min) / 2 of the repetitions. `--quick` (or being run as a
//! test by nextest) does a tiny workload. Unknown arguments are ignored.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use sched_policy::{
    Availability, Connection, LeastConnections, ListenerId, Policy, PowerOfTwoChoices, RoundRobin,
    Scheduler, SlotId, Sticky,
};

const WINDOW: usize = 8;
const REPS: usize = 7;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // nextest lists the tests of every target: offer one smoke test, which
    // runs the quick workload.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("quick_smoke: test");
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick" || a == "quick_smoke");
    let n_decisions: u32 = if quick { 2_000 } else { 2_000_000 };
    let conns: Vec<Connection> = (0..1024u32)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, (i >> 8) as u8, i as u8);
            Connection::new(
                SocketAddr::new(IpAddr::V4(ip), 40_000 + (i % 1000) as u16),
                ListenerId(0),
            )
        })
        .collect();

    for n_workers in [2u32, 8, 64] {
        row(
            "rr",
            "round-robin",
            n_workers,
            n_decisions,
            &conns,
            true,
            RoundRobin::new,
        );
        row(
            "least_conn",
            "least-connections",
            n_workers,
            n_decisions,
            &conns,
            false,
            LeastConnections::new,
        );
        row(
            "p2c",
            "power of two choices",
            n_workers,
            n_decisions,
            &conns,
            false,
            || PowerOfTwoChoices::with_seed(7),
        );
        row(
            "sticky",
            "sticky (rendezvous by client IP)",
            n_workers,
            n_decisions,
            &conns,
            false,
            Sticky::new,
        );
    }
}

fn row<P: Policy>(
    id: &str,
    what: &str,
    n_workers: u32,
    n_decisions: u32,
    conns: &[Connection],
    with_raw: bool,
    make: impl Fn() -> P,
) {
    let mut ours = Vec::with_capacity(REPS);
    let mut raw = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        ours.push(run_policy(make(), n_workers, n_decisions, conns));
        if with_raw {
            raw.push(run_rotation(n_workers, n_decisions));
        }
    }
    let (ours_med, ours_spread) = summarise(&mut ours);
    let raw_fields = if with_raw {
        let (m, s) = summarise(&mut raw);
        format!("\"raw\":{m:.0},\"raw_spread\":{s:.0}")
    } else {
        "\"raw\":null,\"raw_spread\":null".to_owned()
    };
    eprintln!(
        "{id} x{n_workers}: {:.2}M decisions/s (spread {:.2}M)",
        ours_med / 1e6,
        ours_spread / 1e6
    );
    println!(
        "{{\"id\":\"sched.{id}_{n_workers}w\",\"what\":\"{what} decisions, {n_workers} workers\",\"unit\":\"per_s\",\"better\":\"higher\",\"ours\":{ours_med:.0},\"ours_spread\":{ours_spread:.0},{raw_fields},\"target\":\">= 2.6e6 per_s (1% of a 26k/s hand-off)\"}}"
    );
}

/// Decisions per second of `policy` through a `Scheduler`.
fn run_policy<P: Policy>(policy: P, n_workers: u32, n: u32, conns: &[Connection]) -> f64 {
    let mut sched = Scheduler::new(policy);
    for i in 0..n_workers {
        sched.add_worker(SlotId::new(i)).expect("fresh slot");
        sched
            .set_state(SlotId::new(i), Availability::Ready)
            .expect("known slot");
    }
    let mut window = [None::<SlotId>; WINDOW];
    let started = Instant::now();
    for i in 0..n as usize {
        let conn = &conns[i % conns.len()];
        let slot = sched.assign(black_box(conn));
        if let Some(old) = std::mem::replace(&mut window[i % WINDOW], slot) {
            sched.connection_closed(old).expect("open connection");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    black_box(&sched);
    f64::from(n) / secs
}

/// Decisions per second of the bare rotation.
fn run_rotation(n_workers: u32, n: u32) -> f64 {
    let n_workers = black_box(n_workers as usize);
    let mut idx = 0usize;
    let started = Instant::now();
    for _ in 0..n {
        idx = (idx + 1) % n_workers;
        black_box(idx);
    }
    let secs = started.elapsed().as_secs_f64();
    f64::from(n) / secs
}

/// Median and (max - min) / 2.
fn summarise(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let median = xs[xs.len() / 2];
    let spread = (xs[xs.len() - 1] - xs[0]) / 2.0;
    (median, spread)
}
