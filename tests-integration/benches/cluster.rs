//! Cluster figures, each ours against a baseline measured in the same run,
//! interleaved A B A B: the raw OS limit, or for the rows of growth the
//! same figure with 2 workers (or no connections).
//!
//! - `cluster.restart_to_online`: a worker (the small `cluster-helper` binary)
//!   is SIGKILLed; time until its replacement is online (reaped, restart
//!   decided, re-executed, channel up, `Online` received). Raw: a bare spawn
//!   of the same binary until it writes one byte on a pipe. Good: <= 5 ms
//!   median (Node.js: 55 ms, nearly all of it Node's boot).
//! - `cluster.start_2_online`: a new cluster of 2 workers until both are
//!   online. Raw: two bare spawns of the same binary, each until its byte.
//!   Good: <= 2x raw. The gap is what a worker is: it starts a runtime and
//!   exchanges the handshake before `Online` (its spawn is a `posix_spawn`
//!   like the bare one's, from spawn-core's spawner thread).
//!
//! Growth, each against the same figure at 2 workers (`raw` is that figure
//! here, measured in the same run):
//! - `cluster.start_16_online`, `cluster.start_64_online`: start to all
//!   online. Grows linearly (every worker is a process to start on the
//!   same 2 CPUs). Good: no worse than linear, <= 8x and <= 32x.
//! - `cluster.restart_to_online_64w`: a worker SIGKILLed to its replacement
//!   online, among 64. Should not grow: a restart touches one slot. Good:
//!   <= 1.5x.
//! - `cluster.broadcast_64w`: `broadcast` of one message until every echo
//!   worker's answer is in. Grows linearly (a send and an answer per
//!   worker). Good: <= 32x.
//! - `cluster.stats_64w`: one `Cluster::stats()` snapshot. Grows linearly
//!   (one `/proc` read per worker, about 13 µs, and next to nothing else:
//!   the 2-worker figure has no fixed part to share, so 32x is the line
//!   itself). Good: <= 40x.
//! - `cluster.primary_rss_64w_mib`: the resident memory of a primary
//!   (`cluster-helper primary <n>`, a process of its own) with 64 idle echo
//!   workers. Grows linearly, by what the primary keeps per worker (its
//!   channel's buffers, tasks and tables). Good: <= 1.5x.
//! - `cluster.conn10k_primary_rss_mib`, `cluster.conn10k_primary_cpu_ms`:
//!   a primary (`cluster-helper supervise 2`, `serve` workers) with 10,000
//!   idle keep-alive connections on 127.0.0.1 handed to its 2 workers,
//!   against the same primary before them: its resident memory, and its
//!   CPU time per 10 s (the default heartbeat on, in both). The memory
//!   grows linearly but little: once a worker has acknowledged a
//!   connection the primary keeps only its entry in the table of open
//!   connections (listener, slot and worker, about 64 bytes with the hash
//!   table's share: the open counts of least-connections and the drain),
//!   not its descriptor. The CPU should not grow: an idle connection costs
//!   the primary nothing. Good: <= 1.25x and <= 1.2x.
//!
//! - `cluster.idle_cpu_ms`: what an idle cluster costs: a cluster of 2 echo
//!   workers exchanges 2,000 messages (so every receive is armed to spin),
//!   settles for 1 s, then sits idle; the CPU time (user + system, every
//!   thread, from `/proc/<pid>/task/*/schedstat`) the primary and both
//!   workers spend in 4 s windows, scaled to 10 s, the median of 5 windows
//!   (0.2 s windows with `--quick`). The primary is this process: the
//!   thread that measures (the bench's loop, awaiting events that never
//!   come) is left out. Heartbeats off. No raw baseline. Good: <= 1 ms per
//!   10 s.
//! - `cluster.idle_cpu_heartbeat_ms`: the same with the default heartbeat
//!   (every second, from each worker): its cost. Good: <= 10 ms per 10 s
//!   (0.1 % of a CPU).
//!
//! Each repetition takes the median of its samples; the reported figure is the
//! median of the repetitions and the spread is (max - min) / 2 of them.
//! `--quick` runs a tiny workload (seconds, even in a debug build: 4 and 8
//! workers stand for 16 and 64, 200 connections for 10,000), as does a
//! debug build run without `--bench` (`cargo test --all-targets`); `--list`
//! (cargo-nextest asking for tests) lists one test, `quick_smoke`, which
//! nextest then runs as that smoke test; other arguments are ignored.

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_core::{Backoff, Cluster, CrashLoopLimit, Event, RestartPolicy, Settings, Signal};
use serde::{Deserialize, Serialize};

