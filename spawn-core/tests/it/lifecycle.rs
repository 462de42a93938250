//! Lifecycle: graceful stop, timeout, group kill, kill on drop.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use spawn_core::Signal;
use spawn_core::{Close, Command, Error, Stdio};
use tokio::io::BufReader;

use crate::{read_line, run};

/// A child that says "ready" once its trap is installed, then loops.
fn trapping(trap: &str) -> Command {
    let mut command = Command::shell(format!("{trap}; echo ready; while :; do sleep 0.05; done"));
    command.stdout(Stdio::piped());
    command
}

async fn spawn_ready(mut command: Command) -> spawn_core::Child {
    let mut child = command.spawn().expect("spawn");
    let mut stdout = BufReader::new(child.take_stdout().expect("stdout"));
    assert_eq!(read_line(&mut stdout).await, "ready");
    child
}

#[test]
fn graceful_stop_of_a_child_that_traps_sigterm() {
    run(async {
        let mut child = spawn_ready(trapping("trap 'exit 7' TERM")).await;
        let close = child
            .stop(Signal::SIGTERM, Duration::from_secs(20))
            .await
            .expect("stop");
        assert_eq!(close, Close::Exited(7));
    });
}

#[test]
fn graceful_stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    run(async {
        let mut child = spawn_ready(trapping("trap '' TERM")).await;
        let close = child
            .stop(Signal::SIGTERM, Duration::from_millis(200))
            .await
            .expect("stop");
        assert_eq!(close.signal(), Some(Signal::SIGKILL));
    });
}

