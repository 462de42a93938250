//! What processes cost a user: the same hyper app served by our cluster of
//! 2 worker processes (`rr` and `none`) and by one process on a
//! multi-thread tokio runtime with 2 threads (the "raw" column here: what a
//! user would run without a cluster), under the same keep-alive load; and
//! the resident memory of an idle worker.
//!
//! The app answers every `GET` with a 12-byte body (`hello world\n`), the
//! workers through `cluster_core::hyper::serve` on a current-thread runtime
//! each (as `hello-cluster` does), the single process through hyper's
//! `http1` connection builder, one task per connection.
//!
//! The load (this process, bounded in requests and time): 16 keep-alive
//! connections on 127.0.0.1, tasks on one thread's event loop (as the
//! Node.js script's client is: 16 client threads would preempt the servers
//! they measure), each sending `GET / HTTP/1.1` and reading the answer, one
//! request at a time, 3,000 requests each (25 with `--quick`), within 20 s.
//! Requests per second is the total over the wall time; p50 and p99 are
//! over every request's latency.
//!
//! On stderr, per run: how long the servers' threads waited for a CPU per
//! request and how often they were preempted (`schedstat`, `status`), and
//! the slowest connection's mean latency over the fastest's: where a tail
//! comes from.
//!
//! Rows (one JSON line each on stdout), ours against the single process,
//! servers alternated over 6 repetitions, each starting with the next one:
//! - `user.keepalive_rr_per_s`, `user.keepalive_none_per_s`: requests per
//!   second. Good: >= 0.95 x the single process.
//! - `user.keepalive_rr_p50_us`, `user.keepalive_rr_p99_us` and the same for
//!   `none`: latency. Good: p99 <= 1.2 x the single process (p50 too).
//! - `user.idle_worker_rss_mib`: resident memory (`VmRSS`) of an idle
//!   worker after the load, the mean of the 2 `rr` workers. No raw
//!   baseline. Good: <= 8 MiB (a fifth of a Node.js cluster worker's, which
//!   `bench/node/user.js` measures: about 40-45 MiB).
//!
//! The ids are those `bench/node/user.js` prints (a Node.js `cluster` of 2
//! `http` workers under the same load from a bare `net` client).
//!
//! `--quick` runs a tiny workload, as does a debug build run without
//! `--bench` (`cargo test --all-targets`); `--list` lists one test,
//! `quick_smoke`, which nextest runs as that smoke test; other arguments
//! are ignored.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cluster_core::{Cluster, PolicyKind, Settings, Worker};
use hyper::{Request, Response, body::Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/mod.rs"]
mod support;
use support::row;

/// Workers of the cluster, and threads of the single process.
const WORKERS: usize = 2;
/// Keep-alive connections of the load.
const CONNECTIONS: usize = 16;

async fn hello(_req: Request<Incoming>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("hello world\n".to_owned()))
}