const HELPER: &str = env!("CARGO_BIN_EXE_cluster-helper");

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Text(String),
}

/// The sizes of one run: full, or `--quick`.
struct Sizes {
    reps: usize,
    samples: usize,
    growth_reps: usize,
    mid: usize,
    large: usize,
    connections: usize,
    idle_window: Duration,
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
    let sizes = if quick {
        Sizes {
            reps: 3,
            samples: 3,
            growth_reps: 2,
            mid: 4,
            large: 8,
            connections: 200,
            idle_window: Duration::from_millis(200),
        }
    } else {
        Sizes {
            reps: 9,
            samples: 15,
            growth_reps: 5,
            mid: 16,
            large: 64,
            connections: 10_000,
            idle_window: Duration::from_secs(4),
        }
    };
    // 10,000 connections and 64 channels: raise the descriptor limit
    // (bounded by the hard limit); the primaries started below inherit it.
    raise_fd_limit(4 * sizes.connections as u64)?;
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
            starts.push(rt.block_on(start_online(2))?);
        }
        eprintln!(
            "start: {} clusters of 2 started (median {:.3} ms) in {:.2} s",
            starts.len(),
            median(starts.clone()),
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let (reps, samples) = (sizes.reps, sizes.samples);

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
        "ms",
        &ours,
        &raw,
        "<= 5 ms median",
    );

    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..reps {
        let mut s = Vec::new();
        for _ in 0..samples.min(5) {
            s.push(rt.block_on(start_online(2))?);
        }
        ours.push(median(s));
        raw.push(median(
            (0..samples.min(5))
                .map(|_| bare_spawns(2))
                .collect::<anyhow::Result<_>>()?,
        ));
    }
    // Where the gap goes (stderr only): the same two bare spawns forced
    // onto the fork path (an empty `pre_exec` hook), which worker starts
    // took before issue 25.
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
        "ms",
        &ours,
        &raw,
        "<= 2x raw",
    );

    growth(&rt, &sizes)?;
    connections(&sizes)?;

    let idle_off = rt.block_on(idle_cpu(&sizes, false))?;
    eprintln!("cluster.idle_cpu_ms: heartbeats off, windows {idle_off:.3?} ms per 10 s");
    let idle_on = rt.block_on(idle_cpu(&sizes, true))?;
    eprintln!(
        "cluster.idle_cpu_heartbeat_ms: default heartbeat, windows {idle_on:.3?} ms per 10 s"
    );
    report_alone(
        "cluster.idle_cpu_ms",
        "CPU time of an idle cluster (primary + 2 workers, heartbeats off) per 10 s, median of 5 windows after settling",
        &idle_off,
        "<= 1 ms",
    );
    report_alone(
        "cluster.idle_cpu_heartbeat_ms",
        "CPU time of an idle cluster (primary + 2 workers, default 1 s heartbeat) per 10 s, median of 5 windows after settling",
        &idle_on,
        "<= 10 ms (0.1% of a CPU)",
    );
    Ok(())
}