#[test]
fn a_timeout_stops_the_child_with_the_chosen_signal() {
    run(async {
        let mut child = Command::new("sleep").arg("100").spawn().expect("sleep");
        let err = child
            .wait_timeout(Duration::from_millis(50), Signal::SIGINT)
            .await
            .expect_err("sleep outlives 50 ms");
        match err {
            Error::TimedOut {
                signal,
                close,
                timeout,
                ..
            } => {
                assert_eq!(signal, Signal::SIGINT);
                assert_eq!(timeout, Duration::from_millis(50));
                assert_eq!(close.signal(), Some(Signal::SIGINT));
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
        // A child that ends in time is not disturbed.
        let mut quick = Command::new("/bin/true").spawn().expect("true");
        let close = quick
            .wait_timeout(Duration::from_secs(20), Signal::SIGKILL)
            .await
            .expect("in time");
        assert_eq!(close, Close::Exited(0));
    });
}

/// A pidfd for `pid`: it becomes readable when the process terminates.
fn pidfd(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor that we own.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn terminates_within(fd: &OwnedFd, ms: u16) -> bool {
    let deadline = Instant::now() + Duration::from_millis(ms.into());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        // SIGCHLD (tokio's reaper) interrupts poll: go on until the deadline.
        match poll(&mut fds, PollTimeout::from(left)) {
            Ok(n) => return n == 1,
            Err(nix::Error::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

#[test]
fn group_kill_leaves_no_grandchild_alive() {
    run(async {
        for leader in ["process_group", "new_session"] {
            let mut command = Command::shell("sleep 1000 & echo $!; wait");
            command.stdout(Stdio::piped());
            if leader == "process_group" {
                command.process_group(0);
            } else {
                command.new_session();
            }
            let mut child = command.spawn().expect("spawn");
            let mut stdout = BufReader::new(child.take_stdout().expect("stdout"));
            let grandchild: i32 = read_line(&mut stdout).await.parse().expect("a pid");
            let grandchild = pidfd(grandchild);
            assert!(
                !terminates_within(&grandchild, 0),
                "grandchild alive before the kill"
            );
            child.signal_group(Signal::SIGKILL).expect("signal_group");
            assert_eq!(
                child.wait().await.expect("wait").signal(),
                Some(Signal::SIGKILL)
            );
            assert!(
                terminates_within(&grandchild, 10_000),
                "{leader}: grandchild survived"
            );
        }
    });
}

#[test]
fn signal_group_needs_a_group_leader() {
    run(async {
        let mut child = Command::new("sleep")
            .arg("100")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let err = child
            .signal_group(Signal::SIGKILL)
            .expect_err("not a leader");
        assert!(matches!(err, Error::NotGroupLeader { .. }), "{err:?}");
    });
}

#[test]
fn kill_on_drop_kills_the_child() {
    run(async {
        let child = Command::new("sleep")
            .arg("100")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let fd = pidfd(child.id().expect("running") as i32);
        drop(child);
        assert!(
            terminates_within(&fd, 10_000),
            "the dropped child still runs"
        );
    });
}

#[test]
fn parent_death_signal_spawns_and_keeps_the_child_alive_while_we_live() {
    run(async {
        // Spawned from a thread that then exits: the child must survive,
        // because the fork happened on the long-lived spawner thread.
        let child = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            let _entered = runtime.enter();
            Command::new("sleep")
                .arg("100")
                .parent_death_signal(Signal::SIGKILL)
                .spawn()
                .map(|c| c.id().expect("running"))
        })
        .join()
        .expect("spawning thread")
        .expect("spawn");
        let fd = pidfd(child as i32);
        assert!(
            !terminates_within(&fd, 300),
            "the child died with the spawning thread"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        assert!(terminates_within(&fd, 10_000));
    });
}

#[test]
fn a_spawn_that_panics_on_the_spawner_thread_spares_its_other_children() {
    run(async {
        let mut child = Command::new("sleep")
            .arg("100")
            .parent_death_signal(Signal::SIGKILL)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let fd = pidfd(child.id().expect("running") as i32);
        // A runtime without I/O makes tokio panic inside the spawn, which
        // runs on the spawner thread. The panic is caught and reported...
        let spawned = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("rt");
            let _entered = runtime.enter();
            Command::new("/bin/true")
                .parent_death_signal(Signal::SIGKILL)
                .spawn()
                .map(|c| c.id())
        })
        .join()
        .expect("the panic stays inside the spawn");
        assert!(
            matches!(spawned, Err(Error::SpawnPanicked { .. })),
            "{spawned:?}"
        );
        // ...and the spawner thread lives on: its children keep running
        // (they would get SIGKILL if it exited) and it still spawns.
        assert!(
            !terminates_within(&fd, 300),
            "the spawner thread died with the panic"
        );
        let mut again = Command::new("/bin/true")
            .parent_death_signal(Signal::SIGKILL)
            .spawn()
            .expect("the spawner thread still spawns");
        assert_eq!(again.wait().await.expect("wait"), Close::Exited(0));
        child.kill().await.expect("kill");
    });
}

/// The state letter of `pid` (`R`, `S`, `Z`, ...) while it is a child of
/// this process; `None` once it is gone (reaped, its number maybe reused).
fn child_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, split after ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid: u32 = fields.next()?.parse().ok()?;
    (ppid == std::process::id()).then_some(state)
}

/// Waits until `pid` is no longer a child of ours (reaped). No event tells
/// us a dropped child was reaped, so look, letting the runtime run between
/// looks (bounded by a count, and by `run`'s time limit).
async fn until_reaped(pid: u32) {
    for _ in 0..2000 {
        if child_state(pid).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pid {pid} is still our child: {:?}", child_state(pid));
}

#[test]
fn a_child_dropped_unwaited_is_reaped_not_left_a_zombie() {
    run(async {
        let child = Command::new("/bin/true").spawn().expect("spawn");
        let pid = child.id().expect("running");
        drop(child);
        // tokio's driver reaps the orphan when it exits.
        until_reaped(pid).await;
    });
}

#[test]
fn a_child_with_a_descriptor_dropped_unwaited_is_reaped_not_left_a_zombie() {
    run(async {
        // spawn-core's own posix_spawn on Linux: its reaper thread, not
        // tokio's, reaps the orphan.
        let (_read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let child = Command::new("/bin/true")
            .inherit_fd(3, write)
            .spawn()
            .expect("spawn");
        let pid = child.id().expect("running");
        drop(child);
        until_reaped(pid).await;
    });
}

#[test]
fn kill_on_drop_kills_a_child_with_a_descriptor() {
    run(async {
        let (_read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let child = Command::new("sleep")
            .arg("100")
            .inherit_fd(3, write)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let fd = pidfd(child.id().expect("running") as i32);
        drop(child);
        assert!(
            terminates_within(&fd, 10_000),
            "the dropped child still runs"
        );
    });
}

#[test]
fn a_child_with_a_descriptor_in_a_runtime_without_io_is_killed_and_reported() {
    // Our own posix_spawn succeeds, then tokio panics registering the pidfd
    // (no I/O driver): the spawn is an error and no child is left.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("rt");
    let _entered = runtime.enter();
    let (_read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    // An argument no other test uses: the tests share this process.
    let spawned = Command::new("sleep")
        .arg("123.4")
        .inherit_fd(3, write)
        .spawn();
    assert!(
        matches!(spawned, Err(Error::SpawnPanicked { .. })),
        "{spawned:?}"
    );
    let me = std::process::id().to_string();
    let sleeping: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .to_owned();
            (cmdline == b"sleep\x00123.4\x00" && ppid == me).then_some(stat)
        })
        .collect();
    assert!(sleeping.is_empty(), "left behind: {sleeping:?}");
}
