//! Figures for worker-threads, each beside a baseline measured in the same run.
//!
//! Workloads (N per repetition, `--quick` in brackets; repetitions
//! interleaved ours/raw, 7 [3] of each):
//! - `threads.rtt_pinned`: one `u64` parent → worker → parent through the
//!   worker's port and events, both threads pinned to one CPU
//!   (`sched_setaffinity`); 20,000 [500] round trips. Raw: a bare eventfd
//!   ping-pong between two threads pinned the same way. Good: ≤ 1.5 × raw
//!   (Node.js: its row in docs/benchmarks.md).
//! - `threads.rtt_pinned_vs_crossbeam`: the same, against a bare crossbeam
//!   ping-pong pinned the same way (what the ports are built on): the cost of
//!   the worker wrapper itself. Good: ≤ 1.1 × raw.
//! - `threads.rtt`: the first, unpinned.
//! - `threads.throughput`: one-way `u64` messages worker → parent (posted as
//!   events, received by `recv_event`); 2,000,000 [20,000]. Raw: the same
//!   count through a bare crossbeam unbounded channel between two threads.
//!   Good: ≥ 20M/s (Node.js: docs/benchmarks.md).
//! - `threads.start_to_first_msg`: `Worker::spawn` to the first message event
//!   in the parent; the median of 100 [10] starts. Raw: `std::thread::spawn`
//!   and a bare crossbeam channel. Good: ≤ 200 µs (Node.js: docs/benchmarks.md).
//! - `threads.pool_speedup_fib30`: 64 × fib(30) [fib(20)] on `Pool` with 1
//!   thread, over the same on 2 threads. Raw: the same speedup with bare
//!   `std::thread`s (32 calls each on 2 threads over 64 on 1), which shows
//!   how much of the 2 CPUs the shared machine gave this run; the ideal is
//!   2.0. Good: ≥ 1.9 on a quiet machine (Node.js with piscina:
//!   docs/benchmarks.md).
//!
//! Each figure is the median of its repetitions; spread is (max − min) / 2.
//! Without `--bench` (as under `cargo test --benches`) the quick workload
//! runs; `--list` (cargo-nextest's listing) lists one test,
//! `quick_smoke`, which nextest then runs as that smoke test.
//! One JSON line per figure on stdout; human-readable text on stderr.

use std::hint::black_box;
use std::time::Instant;

use worker_threads::{Event, Pool, Worker};

struct Row {
    id: &'static str,
    what: &'static str,
    unit: &'static str,
    better: &'static str,
    ours: Vec<f64>,
    raw: Option<Vec<f64>>,
    target: &'static str,
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::MIN, f64::max);
    let min = xs.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / 2.0
}

fn emit(row: &Row) {
    let (raw, raw_spread) = match &row.raw {
        Some(raw) => (format!("{:.3}", median(raw)), format!("{:.3}", spread(raw))),
        None => ("null".to_owned(), "null".to_owned()),
    };
    println!(
        "{{\"id\":\"{}\",\"what\":\"{}\",\"unit\":\"{}\",\"better\":\"{}\",\"ours\":{:.3},\"ours_spread\":{:.3},\"raw\":{},\"raw_spread\":{},\"target\":\"{}\"}}",
        row.id,
        row.what,
        row.unit,
        row.better,
        median(&row.ours),
        spread(&row.ours),
        raw,
        raw_spread,
        row.target
    );
    eprintln!(
        "{:<30} ours {:>12.3} {} (±{:.3})  raw {} {}",
        row.id,
        median(&row.ours),
        row.unit,
        spread(&row.ours),
        raw,
        row.unit
    );
}

/// The calling thread's CPU affinity, and a way to set it.
mod affinity {
    /// The CPUs the calling thread may run on.
    pub(crate) fn get() -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the pointer and size describe `set`, which outlives the call.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(
            rc,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        set
    }

    /// The first CPU of the calling thread's affinity.
    pub(crate) fn first_cpu() -> usize {
        let set = get();
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .expect("a thread runs on some CPU")
    }

    /// Restricts the calling thread to `set`.
    pub(crate) fn set(set: &libc::cpu_set_t) {
        // SAFETY: the pointer and size describe `set`, valid for the call.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Restricts the calling thread to one CPU.
    pub(crate) fn pin(cpu: usize) {
        // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` comes from `first_cpu`, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        set(&one);
    }
}

/// A bare eventfd, the raw baseline's wake-up primitive.
struct EventFd(std::os::fd::OwnedFd);

impl EventFd {
    fn new() -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    fn signal(&self) {
        use std::os::fd::AsRawFd;
        let one: u64 = 1;
        // SAFETY: the buffer is the 8 bytes of `one`, valid for the call.
        let n = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
        assert_eq!(n, 8, "eventfd write: {}", std::io::Error::last_os_error());
    }