/// The rows of growth with the number of workers, each against the same
/// figure at 2 workers, interleaved.
fn growth(rt: &tokio::runtime::Runtime, sizes: &Sizes) -> anyhow::Result<()> {
    let (mid, large) = (sizes.mid, sizes.large);
    let [mut start2, mut start_mid, mut start_large] = [(); 3].map(|()| Vec::new());
    let [mut restart2, mut restart_large] = [(); 2].map(|()| Vec::new());
    let [mut broadcast2, mut broadcast_large] = [(); 2].map(|()| Vec::new());
    let [mut stats2, mut stats_large] = [(); 2].map(|()| Vec::new());
    let [mut rss2, mut rss_large] = [(); 2].map(|()| Vec::new());
    for _ in 0..sizes.growth_reps {
        start2.push(rt.block_on(start_online(2))?);
        start_mid.push(rt.block_on(start_online(mid))?);
        start_large.push(rt.block_on(start_online(large))?);
        let (restart, broadcast, stats) = rt.block_on(among(2, sizes.samples))?;
        restart2.push(restart);
        broadcast2.push(broadcast);
        stats2.push(stats);
        let (restart, broadcast, stats) = rt.block_on(among(large, sizes.samples))?;
        restart_large.push(restart);
        broadcast_large.push(broadcast);
        stats_large.push(stats);
        rss2.push(primary_rss_mib(2)?);
        rss_large.push(primary_rss_mib(large)?);
    }
    report(
        "cluster.start_16_online",
        "new cluster of 16 workers until all online (raw: the same with 2)",
        "ms",
        &start_mid,
        &start2,
        "<= 8x raw (linear in workers)",
    );
    report(
        "cluster.start_64_online",
        "new cluster of 64 workers until all online (raw: the same with 2)",
        "ms",
        &start_large,
        &start2,
        "<= 32x raw (linear in workers)",
    );
    report(
        "cluster.restart_to_online_64w",
        "worker SIGKILL to replacement online among 64 workers (raw: among 2)",
        "ms",
        &restart_large,
        &restart2,
        "<= 1.5x raw (one slot's work)",
    );
    report(
        "cluster.broadcast_64w",
        "broadcast until every echo is back, 64 workers (raw: 2 workers)",
        "ms",
        &broadcast_large,
        &broadcast2,
        "<= 32x raw (linear in workers)",
    );
    report(
        "cluster.stats_64w",
        "Cluster::stats() snapshot, 64 workers (raw: 2 workers)",
        "us",
        &stats_large,
        &stats2,
        "<= 40x raw (linear: one /proc read per worker)",
    );
    let per_worker_kib =
        (median(rss_large.clone()) - median(rss2.clone())) * 1024.0 / (large - 2) as f64;
    eprintln!("cluster.primary_rss_64w_mib: {per_worker_kib:.0} KiB more per idle worker");
    report(
        "cluster.primary_rss_64w_mib",
        "resident memory of a primary with 64 idle workers (raw: with 2)",
        "mib",
        &rss_large,
        &rss2,
        "<= 1.5x raw",
    );
    Ok(())
}

/// Among `n` echo workers: the median of `samples` restarts (SIGKILL to
/// the replacement online, ms), broadcasts (until every answer is in, ms)
/// and stats snapshots (µs).
async fn among(n: usize, samples: usize) -> anyhow::Result<(f64, f64, f64)> {
    let mut s = settings();
    s.n_workers(n);
    let mut cluster = Cluster::<Msg>::new(s)?;
    cluster.start()?;
    for _ in 0..n {
        next_online(&mut cluster).await?;
    }
    let mut restarts = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (_, w) = cluster
            .workers()
            .into_iter()
            .next_back()
            .ok_or_else(|| anyhow::anyhow!("no worker"))?;
        let t0 = Instant::now();
        w.kill(Signal::SIGKILL)?;
        next_online(&mut cluster).await?;
        restarts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut broadcasts = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        let sent = cluster.broadcast(&Msg::Text("ping".into())).await;
        anyhow::ensure!(sent == n, "broadcast reached {sent} of {n} workers");
        let mut answers = 0;
        while answers < n {
            if let Event::Message(_) = next_event(&mut cluster).await? {
                answers += 1;
            }
        }
        broadcasts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut snapshots = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        let stats = std::hint::black_box(cluster.stats().await);
        snapshots.push(t0.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(stats.workers.len() == n, "stats of {n} workers");
    }
    cluster.shutdown().await?;
    Ok((median(restarts), median(broadcasts), median(snapshots)))
}

/// The resident memory (MiB) of a primary of its own (`cluster-helper
/// primary <n>`) once its `n` echo workers are online and it settled.
fn primary_rss_mib(n: usize) -> anyhow::Result<f64> {
    let mut primary = Command::new(HELPER)
        .args(["primary", &n.to_string()])
        .env("HELPER_WORKER_MODE", "echo")
        .stdout(Stdio::piped())
        .spawn()?;
    let result = (|| {
        let stdout = primary
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut online = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            if line?.starts_with("online ") {
                online += 1;
                if online == n {
                    break;
                }
            }
        }
        anyhow::ensure!(online == n, "the primary ended with {online} of {n} online");
        std::thread::sleep(Duration::from_millis(500));
        rss_mib(primary.id())
    })();
    // Its workers die with it (their parent-death signal).
    primary.kill()?;
    primary.wait()?;
    result
}

