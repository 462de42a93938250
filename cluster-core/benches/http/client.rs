//! The load client: `concurrency` threads, each opening a new TCP (or
//! Unix-domain) connection per request (`GET / HTTP/1.1`, `Connection: close`) and reading the answer
//! to EOF. Bounded in requests and in time; counts the answers per worker tag
//! (the body), which gives the fairness figure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// How much load: at most `total` requests, by `concurrency` connections at a
/// time, and no longer than `budget`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) total: usize,
    pub(crate) concurrency: usize,
    pub(crate) budget: Duration,
}

/// What a load run saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) done: usize,
    pub(crate) failed: usize,
    pub(crate) secs: f64,
    pub(crate) per_worker: BTreeMap<String, usize>,
}

impl Outcome {
    /// Answered requests (= connections) per second.
    pub(crate) fn rate(&self) -> f64 {
        self.done as f64 / self.secs.max(1e-9)
    }

    /// The busiest worker's count over the quietest's, over `n_workers`
    /// workers (a worker that answered nothing counts as 1, like the Node.js
    /// script, so the figure stays finite).
    pub(crate) fn fairness(&self, n_workers: usize) -> f64 {
        let mut counts: Vec<usize> = self.per_worker.values().copied().collect();
        counts.resize(n_workers.max(counts.len()), 0);
        let max = counts.iter().copied().max().unwrap_or(0);
        let min = counts.iter().copied().min().unwrap_or(0);
        max as f64 / min.max(1) as f64
    }
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// 127.0.0.1 and this port.
    Tcp(u16),
    /// This Unix-domain socket.
    Unix(PathBuf),
}

/// Run `load` against `target`.
pub(crate) fn run(target: &Target, load: Load) -> Outcome {
    let claimed = AtomicUsize::new(0);
    let start = Instant::now();
    let parts: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..load.concurrency)
            .map(|_| {
                let claimed = &claimed;
                s.spawn(move || {
                    let mut out = Outcome::default();
                    while claimed.fetch_add(1, Ordering::Relaxed) < load.total
                        && start.elapsed() < load.budget
                    {
                        match get(target) {
                            Some(worker) => {
                                out.done += 1;
                                *out.per_worker.entry(worker).or_default() += 1;
                            }
                            None => out.failed += 1,
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut total = Outcome {
        secs: start.elapsed().as_secs_f64(),
        ..Outcome::default()
    };
    for part in parts {
        total.done += part.done;
        total.failed += part.failed;
        for (worker, n) in part.per_worker {
            *total.per_worker.entry(worker).or_default() += n;
        }
    }
    total
}

/// One request on a new connection; the body (the worker's tag) if the
/// answer was a complete `200`.
fn get(target: &Target) -> Option<String> {
    match target {
        Target::Tcp(port) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            exchange(stream)
        }
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            exchange(stream)
        }
    }
}

fn exchange<S: Read + Write>(mut stream: S) -> Option<String> {
    stream.write_all(REQUEST).ok()?;
    let mut answer = Vec::with_capacity(128);
    stream.read_to_end(&mut answer).ok()?;
    let text = std::str::from_utf8(&answer).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