fn main() -> anyhow::Result<()> {
    if cluster_core::is_worker() {
        return worker_main();
    }
    let args: Vec<String> = std::env::args().collect();
    let Some(quick) = support::quick(&args) else {
        return Ok(());
    };
    let (reps, per_conn) = if quick { (2, 25) } else { (6, 3_000) };
    let budget = Duration::from_secs(20);

    // The primaries' runtime (the cluster's event loops).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let rr = start(&rt, PolicyKind::RoundRobin)?;
    let none = start(&rt, PolicyKind::None)?;
    // The single process: its own 2-thread runtime, as a user would run.
    let single_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name(SINGLE_THREAD)
        .enable_all()
        .build()?;
    let single_port = single_rt.block_on(start_single())?;

    let servers = [rr.1, none.1, single_port];
    for port in servers {
        load(port, 20, budget)?;
    }
    // Where the tail goes (stderr): the time each server's threads spent
    // runnable but waiting for a CPU during the run (`schedstat`), per
    // request; the workers' threads, or the single process's runtime
    // threads.
    let worker_tasks = |cluster: &Cluster<()>| {
        rt.block_on(async {
            cluster
                .workers()
                .values()
                .map(|w| format!("/proc/{}/task/{}", w.pid(), w.pid()))
                .collect::<Vec<_>>()
        })
    };
    let tasks = [
        worker_tasks(&rr.0),
        worker_tasks(&none.0),
        single_rt_tasks()?,
    ];
    let mut runs: [Vec<Run>; 3] = Default::default();
    for rep in 0..reps {
        // Each repetition starts with the next server, so that none always
        // runs first or right after the same one (back-to-back runs of one
        // binary differ by up to 10 % with their order alone).
        for k in 0..servers.len() {
            let i = (k + rep) % servers.len();
            let port = &servers[i];
            let before = run_queue_wait_ns(&tasks[i]);
            let preempted_before = preemptions(&tasks[i]);
            let run = load(*port, per_conn, budget)?;
            let waited = run_queue_wait_ns(&tasks[i]).saturating_sub(before);
            let preempted = preemptions(&tasks[i]).saturating_sub(preempted_before);
            eprintln!(
                "rep {rep} {}: {:.0}/s p50 {:.1} us p99 {:.1} us, server threads waited for a CPU {:.1} us per request and were preempted {} times, slowest/fastest connection {:.2}",
                ["ours rr", "ours none", "single process"][i],
                run.per_s,
                run.p50_us,
                run.p99_us,
                waited as f64 / 1e3 / run.requests as f64,
                preempted,
                run.skew,
            );
            runs[i].push(run);
        }
    }
    let rss = rt.block_on(async {
        let mut total = 0.0;
        let workers = rr.0.workers();
        for w in workers.values() {
            total += rss_mib(w.pid())?;
        }
        anyhow::Ok(total / workers.len().max(1) as f64)
    })?;

    let single = &runs[2];
    for (name, ours) in [("rr", &runs[0]), ("none", &runs[1])] {
        row(
            &format!("user.keepalive_{name}_per_s"),
            &format!(
                "keep-alive HTTP requests per second, 16 connections, cluster `{name}` of 2 against one 2-thread process"
            ),
            "per_s",
            "higher",
            &pick(ours, |r| r.per_s),
            Some(&pick(single, |r| r.per_s)),
            ">= 0.95x raw",
        );
        row(
            &format!("user.keepalive_{name}_p50_us"),
            &format!("keep-alive HTTP latency p50, cluster `{name}` against one process"),
            "us",
            "lower",
            &pick(ours, |r| r.p50_us),
            Some(&pick(single, |r| r.p50_us)),
            "<= 1.2x raw",
        );
        row(
            &format!("user.keepalive_{name}_p99_us"),
            &format!("keep-alive HTTP latency p99, cluster `{name}` against one process"),
            "us",
            "lower",
            &pick(ours, |r| r.p99_us),
            Some(&pick(single, |r| r.p99_us)),
            "<= 1.2x raw",
        );
    }
    row(
        "user.idle_worker_rss_mib",
        "resident memory of an idle worker (MiB)",
        "mib",
        "lower",
        &[rss],
        None,
        "<= 8 (a fifth of a Node.js cluster worker's)",
    );
    rt.block_on(async {
        for cluster in [rr.0, none.0] {
            let _ = tokio::time::timeout(Duration::from_secs(10), cluster.shutdown()).await;
        }
    });
    Ok(())
}

/// The single process's runtime threads' name.
const SINGLE_THREAD: &str = "single-process";

/// This process's threads named [`SINGLE_THREAD`].
fn single_rt_tasks() -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        if std::fs::read_to_string(path.join("comm"))?.trim() == SINGLE_THREAD {
            out.push(path.display().to_string());
        }
    }
    Ok(out)
}

