//! The primary never blocks: a primary on a current-thread runtime
//! (`cluster-helper stall 4`, so any blocking call of any of its tasks
//! stops them all) records the longest gap between the ticks of a task
//! that sleeps 1 ms at a time, through a kill storm (a stopped worker
//! among the kills), a rolling reload, 2000 `stats()` calls and an upgrade
//! with its graceful shutdown — with its stdout on a pipe nobody reads
//! (its workers print far more than it holds), a service manager that
//! never reads its notify socket, and a pid file.
//!
//! Nothing here is timed but against a bound that only a real block
//! exceeds ([`BLOCKED`]: waiting on a stopped process, a full pipe, a
//! full socket); the figures are printed for the record, each beside the
//! longest gap of a plain thread of the primary that also sleeps 1 ms at a
//! time (what the machine alone costs, in the same phase), and the
//! longest *own* stall: a gap less the time the runtime's thread waited
//! for a CPU (its schedstat), i.e. what the primary did itself.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::support::{HELPER, Lines};

/// A stall this long is a block, not a noisy machine.
const BLOCKED: Duration = Duration::from_secs(2);

/// The whole run's bound (it takes about 15 s).
const RUN: Duration = Duration::from_secs(100);

/// The phases the old primary reports, in order, and the successor's.
const PHASES: &[&str] = &["start", "storm", "reload", "stats", "upgrade"];
const SUCCESSOR_PHASES: &[&str] = &["start", "serve", "end"];

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("procwork-stall-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SIGKILLs the upgrade's new primary if the test ends before it did (its
/// workers die with it).
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// One phase's figures.
struct Stall {
    phase: String,
    /// The loop's longest gap between two ticks.
    longest: Duration,
    ticks: u64,
    /// The control thread's longest gap.
    control: Duration,
    /// The longest gap less its wait for a CPU, and its time on a CPU.
    own: Duration,
    own_cpu: Duration,
}

/// `<who> <phase> <longest> <ticks> <control> <own> <own cpu>` lines (µs),
/// in order.
fn stalls(seen: &[String], who: &str) -> Vec<Stall> {
    let us = |w: &str| w.parse().ok().map(Duration::from_micros);
    seen.iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                [w, phase, longest, ticks, control, own, own_cpu] if *w == who => Some(Stall {
                    phase: (*phase).to_owned(),
                    longest: us(longest)?,
                    ticks: ticks.parse().ok()?,
                    control: us(control)?,
                    own: us(own)?,
                    own_cpu: us(own_cpu)?,
                }),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test]
async fn the_primary_never_stalls_through_kills_a_reload_stats_and_an_upgrade() {
    let scratch = Scratch::new();
    // A service manager that never reads: its socket's queue fills after
    // a few datagrams.
    let notify_path = scratch.0.join("notify.sock");
    let _manager = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let pid_file = scratch.0.join("pid");
    // A log reader that never reads: the smallest pipe, full at once.
    let (_unread, writer) = std::io::pipe().expect("a pipe");
    nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).expect("shrink the pipe");

    let mut command = Command::new(HELPER);
    command
        .args(["stall", "4"])
        .env("HELPER_WORKER_MODE", "spew")
        .env("HELPER_ADDR", "127.0.0.1:0")
        .env("HELPER_PID_FILE", &pid_file)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut primary = command.spawn().expect("start the stall primary");
    drop(command);
    let mut lines = Lines::read(primary.stderr.take().expect("stderr"));
    let mut successor = KillOnDrop(None);

    // Both primaries report on this stream; it ends when both have exited.
    let deadline = Instant::now() + RUN;
    let mut done = (false, false);
    while done != (true, true) {
        let line = lines.next_by(deadline, "report").await;
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            [_, "blocked", phase, ms] => panic!(
                "the primary's loop made no tick for {ms} ms in its {phase} phase; seen: {:#?}",
                lines.seen
            ),
            ["stall", "upgraded", pid] => successor.0 = Some(pid.parse().expect("a pid")),
            ["stall", "upgrade-failed", ..] | ["stall", "reload-failed", ..] => {
                panic!("{line}; seen: {:#?}", lines.seen)
            }
            ["stall", "done"] => done.0 = true,
            ["successor", "done"] => done.1 = true,
            _ => {}
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(20), primary.wait())
        .await
        .expect("the primary exited")
        .expect("wait for the primary");
    assert!(status.success(), "{status}; seen: {:#?}", lines.seen);
    let new_pid = successor.0.take().expect("an upgraded line");
    assert_eq!(
        std::fs::read_to_string(&pid_file)
            .expect("the pid file")
            .trim(),
        new_pid.to_string(),
        "the pid file names the new primary"
    );

    let old = stalls(&lines.seen, "stall");
    let new = stalls(&lines.seen, "successor");
    for (who, figures) in [("primary", &old), ("successor", &new)] {
        for s in figures.iter() {
            eprintln!(
                "longest stall of the {who}'s loop, {}: {:?} ({} ticks; control thread {:?}); \
                 longest own stall {:?}, {:?} of it on a CPU",
                s.phase, s.longest, s.ticks, s.control, s.own, s.own_cpu
            );
        }
    }
    let phases = |f: &[Stall]| f.iter().map(|s| s.phase.clone()).collect::<Vec<_>>();
    assert_eq!(phases(&old), PHASES, "seen: {:#?}", lines.seen);
    assert_eq!(phases(&new), SUCCESSOR_PHASES, "seen: {:#?}", lines.seen);
    for s in old.iter().chain(&new) {
        assert!(
            s.longest < BLOCKED,
            "the loop stalled {:?} in {}; seen: {:#?}",
            s.longest,
            s.phase,
            lines.seen
        );
    }
    // The measure ran (a phase may be shorter than a tick, not a primary).
    for figures in [&old, &new] {
        let ticks: u64 = figures.iter().map(|s| s.ticks).sum();
        assert!(ticks > 0, "no tick at all; seen: {:#?}", lines.seen);
    }
}
