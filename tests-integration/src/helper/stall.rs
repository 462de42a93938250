//! `cluster-helper stall <n>`: a primary that measures the longest stall
//! of its own event loop while it goes through what a primary goes
//! through, and reports it on stderr.
//!
//! It runs on a current-thread runtime, so a call that blocks any task of
//! the cluster on it (the supervisor, a worker's driver, an output
//! forwarder, the program's own loop) stops every other one too, and shows
//! as a gap between the ticks of a task that sleeps 1 ms at a time. Its
//! workers run `HELPER_WORKER_MODE` (the test uses `spew`: they serve on
//! `HELPER_ADDR` and print far more than a stalled stdout holds).
//!
//! Beside it, a *control* thread of its own sleeps 1 ms at a time too:
//! its longest gap is what the machine alone costs (a busy 2-core machine
//! easily takes a thread off its CPU for tens of ms), the baseline a gap of
//! the loop is compared with.
//!
//! And each gap of the loop is split by the runtime thread's own
//! accounting (`/proc/thread-self/schedstat`, read at every tick): the time
//! it waited for a CPU (the machine's doing) and the rest, on a CPU or
//! asleep (the primary's doing: a task that computes, or a call that waits
//! without a CPU). The longest gap less its wait for a CPU is the *own*
//! stall.
//!
//! Phases, each reported once it is over as `stall <phase> <longest gap of
//! the loop> <ticks> <longest gap of the control thread> <longest own
//! stall> <of which on a CPU>` (µs):
//! - `start`: `n` workers forked and listening;
//! - `storm`: for [`STORM`] (at most [`STORM_KILLS`] kills) a random
//!   listening worker is SIGKILLed every 100 to 300 ms, one of them
//!   SIGSTOPped instead (the heartbeat finds it), a broadcast after each;
//!   then until `n` workers listen again;
//! - `reload`: a rolling reload ([`Cluster::reload`]);
//! - `stats`: [`STATS_CALLS`] calls of [`Cluster::stats`] (a yield between
//!   two, so the gap is one call's, not the loop's);
//! - `upgrade`: [`Cluster::upgrade`] to this program again, then the
//!   graceful shutdown to the end of the event stream.
//!
//! Then `stall done`. Also printed: `stall upgraded <pid>` (or
//! `stall upgrade-failed <reason>`). A watchdog thread prints `stall
//! blocked <phase> <ms>` at once when no tick came for [`BLOCKED`]: the
//! loop may never tick again.
//!
//! Started by that upgrade (`PROCWORK_UPGRADE_FD` set), it is the
//! *successor*: it starts its `n` workers (its readiness ends the old
//! primary's upgrade), waits until the old primary has exited (its parent
//! changes), shuts down, and reports `successor <phase> …` lines and
//! `successor done`.
//!
//! `HELPER_PID_FILE` names the cluster's pid file; a `NOTIFY_SOCKET` is
//! reported to as a service manager's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_core::output::Output;
use cluster_core::{Backoff, Cluster, CrashLoopLimit, Settings, WorkerState};

use super::{BoxResult, Msg};

/// The ticker's sleep.
const TICK: Duration = Duration::from_millis(1);

/// No tick for this long: the watchdog reports the loop blocked.
const BLOCKED: Duration = Duration::from_secs(2);

/// How long the kill storm lasts, at most.
const STORM: Duration = Duration::from_secs(3);

/// How many workers the storm kills, at most.
const STORM_KILLS: u32 = 20;

/// How many `stats()` calls the stats phase makes (within [`PHASE_LIMIT`]).
const STATS_CALLS: u32 = 2000;

/// The longest any phase may wait for what it awaits.
const PHASE_LIMIT: Duration = Duration::from_secs(30);

/// The event loop's pulse: when it last ticked, and the longest gap.
struct Pulse {
    start: Instant,
    /// When the last tick came, ns since `start`.
    last: AtomicU64,
    /// The longest gap between two ticks since the last [`Pulse::take`], ns.
    longest: AtomicU64,
    /// The control thread's longest gap since then, ns.
    control: AtomicU64,
    /// The longest gap less its wait for a CPU since then, ns, and the
    /// time on a CPU within it.
    own: AtomicU64,
    own_cpu: AtomicU64,
    ticks: AtomicU64,
    phase: Mutex<&'static str>,
}

