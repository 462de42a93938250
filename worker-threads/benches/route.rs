//! Why a pool task is awaited from async code: the latency of a cheap axum
//! route while other connections keep the pool busy, with the handlers
//! awaiting the pool's handle, and with handlers that block their runtime
//! thread while the pool's queue is full (what `Pool::run` did before it
//! returned a future, and what `Pool::blocking_run` or `TaskHandle::join`
//! would do if they did not refuse to run there).
//!
//! Workload (`--quick` in brackets), all on loopback: an axum server on a
//! 2-thread tokio runtime; a pool of 2 threads with `queue_cap(16)`; 128 [8]
//! keep-alive connections each asking `/fib` (fib(30) [fib(20)] on the pool)
//! again and again; one more connection asking `/cheap` (no pool) in a
//! loop, timed. 3 s [0.3 s] per run, after 0.5 s [0.1 s] of warm-up; runs
//! interleaved: idle (no `/fib` load), awaiting, blocking; 3 [1] of each.
//! - `threads.route_beside_pool`: `/cheap`'s median latency while the
//!   `/fib` handlers await `pool.run(..)`. Raw: `/cheap` on the idle server.
//! - `threads.route_beside_blocked_pool`: the same while the `/fib`
//!   handlers block their thread waiting for room in the queue (a
//!   `try_run` loop that parks the thread 100 µs between tries). Raw: the
//!   idle server. No target: this is the way not to do it, for comparison.
//!
//! Each figure is the median over runs of each run's median; spread is
//! (max − min) / 2. Without `--bench` (as under `cargo test --benches`) the
//! quick workload runs; `--list` lists one test, `quick_smoke`. One JSON line
//! per figure on stdout; human-readable text (with p99 and max) on stderr.
//! Every loop is bounded in time and in count.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use worker_threads::{Pool, TryRunError};

/// How the `/fib` handler reaches the pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Handler {
    /// No `/fib` load at all.
    Idle,
    /// `pool.run(..).await`.
    Awaiting,
    /// Blocks its runtime thread while the queue is full.
    Blocking,
}

#[derive(Clone, Copy)]
struct Workload {
    connections: usize,
    fib_n: u32,
    warm_up: Duration,
    measure: Duration,
}

fn fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

struct App {
    pool: Pool,
    handler: Handler,
    fib_n: u32,
}

async fn fib_route(State(app): State<Arc<App>>) -> String {
    let n = app.fib_n;
    let value = match app.handler {
        Handler::Idle | Handler::Awaiting => app.pool.run(move || fib(black_box(n))).await,
        Handler::Blocking => {
            let mut task = move || fib(black_box(n));
            // Waits for room by blocking the runtime's thread, bounded.
            let deadline = Instant::now() + Duration::from_secs(60);
            let handle = loop {
                match app.pool.try_run(task) {
                    Ok(handle) => break handle,
                    Err(TryRunError::Full(back)) if Instant::now() < deadline => {
                        task = back;
                        std::thread::park_timeout(Duration::from_micros(100));
                    }
                    Err(_) => return "refused".to_owned(),
                }
            };
            handle.await
        }
    };
    value.map_or_else(|e| e.to_string(), |v| v.to_string())
}

async fn cheap_route() -> &'static str {
    "ok"
}

/// One keep-alive HTTP/1.1 client connection.
struct Client {
    stream: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends `GET path` and reads the whole response.
    async fn get(&mut self, path: &str) -> std::io::Result<()> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut length = 0_usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(())
    }
}

/// `/cheap`'s latencies, in ms, over one run of `handler`.
fn one_run(handler: Handler, work: Workload) -> anyhow::Result<Vec<f64>> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pool = Pool::builder().threads(2).queue_cap(16).build()?;
    let app = Arc::new(App {
        pool,
        handler,
        fib_n: work.fib_n,
    });
    let listener = server.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/fib", get(fib_route))
        .route("/cheap", get(cheap_route))
        .with_state(Arc::clone(&app));
    server.spawn(async move { axum::serve(listener, router).await });

    // The clients run on a runtime of their own, on one thread.
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = clients.block_on(async {
        let mut load = Vec::new();
        if handler != Handler::Idle {
            for _ in 0..work.connections {
                let stop = Arc::clone(&stop);
                let mut client = Client::connect(addr).await?;
                load.push(tokio::spawn(async move {
                    let bound = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < bound {
                        client.get("/fib").await?;
                    }
                    Ok::<(), std::io::Error>(())
                }));
            }
        }
        let mut cheap = Client::connect(addr).await?;
        let started = Instant::now();
        let mut latencies = Vec::new();
        while started.elapsed() < work.warm_up + work.measure && latencies.len() < 1_000_000 {
            let sent = Instant::now();
            cheap.get("/cheap").await?;
            if started.elapsed() > work.warm_up {
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            // A client that asks now and then, not a flood.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await??;
        }
        Ok::<_, anyhow::Error>(latencies)
    })?;
    server.shutdown_timeout(Duration::from_secs(5));
    if let Ok(app) = Arc::try_unwrap(app) {
        app.pool.shutdown();
    }
    Ok(latencies)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn spread(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::MIN, f64::max);
    let min = xs.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / 2.0
}

fn emit(id: &str, what: &str, ours: &[f64], raw: &[f64], target: &str) {
    println!(
        "{{\"id\":\"{id}\",\"what\":\"{what}\",\"unit\":\"ms\",\"better\":\"lower\",\"ours\":{:.3},\"ours_spread\":{:.3},\"raw\":{:.3},\"raw_spread\":{:.3},\"target\":\"{target}\"}}",
        median(ours),
        spread(ours),
        median(raw),
        spread(raw),
    );
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // cargo-nextest lists a binary's tests with `--list`: offer one smoke
    // test, which runs the quick workload (no `--bench` below).
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("quick_smoke: test");
        }
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let (reps, work) = if quick {
        (
            1,
            Workload {
                connections: 8,
                fib_n: 20,
                warm_up: Duration::from_millis(100),
                measure: Duration::from_millis(300),
            },
        )
    } else {
        (
            3,
            Workload {
                connections: 128,
                fib_n: 30,
                warm_up: Duration::from_millis(500),
                measure: Duration::from_secs(3),
            },
        )
    };
    eprintln!(
        "route bench: {reps} run(s) of each, {} connections of fib({}){}",
        work.connections,
        work.fib_n,
        if quick { " (quick)" } else { "" }
    );
    let (mut idle, mut awaiting, mut blocking) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        for (handler, medians) in [
            (Handler::Idle, &mut idle),
            (Handler::Awaiting, &mut awaiting),
            (Handler::Blocking, &mut blocking),
        ] {
            let mut latencies = one_run(handler, work)?;
            latencies.sort_by(f64::total_cmp);
            eprintln!(
                "  {handler:?}: {} requests, median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                latencies.len(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies.last().copied().unwrap_or(f64::NAN),
            );
            medians.push(percentile(&latencies, 0.5));
        }
    }
    emit(
        "threads.route_beside_pool",
        "cheap axum route beside 128 connections of fib(30) awaited on the pool (median)",
        &awaiting,
        &idle,
        "<= 2 ms",
    );
    emit(
        "threads.route_beside_blocked_pool",
        "the same, the fib handlers blocking their runtime thread while the queue is full",
        &blocking,
        &idle,
        "none: the way not to do it, for comparison",
    );
    Ok(())
}
