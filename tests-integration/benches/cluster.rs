//! Cluster figures, each ours against a raw OS baseline measured in the same
//! run, interleaved A B A B:
//!
//! - `cluster.restart_to_online`: a worker (the small `cluster-helper` binary)
//!   is SIGKILLed; time until its replacement is online (reaped, restart
//!   decided, re-executed, channel up, `Online` received). Raw: a bare spawn
//!   of the same binary until it writes one byte on a pipe. Good: <= 5 ms
//!   median (Node.js: 55 ms, nearly all of it Node's boot).
//! - `cluster.start_2_online`: a new cluster of 2 workers until both are
//!   online. Raw: two bare spawns of the same binary, each until its byte.
//!   Good: <= 2x raw. The gap is what a worker is: its spawn needs a
//!   `pre_exec` hook (the channel at fd 3, the parent-death signal), so it
//!   forks where the bare spawn takes std's `posix_spawn` path, and the
//!   worker starts a runtime and exchanges the handshake before `Online`.
//!
//! - `cluster.idle_cpu_ms`: the price of the receive spin (cluster-ipc
//!   spins up to 20 µs before it parks, while messages arrive densely): a
//!   cluster of 2 echo workers exchanges 2,000 messages (so every receive
//!   is armed to spin), then sits idle for 10 s (1 s with `--quick`); the
//!   figure is the CPU time (user + system, every thread, from
//!   `/proc/<pid>/task/*/schedstat`) the primary and both workers spent in
//!   that idle time, heartbeats off (they are a cost of their own, shown
//!   on stderr: about 7.5 ms per 10 s here, the same without the spin). No
//!   raw baseline. Good: <= 1 ms per 10 s (an idle channel spins once,
//!   20 µs, and parks).
//!
//! Each repetition takes the median of its samples; the reported figure is the
//! median of the repetitions and the spread is (max - min) / 2 of them.
//! `--quick` runs a tiny workload (seconds, even in a debug build), as does a
//! debug build run without `--bench` (`cargo test --all-targets`); `--list`
//! (cargo-nextest asking for tests) lists one test, `quick_smoke`, which
//! nextest then runs as that smoke test; other arguments are ignored.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_core::{Backoff, Cluster, CrashLoopLimit, Event, RestartPolicy, Settings, Signal};
use serde::{Deserialize, Serialize};