impl Pulse {
    /// Start the ticker on the current runtime and the watchdog thread.
    fn start(who: &'static str) -> Arc<Pulse> {
        let pulse = Arc::new(Pulse {
            start: Instant::now(),
            last: AtomicU64::new(0),
            longest: AtomicU64::new(0),
            control: AtomicU64::new(0),
            own: AtomicU64::new(0),
            own_cpu: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            phase: Mutex::new("start"),
        });
        let ticker = Arc::clone(&pulse);
        tokio::spawn(async move {
            let mut sched = schedstat();
            loop {
                tokio::time::sleep(TICK).await;
                let now = ticker.now();
                let was = std::mem::replace(&mut sched, schedstat());
                let gap = now.saturating_sub(ticker.last.swap(now, Ordering::SeqCst));
                ticker.longest.fetch_max(gap, Ordering::SeqCst);
                if let (Some((run0, wait0)), Some((run1, wait1))) = (was, sched) {
                    let own = gap.saturating_sub(wait1.saturating_sub(wait0));
                    if own > ticker.own.load(Ordering::SeqCst) {
                        ticker.own.store(own, Ordering::SeqCst);
                        ticker
                            .own_cpu
                            .store(run1.saturating_sub(run0), Ordering::SeqCst);
                    }
                }
                ticker.ticks.fetch_add(1, Ordering::SeqCst);
            }
        });
        let control = Arc::clone(&pulse);
        std::thread::spawn(move || {
            let mut last = control.now();
            loop {
                std::thread::sleep(TICK);
                let now = control.now();
                control
                    .control
                    .fetch_max(now.saturating_sub(last), Ordering::SeqCst);
                last = now;
            }
        });
        let watched = Arc::clone(&pulse);
        std::thread::spawn(move || {
            let mut reported = false;
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let silent = watched
                    .now()
                    .saturating_sub(watched.last.load(Ordering::SeqCst));
                let blocked = silent > BLOCKED.as_nanos() as u64;
                if blocked && !reported {
                    // Straight to stderr from this thread: the loop that
                    // would queue the line does not run.
                    eprintln!("{who} blocked {} {}", watched.phase(), silent / 1_000_000);
                }
                reported = blocked;
            }
        });
        pulse
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End the current phase, begin `next`: the phase's line (see the
    /// module docs), the figures reset.
    fn take(&self, next: &'static str) -> String {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let ended = std::mem::replace(&mut *phase, next);
        let us = |a: &AtomicU64| a.swap(0, Ordering::SeqCst) / 1000;
        let longest = us(&self.longest);
        let ticks = self.ticks.swap(0, Ordering::SeqCst);
        let control = us(&self.control);
        let own = us(&self.own);
        let own_cpu = us(&self.own_cpu);
        format!("{ended} {longest} {ticks} {control} {own} {own_cpu}")
    }
}

/// This thread's time on a CPU and waiting for one, ns (`None` without
/// `/proc`). A read of `/proc` on the runtime: a few µs, the measure's own
/// cost.
fn schedstat() -> Option<(u64, u64)> {
    let line = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = line.split_ascii_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// Report the phase that ends and begin `next`.
async fn phase(who: &str, pulse: &Pulse, next: &'static str) {
    let figures = pulse.take(next);
    // Into the stalled stdout too (dropped when it is full): the program's
    // own lines never wait.
    Output::stdout().line(format!("{who}: {figures}"));
    Output::stderr().line_wait(format!("{who} {figures}")).await;
}

/// A small xorshift generator: which worker, how long a pause.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Rng(u64::from(nanos) << 16 | u64::from(std::process::id()) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub(super) fn main(n: usize) -> BoxResult {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(n))
}