/// The rows of a primary holding idle connections: a primary of its own
/// (`cluster-helper supervise 2`, `serve` workers), measured before and
/// after `sizes.connections` connections are handed to its workers.
fn connections(sizes: &Sizes) -> anyhow::Result<()> {
    let mut rss = (Vec::new(), Vec::new());
    let mut cpu = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (rss0, cpu0, rss1, cpu1) = idle_connections(sizes)?;
        rss.0.push(rss1);
        rss.1.push(rss0);
        cpu.0.push(cpu1);
        cpu.1.push(cpu0);
    }
    eprintln!(
        "cluster.conn10k: primary {:.2} MiB and {:.3} ms per 10 s with {} connections, {:.2} MiB and {:.3} ms without",
        median(rss.0.clone()),
        median(cpu.0.clone()),
        sizes.connections,
        median(rss.1.clone()),
        median(cpu.1.clone())
    );
    report(
        "cluster.conn10k_primary_rss_mib",
        "resident memory of the primary with 10,000 idle keep-alive connections on 2 workers (raw: none)",
        "mib",
        &rss.0,
        &rss.1,
        "<= 1.25x raw (64 bytes per open connection)",
    );
    report(
        "cluster.conn10k_primary_cpu_ms",
        "CPU time of that primary per 10 s, 10,000 idle connections (raw: none; default heartbeat)",
        "ms",
        &cpu.0,
        &cpu.1,
        "<= 1.2x raw",
    );
    Ok(())
}

/// One primary: (RSS MiB, CPU ms per 10 s) without connections, then with
/// `sizes.connections` idle ones.
fn idle_connections(sizes: &Sizes) -> anyhow::Result<(f64, f64, f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut primary = Command::new(HELPER)
        .args(["supervise", "2"])
        .env("HELPER_WORKER_MODE", "serve")
        .env("HELPER_ADDR", addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let result = (|| {
        let stderr = primary
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let mut listening = 0;
        let mut lines = std::io::BufReader::new(stderr).lines();
        while listening < 2 {
            let line = lines
                .next()
                .ok_or_else(|| anyhow::anyhow!("the primary ended before listening"))??;
            if line.starts_with("listening ") {
                listening += 1;
            }
        }
        // Keep reading its events, so its stderr never fills.
        std::thread::spawn(move || lines.for_each(drop));
        let pid = primary.id();
        std::thread::sleep(Duration::from_millis(500));
        let rss0 = rss_mib(pid)?;
        let cpu0 = cpu_per_10s(&[pid], sizes.idle_window)?;
        let mut open = Vec::with_capacity(sizes.connections);
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..sizes.connections {
            anyhow::ensure!(Instant::now() < deadline, "60 s and not all connected");
            let mut conn = std::net::TcpStream::connect(addr)?;
            conn.set_read_timeout(Some(Duration::from_secs(20)))?;
            // The worker answers with its id: the connection was handed
            // over and accepted.
            let mut byte = [0u8; 1];
            loop {
                conn.read_exact(&mut byte)?;
                if byte[0] == b'\n' {
                    break;
                }
            }
            // Closed with a reset later: no TIME_WAIT left behind.
            nix::sys::socket::setsockopt(
                &conn,
                nix::sys::socket::sockopt::Linger,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )?;
            open.push(conn);
        }
        std::thread::sleep(Duration::from_secs(1));
        let rss1 = rss_mib(pid)?;
        let cpu1 = cpu_per_10s(&[pid], sizes.idle_window)?;
        drop(open);
        Ok((rss0, cpu0, rss1, cpu1))
    })();
    primary.kill()?;
    primary.wait()?;
    result
}

/// Raises this process's soft limit of open descriptors to `want` (at most
/// the hard limit).
fn raise_fd_limit(want: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if limit.rlim_cur < want {
        limit.rlim_cur = want.min(limit.rlim_max);
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

/// The resident memory of `pid`, MiB (`VmRSS`).
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

/// CPU milliseconds that every thread of `pids` runs over `window`,
/// scaled to 10 s.
fn cpu_per_10s(pids: &[u32], window: Duration) -> anyhow::Result<f64> {
    let before = cpu_ns(pids)?;
    std::thread::sleep(window);
    let after = cpu_ns(pids)?;
    Ok(before.until(&after) as f64 / 1e6 * (10.0 / window.as_secs_f64()))
}

/// CPU per 10 s of an idle cluster (the primary and 2 echo workers), with
/// or without the default heartbeat, in 5 windows after it settled.
async fn idle_cpu(sizes: &Sizes, heartbeat: bool) -> anyhow::Result<Vec<f64>> {
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
            if let Event::Message(_) = next_event(&mut cluster).await? {
                answers += 1;
            }
        }
    }
    let pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(handles.iter().map(|w| w.pid()))
        .collect();
    // Settle: whatever the start and the burst left running ends first.
    idle(&mut cluster, Duration::from_secs(1)).await?;
    let mut windows = Vec::with_capacity(5);
    for _ in 0..5 {
        let before = cpu_ns(&pids)?;
        idle(&mut cluster, sizes.idle_window).await?;
        let after = cpu_ns(&pids)?;
        windows.push(before.until(&after) as f64 / 1e6 * (10.0 / sizes.idle_window.as_secs_f64()));
    }
    cluster.shutdown().await?;
    Ok(windows)
}

/// Lets the cluster idle for `time`, its event loop still running.
async fn idle(cluster: &mut Cluster<Msg>, time: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + time;
    while let Ok(ev) = tokio::time::timeout_at(deadline, cluster.next_event()).await {
        if ev.is_none() {
            anyhow::bail!("the cluster stopped");
        }
    }
    Ok(())
}

/// CPU nanoseconds run so far by every thread of each process; the
/// calling thread, the one that measures, is left out of the figure
/// ([`CpuSnapshot::until`]).
fn cpu_ns(pids: &[u32]) -> anyhow::Result<CpuSnapshot> {
    let me = nix::unistd::gettid().as_raw().unsigned_abs();
    let mut tasks = std::collections::HashMap::new();
    for pid in pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?;
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let ns = stat
                .split_whitespace()
                .next()
                .ok_or_else(|| anyhow::anyhow!("empty schedstat"))?
                .parse::<u64>()?;
            tasks.insert(tid, ns);
        }
    }
    Ok(CpuSnapshot { me, tasks })
}