/// Nanoseconds the tasks (`/proc/<pid>/task/<tid>` paths) spent runnable
/// but waiting for a CPU, so far (the second field of `schedstat`).
fn run_queue_wait_ns(tasks: &[String]) -> u64 {
    tasks
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("{t}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// How many times the tasks were switched out while runnable so far
/// (`nonvoluntary_ctxt_switches`).
fn preemptions(tasks: &[String]) -> u64 {
    tasks
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("{t}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// One load run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    requests: usize,
    /// The slowest connection's mean latency over the fastest's.
    skew: f64,
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn pick(runs: &[Run], f: impl Fn(&Run) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

/// Starts a cluster of [`WORKERS`] serving the app; returns it and its port.
fn start(rt: &tokio::runtime::Runtime, policy: PolicyKind) -> anyhow::Result<(Cluster<()>, u16)> {
    rt.block_on(async {
        let mut settings = Settings::new();
        settings
            .n_workers(WORKERS)
            .scheduling_policy(policy)
            .shutdown_deadline(Duration::from_secs(5));
        let mut cluster = Cluster::<()>::new(settings)?;
        cluster.start()?;
        let port = support::until_listening(&mut cluster, WORKERS)
            .await
            .map_err(|e| e.context(format!("the {policy} cluster")))?;
        Ok((cluster, port))
    })
}

/// A cluster worker: the app through `cluster_core::hyper::serve`.
fn worker_main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let me = Worker::<()>::connect().await?;
        let listener = me
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
        cluster_core::hyper::serve(listener, hyper::service::service_fn(hello)).await;
        Ok(())
    })
}

/// The single process: the same app, one task per connection.
async fn start_single() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(hello),
                    )
                    .await;
            });
        }
    });
    Ok(port)
}

/// [`CONNECTIONS`] keep-alive clients, `per_conn` requests each, within
/// `budget`: tasks on one thread's event loop (as `bench/node/user.js`'s
/// client is), so that the load takes one CPU's share, not 16 threads
/// preempting the servers.
fn load(port: u16, per_conn: usize, budget: Duration) -> anyhow::Result<Run> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + budget;
    let t0 = Instant::now();
    let per_connection = rt.block_on(async {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(client(port, per_conn, deadline)))
            .collect();
        let mut out = Vec::with_capacity(CONNECTIONS);
        for t in tasks {
            out.push(t.await??);
        }
        anyhow::Ok(out)
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(CONNECTIONS * per_conn);
    let mut means = Vec::with_capacity(CONNECTIONS);
    for one in per_connection {
        means.push(one.iter().sum::<f64>() / one.len().max(1) as f64);
        latencies.extend(one);
    }
    means.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        anyhow::bail!("no request answered");
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Run {
        requests: latencies.len(),
        skew: means[means.len() - 1] / means[0].max(f64::MIN_POSITIVE),
        per_s: latencies.len() as f64 / wall,
        p50_us: at(0.5),
        p99_us: at(0.99),
    })
}

/// One keep-alive connection: each request's latency in µs.
async fn client(port: u16, n: usize, deadline: Instant) -> anyhow::Result<Vec<f64>> {
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    stream.set_nodelay(true)?;
    let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if Instant::now() > deadline {
            break;
        }
        let t = Instant::now();
        stream.write_all(request).await?;
        let mut len = 0;
        loop {
            let r = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf[len..]))
                .await??;
            if r == 0 {
                anyhow::bail!("server closed the connection");
            }
            len += r;
            if let Some(end) = complete(&buf[..len]) {
                if end != len {
                    anyhow::bail!("more than one answer");
                }
                break;
            }
            if len == buf.len() {
                anyhow::bail!("answer too long");
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// The length of a complete response at the start of `buf`, if there is one.
fn complete(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head]).ok()?;
    let body: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head + body).then_some(head + body)
}

/// A process's resident memory in MiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?
        .parse()?;
    Ok(kib / 1024.0)
}
