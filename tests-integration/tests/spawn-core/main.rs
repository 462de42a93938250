//! Integration tests of `spawn-core` that need a helper binary of this crate
//! (`spawn-core-pdeathsig-helper`).

use std::future::Future;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use spawn_core::{Command, Signal, Stdio};
use tokio::io::BufReader;

/// Runs `test` on a current-thread runtime, bounded in time.
fn run<F: Future<Output = ()>>(test: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), test)
            .await
            .expect("test timed out");
    });
}

/// Reads one line from a child's piped stdout.
async fn read_line(reader: &mut BufReader<tokio::process::ChildStdout>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read a line");
    line.trim_end().to_owned()
}

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
fn parent_death_signal_kills_the_child_when_the_parent_dies() {
    dies_with_the_parent_not_the_thread(None);
}

/// A child that sets its own parent-death signal (as a cluster worker
/// does), spawned with `lasting_parent_thread` from a thread that exits:
/// it lives while the process does, and dies with it.
#[test]
fn a_lasting_parent_thread_ties_a_child_that_sets_its_own_signal_to_the_process() {
    dies_with_the_parent_not_the_thread(Some("lasting"));
}

fn dies_with_the_parent_not_the_thread(mode: Option<&str>) {
    run(async {
        // The helper spawns its child from a thread that exits at once,
        // then lives on until killed.
        let mut helper = Command::new(env!("CARGO_BIN_EXE_spawn-core-pdeathsig-helper"))
            .args(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("helper");
        let mut stdout = BufReader::new(helper.take_stdout().expect("stdout"));
        let grandchild: i32 = read_line(&mut stdout).await.parse().expect("a pid");
        let grandchild = pidfd(grandchild);
        assert!(
            !terminates_within(&grandchild, 300),
            "the child died with the spawning thread, not the process"
        );
        let close = helper.kill().await.expect("kill the helper");
        assert_eq!(close.signal(), Some(Signal::SIGKILL));
        assert!(
            terminates_within(&grandchild, 10_000),
            "the child outlived its parent"
        );
    });
}