/// CPU nanoseconds of every thread of some processes, by thread id, and
/// the thread that took the snapshot.
struct CpuSnapshot {
    me: u32,
    tasks: std::collections::HashMap<u32, u64>,
}

impl CpuSnapshot {
    /// CPU nanoseconds run between this snapshot and `after`, the threads
    /// that took either snapshot left out (an async caller may resume on
    /// another thread). A thread that ended in between counts nothing: what
    /// it ran since this snapshot is lost, where a plain total over the
    /// threads alive would go backwards when a blocking-pool thread retires.
    fn until(&self, after: &CpuSnapshot) -> u64 {
        let skip = |tid: &u32| *tid == self.me || *tid == after.me;
        let mut total = 0;
        for (tid, &ns) in after.tasks.iter().filter(|(tid, _)| !skip(tid)) {
            total += ns.saturating_sub(self.tasks.get(tid).copied().unwrap_or(0));
        }
        total
    }
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

/// The next event, within 20 s.
async fn next_event(cluster: &mut Cluster<Msg>) -> anyhow::Result<Event<Msg>> {
    tokio::time::timeout(Duration::from_secs(20), cluster.next_event())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the cluster stopped"))
}

async fn next_online(cluster: &mut Cluster<Msg>) -> anyhow::Result<cluster_core::WorkerId> {
    loop {
        if let Event::Online { worker, .. } = next_event(cluster).await? {
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

/// Milliseconds from `Cluster::new` to `n` workers online.
async fn start_online(n: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut s = settings();
    s.n_workers(n);
    let mut cluster = Cluster::<Msg>::new(s)?;
    cluster.start()?;
    for _ in 0..n {
        next_online(&mut cluster).await?;
    }
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

/// One row with a baseline; for `mib`, `ms` and `us` alike lower is better.
fn report(id: &str, what: &str, unit: &str, ours: &[f64], raw: &[f64], target: &str) {
    let (o, r) = (median(ours.to_vec()), median(raw.to_vec()));
    eprintln!(
        "{id}: ours {o:.3} {unit}, raw {r:.3} {unit}, ratio {:.2}",
        o / r
    );
    println!(
        "{{\"id\":\"{id}\",\"what\":\"{what}\",\"unit\":\"{unit}\",\"better\":\"lower\",\"ours\":{o:.3},\"ours_spread\":{:.3},\"raw\":{r:.3},\"raw_spread\":{:.3},\"target\":\"{target}\"}}",
        spread(ours),
        spread(raw)
    );
}

/// One row of milliseconds without a baseline.
fn report_alone(id: &str, what: &str, ours: &[f64], target: &str) {
    println!(
        "{{\"id\":\"{id}\",\"what\":\"{what}\",\"unit\":\"ms\",\"better\":\"lower\",\"ours\":{:.3},\"ours_spread\":{:.3},\"raw\":null,\"raw_spread\":null,\"target\":\"{target}\"}}",
        median(ours.to_vec()),
        spread(ours),
    );
}