async fn run(n: usize) -> BoxResult {
    let successor = std::env::var_os("PROCWORK_UPGRADE_FD").is_some();
    let who = if successor { "successor" } else { "stall" };
    let pulse = Pulse::start(who);
    let mut settings = Settings::new();
    settings
        .n_workers(n)
        .env(
            "HELPER_MODE",
            std::env::var("HELPER_WORKER_MODE").unwrap_or_else(|_| "serve".into()),
        )
        // A stopped worker is found within a second.
        .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
        // Killed workers come back at once, however many.
        .backoff(Backoff {
            initial: Duration::from_millis(10),
            factor: 1.0,
            cap: Duration::from_millis(10),
            min_uptime: Duration::from_millis(100),
        })
        .crash_loop_limit(CrashLoopLimit {
            max_restarts: 1000,
            window: Duration::from_secs(60),
        })
        .shutdown_deadline(Duration::from_secs(2))
        .upgrade_timeout(Duration::from_secs(20));
    if let Ok(path) = std::env::var("HELPER_PID_FILE") {
        settings.pid_file(path);
    }
    let mut cluster = Cluster::<Msg>::new(settings)?;
    cluster.start()?;
    until_listening(&mut cluster, n).await?;
    if successor {
        return succeed(cluster, &pulse).await;
    }

    phase(who, &pulse, "storm").await;
    storm(&mut cluster).await?;
    until_listening(&mut cluster, n).await?;

    phase(who, &pulse, "reload").await;
    let reload = cluster.reload().await;
    Output::stderr()
        .line_wait(match reload {
            Ok(()) => "stall reload done".to_owned(),
            Err(e) => format!("stall reload-failed {e}"),
        })
        .await;

    phase(who, &pulse, "stats").await;
    let began = Instant::now();
    let mut workers = 0;
    for _ in 0..STATS_CALLS {
        workers += cluster.stats().await.workers.len();
        tokio::task::yield_now().await;
        if began.elapsed() > PHASE_LIMIT {
            break;
        }
    }
    std::hint::black_box(workers);

    phase(who, &pulse, "upgrade").await;
    Output::stderr()
        .line_wait(match cluster.upgrade().await {
            Ok(pid) => format!("stall upgraded {pid}"),
            Err(e) => {
                // Nothing hands over: end this one by itself.
                let _ = cluster.shutdown().await;
                format!("stall upgrade-failed {e}")
            }
        })
        .await;
    // Handed over: the graceful shutdown ends the event stream.
    let ended = tokio::time::timeout(PHASE_LIMIT, async {
        while cluster.next_event().await.is_some() {}
    })
    .await;
    phase(who, &pulse, "end").await;
    let err = Output::stderr();
    err.line_wait(if ended.is_ok() {
        "stall done"
    } else {
        "stall never-ended"
    })
    .await;
    err.flush().await;
    Ok(())
}

/// Events until `n` workers are listening (the cluster's live workers, so
/// replaced ones are not counted), within [`PHASE_LIMIT`].
async fn until_listening(cluster: &mut Cluster<Msg>, n: usize) -> BoxResult {
    let listening = |c: &Cluster<Msg>| {
        c.workers()
            .values()
            .filter(|w| w.state() == WorkerState::Listening)
            .count()
    };
    tokio::time::timeout(PHASE_LIMIT, async {
        while listening(cluster) < n {
            match cluster.next_event().await {
                Some(_) => {}
                None => return Err("the event stream ended"),
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| "workers did not listen in time")??;
    Ok(())
}

/// SIGKILL a random listening worker every 100 to 300 ms (one SIGSTOPped
/// instead), broadcasting a `Ping` after each, while taking the events.
async fn storm(cluster: &mut Cluster<Msg>) -> BoxResult {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut rng = Rng::new();
    let end = Instant::now() + STORM;
    let mut kills = 0;
    while Instant::now() < end && kills < STORM_KILLS {
        let pause = tokio::time::sleep(Duration::from_millis(100 + rng.below(200)));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                ev = cluster.next_event() => if ev.is_none() {
                    return Err("the event stream ended in the storm".into());
                },
            }
        }
        let listening: Vec<u32> = cluster
            .workers()
            .values()
            .filter(|w| w.state() == WorkerState::Listening)
            .map(|w| w.pid())
            .collect();
        if listening.is_empty() {
            continue;
        }
        let pid = listening[rng.below(listening.len() as u64) as usize];
        let signal = if kills == STORM_KILLS / 4 {
            Signal::SIGSTOP
        } else {
            Signal::SIGKILL
        };
        let _ = kill(Pid::from_raw(pid as i32), signal);
        kills += 1;
        cluster.broadcast(&Msg::Ping(u64::from(kills))).await;
    }
    Ok(())
}

/// The successor: serve until the old primary has exited, then shut down.
async fn succeed(mut cluster: Cluster<Msg>, pulse: &Pulse) -> BoxResult {
    phase("successor", pulse, "serve").await;
    let parent = nix::unistd::getppid();
    let _ = tokio::time::timeout(PHASE_LIMIT, async {
        loop {
            tokio::select! {
                ev = cluster.next_event() => if ev.is_none() { return },
                () = tokio::time::sleep(Duration::from_millis(20)) => {
                    if nix::unistd::getppid() != parent {
                        return;
                    }
                }
            }
        }
    })
    .await;
    phase("successor", pulse, "end").await;
    let _ = cluster.shutdown().await;
    let _ = tokio::time::timeout(PHASE_LIMIT, async {
        while cluster.next_event().await.is_some() {}
    })
    .await;
    phase("successor", pulse, "done").await;
    let err = Output::stderr();
    err.line_wait("successor done").await;
    err.flush().await;
    Ok(())
}