const HELPER: &str = env!("CARGO_BIN_EXE_cluster-helper");

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Text(String),
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // cargo-nextest lists a binary's tests with `--list`: offer one smoke
    // test, which runs the quick workload (no `--bench` below).
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("quick_smoke: test");
        }
        return Ok(());
    }
    // Under `cargo test --all-targets` (a debug build without `--bench`), a
    // quick smoke run.
    let under_cargo_test = cfg!(debug_assertions) && !args.iter().any(|a| a == "--bench");
    let quick = under_cargo_test || args.iter().any(|a| a == "--quick");
    let (reps, samples) = if quick { (3, 3) } else { (9, 15) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // `--only start`: start clusters of 2 for about 5 s and print nothing
    // else, for a profiler attached to the whole machine
    // (`bench/profile/run.sh`).
    if let Some(i) = args.iter().position(|a| a == "--only") {
        let what = args.get(i + 1).map_or("", String::as_str);
        anyhow::ensure!(
            what == "start",
            "--only: no figure named {what:?} (try `start`)"
        );
        let t0 = Instant::now();
        let mut starts = Vec::new();
        while t0.elapsed() < Duration::from_secs(5) {
            starts.push(rt.block_on(start_2_online())?);
        }
        eprintln!(
            "start: {} clusters of 2 started (median {:.3} ms) in {:.2} s",
            starts.len(),
            median(starts.clone()),
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..reps {
        ours.push(median(rt.block_on(restart_to_online(samples))?));
        raw.push(median(
            (0..samples)
                .map(|_| bare_spawns(1))
                .collect::<anyhow::Result<_>>()?,
        ));
    }
    report(
        "cluster.restart_to_online",
        "worker SIGKILL to replacement online (small Rust worker)",
        &ours,
        &raw,
        "<= 5 ms median",
    );

    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..reps {
        let mut s = Vec::new();
        for _ in 0..samples.min(5) {
            s.push(rt.block_on(start_2_online())?);
        }
        ours.push(median(s));
        raw.push(median(
            (0..samples.min(5))
                .map(|_| bare_spawns(2))
                .collect::<anyhow::Result<_>>()?,
        ));
    }
    // Where the gap goes (stderr only): the same two bare spawns forced
    // onto the fork path (an empty `pre_exec` hook, as a worker's spawn has).
    let forked: Vec<f64> = (0..reps)
        .map(|_| {
            let s = (0..samples.min(5))
                .map(|_| bare_spawns_with(2, true))
                .collect::<anyhow::Result<_>>()?;
            anyhow::Ok(median(s))
        })
        .collect::<anyhow::Result<_>>()?;
    eprintln!(
        "cluster.start_2_online: bare spawns on the fork path {:.3} ms (posix_spawn {:.3} ms, ours {:.3} ms)",
        median(forked),
        median(raw.clone()),
        median(ours.clone())
    );
    report(
        "cluster.start_2_online",
        "new cluster of 2 workers until all online",
        &ours,
        &raw,
        "<= 2x raw",
    );

    let idle = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut ours = Vec::new();
    for _ in 0..if quick { 1 } else { 2 } {
        ours.push(rt.block_on(idle_cpu(idle, false))?);
    }
    let (o, os) = (median(ours.clone()), spread(&ours));
    eprintln!(
        "cluster.idle_cpu_ms: {o:.3} ms of CPU over {:?} idle, heartbeats off ({ours:?})",
        idle
    );
    if !quick {
        let beating = rt.block_on(idle_cpu(idle, true))?;
        eprintln!(
            "cluster.idle_cpu_ms: {beating:.3} ms of CPU over {idle:?} idle with the default heartbeat (1 s)"
        );
    }
    println!(
        "{{\"id\":\"cluster.idle_cpu_ms\",\"what\":\"CPU time of an idle cluster (primary + 2 workers, heartbeats off) over 10 s\",\"unit\":\"ms\",\"better\":\"lower\",\"ours\":{:.3},\"ours_spread\":{:.3},\"raw\":null,\"raw_spread\":null,\"target\":\"<= 1 ms\"}}",
        o, os,
    );
    Ok(())
}

/// CPU time (ms, every thread) that the primary and 2 echo workers spend
/// over `idle` after a burst of messages, with or without the default
/// heartbeat.
async fn idle_cpu(idle: Duration, heartbeat: bool) -> anyhow::Result<f64> {
    let mut s = settings();
    s.n_workers(2);
    if !heartbeat {
        s.no_heartbeat();
    }
    let mut cluster = Cluster::<Msg>::new(s)?;
    cluster.start()?;
    next_online(&mut cluster).await?;
    next_online(&mut cluster).await?;
    // A burst in both directions: every receive ends it armed to spin.
    let handles: Vec<_> = cluster.workers().into_values().collect();
    for _ in 0..1_000 {
        for w in &handles {
            w.send(&Msg::Text("ping".into())).await?;
        }
        let mut answers = 0;
        while answers < handles.len() {
            let ev = tokio::time::timeout(Duration::from_secs(20), cluster.next_event())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the cluster stopped"))?;
            if let Event::Message(_) = ev {
                answers += 1;
            }
        }
    }
    let pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(handles.iter().map(|w| w.pid()))
        .collect();
    let before = cpu_ns(&pids)?;
    // Idle, the primary's event loop still running (heartbeats).
    let deadline = tokio::time::Instant::now() + idle;
    while let Ok(ev) = tokio::time::timeout_at(deadline, cluster.next_event()).await {
        if ev.is_none() {
            anyhow::bail!("the cluster stopped");
        }
    }
    let after = cpu_ns(&pids)?;
    cluster.shutdown().await?;
    Ok((after - before) as f64 / 1e6)
}

/// CPU nanoseconds run so far by every thread of each process.
fn cpu_ns(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
            total += stat
                .split_whitespace()
                .next()
                .ok_or_else(|| anyhow::anyhow!("empty schedstat"))?
                .parse::<u64>()?;
        }
    }
    Ok(total)
}