    fn wait(&self) {
        use std::os::fd::AsRawFd;
        let mut value: u64 = 0;
        // SAFETY: the buffer is the 8 bytes of `value`, valid for the call.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut value).cast(), 8) };
        assert_eq!(n, 8, "eventfd read: {}", std::io::Error::last_os_error());
    }
}

/// Mean round trip in µs over `n` trips through a worker's port and events.
fn rtt_ours(n: u64, pin: Option<usize>) -> f64 {
    let worker = Worker::<u64, u64>::spawn(pin, |ctx| {
        if let Some(cpu) = *ctx.worker_data() {
            affinity::pin(cpu);
        }
        let port = ctx.parent_port();
        while let Ok(x) = port.recv() {
            if port.post_message(x + 1).is_err() {
                break;
            }
        }
    })
    .expect("spawn");
    assert_eq!(worker.recv_event(), Ok(Event::Online));
    // One warm-up trip, so the worker is in its loop.
    worker.post_message(0).expect("worker listens");
    assert_eq!(worker.recv_event(), Ok(Event::Message(1)));
    let started = Instant::now();
    for i in 0..n {
        worker.post_message(i).expect("worker listens");
        match worker.recv_event() {
            Ok(Event::Message(x)) => assert_eq!(x, i + 1),
            other => panic!("unexpected {other:?}"),
        }
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    assert_eq!(worker.join(), 0);
    us
}

/// Mean round trip in µs over `n` trips of a bare eventfd ping-pong.
fn rtt_raw(n: u64, pin: Option<usize>) -> f64 {
    let ping = std::sync::Arc::new(EventFd::new());
    let pong = std::sync::Arc::new(EventFd::new());
    let peer = {
        let (ping, pong) = (ping.clone(), pong.clone());
        std::thread::spawn(move || {
            if let Some(cpu) = pin {
                affinity::pin(cpu);
            }
            for _ in 0..=n {
                ping.wait();
                pong.signal();
            }
        })
    };
    ping.signal();
    pong.wait();
    let started = Instant::now();
    for _ in 0..n {
        ping.signal();
        pong.wait();
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    peer.join().expect("peer");
    us
}

/// Mean round trip in µs over `n` trips of a bare crossbeam ping-pong: what
/// the ports are built on, without the worker around them.
fn rtt_crossbeam(n: u64, pin: Option<usize>) -> f64 {
    let (to_peer, from_main) = crossbeam_channel::unbounded::<u64>();
    let (to_main, from_peer) = crossbeam_channel::unbounded::<u64>();
    let peer = std::thread::spawn(move || {
        if let Some(cpu) = pin {
            affinity::pin(cpu);
        }
        while let Ok(x) = from_main.recv() {
            if to_main.send(x + 1).is_err() {
                break;
            }
        }
    });
    to_peer.send(0).expect("peer listens");
    assert_eq!(from_peer.recv(), Ok(1));
    let started = Instant::now();
    for i in 0..n {
        to_peer.send(i).expect("peer listens");
        assert_eq!(from_peer.recv(), Ok(i + 1));
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(to_peer);
    peer.join().expect("peer");
    us
}

fn throughput_ours(n: u64) -> f64 {
    let worker = Worker::<(), u64>::spawn(n, |ctx| {
        for i in 0..*ctx.worker_data() {
            if ctx.parent_port().post_message(i).is_err() {
                break;
            }
        }
    })
    .expect("spawn");
    assert_eq!(worker.recv_event(), Ok(Event::Online));
    let started = Instant::now();
    let mut sum = 0_u64;
    for _ in 0..n {
        match worker.recv_event() {
            Ok(Event::Message(x)) => sum = sum.wrapping_add(x),
            other => panic!("unexpected {other:?}"),
        }
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    black_box(sum);
    assert_eq!(worker.join(), 0);
    per_s
}

fn throughput_raw(n: u64) -> f64 {
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(1);
    let sender = std::thread::spawn(move || {
        ready_tx.send(()).expect("main listens");
        for i in 0..n {
            tx.send(i).expect("main listens");
        }
    });
    ready_rx.recv().expect("sender started");
    let started = Instant::now();
    let mut sum = 0_u64;
    for _ in 0..n {
        sum = sum.wrapping_add(rx.recv().expect("a message"));
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    black_box(sum);
    sender.join().expect("sender");
    per_s
}

/// Median µs from `Worker::spawn` to the first message event, over `n` workers.
fn start_ours(n: u32) -> f64 {
    let mut each = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let worker = Worker::<(), u8>::spawn((), |ctx| {
            let _ = ctx.parent_port().post_message(1);
        })
        .expect("spawn");
        loop {
            match worker.recv_event() {
                Ok(Event::Online) => {}
                Ok(Event::Message(1)) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        each.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(worker.join(), 0);
    }
    median(&each)
}

fn start_raw(n: u32) -> f64 {
    let mut each = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let (tx, rx) = crossbeam_channel::unbounded::<u8>();
        let thread = std::thread::spawn(move || {
            let _ = tx.send(1);
        });
        assert_eq!(rx.recv(), Ok(1));
        each.push(started.elapsed().as_secs_f64() * 1e6);
        thread.join().expect("thread");
    }
    median(&each)
}

fn fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// Seconds for 64 × fib(`n`) on a pool of `threads`.
fn fib_batch(pool: &Pool, n: u32) -> f64 {
    let started = Instant::now();
    let handles: Vec<_> = (0..64)
        .map(|_| pool.run(move || fib(black_box(n))))
        .collect();
    for handle in handles {
        black_box(handle.join().expect("fib task"));
    }
    started.elapsed().as_secs_f64()
}

/// Seconds for 64 × fib(`n`) split over `threads` bare std threads.
fn fib_bare(threads: u32, n: u32) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(move || {
                for _ in 0..64 / threads {
                    black_box(fib(black_box(n)));
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // cargo-nextest lists a binary's tests with `--list`: offer one smoke
    // test, which runs the quick workload (no `--bench` below).
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("quick_smoke: test");
        }
        return;
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`),
    // run the quick workload as a smoke test.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let reps = if quick { 3 } else { 7 };
    let trips: u64 = if quick { 500 } else { 20_000 };
    let messages: u64 = if quick { 20_000 } else { 2_000_000 };
    let starts: u32 = if quick { 10 } else { 100 };
    let fib_n: u32 = if quick { 20 } else { 30 };
    eprintln!(
        "threads bench: {reps} repetitions{}",
        if quick { " (quick)" } else { "" }
    );

    let original = affinity::get();
    let cpu = affinity::first_cpu();
    let (mut pinned_ours, mut pinned_raw) = (Vec::new(), Vec::new());
    let (mut pinned_ours_again, mut pinned_crossbeam) = (Vec::new(), Vec::new());
    let (mut free_ours, mut free_raw) = (Vec::new(), Vec::new());
    let (mut tp_ours, mut tp_raw) = (Vec::new(), Vec::new());
    let (mut st_ours, mut st_raw) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        affinity::pin(cpu);
        pinned_ours.push(rtt_ours(trips, Some(cpu)));
        pinned_raw.push(rtt_raw(trips, Some(cpu)));
        pinned_ours_again.push(rtt_ours(trips, Some(cpu)));
        pinned_crossbeam.push(rtt_crossbeam(trips, Some(cpu)));
        affinity::set(&original);
        free_ours.push(rtt_ours(trips, None));
        free_raw.push(rtt_raw(trips, None));
        tp_ours.push(throughput_ours(messages));
        tp_raw.push(throughput_raw(messages));
        st_ours.push(start_ours(starts));
        st_raw.push(start_raw(starts));
    }
    let one = Pool::new(1).expect("pool of 1");
    let two = Pool::new(2).expect("pool of 2");
    let (mut speedup, mut bare_speedup) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t1 = fib_batch(&one, fib_n);
        let t2 = fib_batch(&two, fib_n);
        speedup.push(t1 / t2);
        bare_speedup.push(fib_bare(1, fib_n) / fib_bare(2, fib_n));
    }
    one.shutdown();
    two.shutdown();

    for row in [
        Row {
            id: "threads.rtt_pinned",
            what: "worker message round trip, both threads on one CPU",
            unit: "us",
            better: "lower",
            ours: pinned_ours,
            raw: Some(pinned_raw),
            target: "<= 1.5x raw (eventfd ping-pong)",
        },
        Row {
            id: "threads.rtt_pinned_vs_crossbeam",
            what: "worker message round trip, one CPU, against bare crossbeam channels",
            unit: "us",
            better: "lower",
            ours: pinned_ours_again,
            raw: Some(pinned_crossbeam),
            target: "<= 1.1x raw (the wrapper's own cost)",
        },
        Row {
            id: "threads.rtt",
            what: "worker message round trip, unpinned",
            unit: "us",
            better: "lower",
            ours: free_ours,
            raw: Some(free_raw),
            target: "<= 1.5x raw (eventfd ping-pong)",
        },
        Row {
            id: "threads.throughput",
            what: "one-way worker messages per second",
            unit: "per_s",
            better: "higher",
            ours: tp_ours,
            raw: Some(tp_raw),
            target: ">= 20M/s (raw: bare crossbeam channel)",
        },
        Row {
            id: "threads.start_to_first_msg",
            what: "worker spawn to first message",
            unit: "us",
            better: "lower",
            ours: st_ours,
            raw: Some(st_raw),
            target: "<= 200 us (raw: std::thread::spawn + channel)",
        },
        Row {
            id: "threads.pool_speedup_fib30",
            what: "64 x fib(30) on a pool of 2 threads over 1",
            unit: "ratio",
            better: "higher",
            ours: speedup,
            raw: Some(bare_speedup),
            target: ">= 1.9, ideal 2.0 (raw: bare std threads, same split)",
        },
    ] {
        emit(&row);
    }
}