fn settings() -> Settings {
    let mut s = Settings::new();
    s.program(HELPER)
        .env("HELPER_MODE", "echo")
        .restart(RestartPolicy::Always)
        // Every restart immediate: uptime always counts as healthy.
        .backoff(Backoff {
            min_uptime: Duration::ZERO,
            ..Backoff::default()
        })
        .crash_loop_limit(CrashLoopLimit {
            max_restarts: u32::MAX,
            window: Duration::from_secs(1),
        })
        .shutdown_deadline(Duration::from_secs(2));
    s
}

async fn next_online(cluster: &mut Cluster<Msg>) -> anyhow::Result<cluster_core::WorkerId> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), cluster.next_event())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the cluster stopped"))?;
        if let Event::Online { worker, .. } = ev {
            return Ok(worker);
        }
    }
}

/// Milliseconds from SIGKILL to the replacement's `Online`, `n` times.
async fn restart_to_online(n: usize) -> anyhow::Result<Vec<f64>> {
    let mut cluster = Cluster::<Msg>::new(settings())?;
    cluster.fork()?;
    let mut id = next_online(&mut cluster).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let w = cluster
            .worker(id)
            .ok_or_else(|| anyhow::anyhow!("worker {id} vanished"))?;
        let t0 = Instant::now();
        w.kill(Signal::SIGKILL)?;
        id = next_online(&mut cluster).await?;
        out.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    cluster.shutdown().await?;
    Ok(out)
}

/// Milliseconds from `Cluster::new` to two workers online.
async fn start_2_online() -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut s = settings();
    s.n_workers(2);
    let mut cluster = Cluster::<Msg>::new(s)?;
    cluster.start()?;
    next_online(&mut cluster).await?;
    next_online(&mut cluster).await?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    cluster.shutdown().await?;
    Ok(ms)
}

/// Milliseconds for `n` bare spawns of the helper, each until its byte.
fn bare_spawns(n: usize) -> anyhow::Result<f64> {
    bare_spawns_with(n, false)
}

/// [`bare_spawns`]; `fork`: with an empty `pre_exec` hook, which makes std
/// fork and exec instead of taking its `posix_spawn` path.
fn bare_spawns_with(n: usize, fork: bool) -> anyhow::Result<f64> {
    use std::os::unix::process::CommandExt;
    let t0 = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let mut command = Command::new(HELPER);
        command.arg("raw").stdout(Stdio::piped());
        if fork {
            // SAFETY: the hook does nothing, so it is async-signal-safe.
            unsafe {
                command.pre_exec(|| Ok(()));
            }
        }
        children.push(command.spawn()?);
    }
    for c in &mut children {
        let mut byte = [0u8; 1];
        c.stdout
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?
            .read_exact(&mut byte)?;
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    for mut c in children {
        c.wait()?;
    }
    Ok(ms)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / 2.0
}

fn report(id: &str, what: &str, ours: &[f64], raw: &[f64], target: &str) {
    let (o, r) = (median(ours.to_vec()), median(raw.to_vec()));
    eprintln!("{id}: ours {o:.3} ms, raw {r:.3} ms, ratio {:.2}", o / r);
    println!(
        "{{\"id\":\"{id}\",\"what\":\"{what}\",\"unit\":\"ms\",\"better\":\"lower\",\"ours\":{o:.3},\"ours_spread\":{:.3},\"raw\":{r:.3},\"raw_spread\":{:.3},\"target\":\"{target}\"}}",
        spread(ours),
        spread(raw)
    );
}
