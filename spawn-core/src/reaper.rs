//! The reaper thread: one process-wide thread, started on first use, that
//! reaps the children of the `posix_spawn` path whose [`Child`] was dropped
//! before they ended (tokio's orphan queue does the same for the children
//! tokio spawned). It sleeps in `poll` on their pidfds and on a wake-up
//! pipe, so it costs nothing while no orphan ends.
//!
//! [`Child`]: crate::Child

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::posix;

/// The orphans handed over and not yet taken by the thread, and the write
/// end of its wake-up pipe (`None` until the thread runs).
struct Orphans {
    queue: Vec<(u32, OwnedFd)>,
    wake: Option<std::fs::File>,
}

static ORPHANS: Mutex<Orphans> = Mutex::new(Orphans {
    queue: Vec::new(),
    wake: None,
});

/// Reaps `pid`, a child of ours whose handle is gone, once it ends. If no
/// thread can be started, the orphan waits in the queue for the next call.
pub(crate) fn adopt(pid: u32, pidfd: OwnedFd) {
    if !matches!(posix::try_reap(pid), Ok(None)) {
        // Reaped now, or not ours to reap any more.
        return;
    }
    let mut orphans = ORPHANS.lock().unwrap_or_else(PoisonError::into_inner);
    orphans.queue.push((pid, pidfd));
    if orphans.wake.is_none() {
        orphans.wake = start().ok();
    }
    if let Some(wake) = &mut orphans.wake {
        // A full pipe already holds a wake-up: nothing is lost.
        let _ = wake.write(&[1]);
    }
}

/// Starts the thread; returns the write end of its wake-up pipe.
fn start() -> io::Result<std::fs::File> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    std::thread::Builder::new()
        .name("spawn-core-reaper".into())
        .spawn(move || run(std::fs::File::from(read)))?;
    Ok(std::fs::File::from(write))
}

/// The thread: takes the new orphans, reaps the ended ones, then sleeps
/// until one of them ends or another comes.
fn run(mut wake: std::fs::File) {
    let mut watched: Vec<(u32, OwnedFd)> = Vec::new();
    loop {
        watched.append(&mut ORPHANS.lock().unwrap_or_else(PoisonError::into_inner).queue);
        // Kept while it runs; an error means it is not ours to reap.
        watched.retain(|(pid, _)| matches!(posix::try_reap(*pid), Ok(None)));
        let mut fds: Vec<PollFd<'_>> = std::iter::once(wake.as_fd())
            .chain(watched.iter().map(|(_, pidfd)| pidfd.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        // EINTR (or anything else) only means: look again.
        let _ = poll(&mut fds, PollTimeout::NONE);
        drop(fds);
        let mut bytes = [0; 64];
        while matches!(wake.read(&mut bytes), Ok(n) if n > 0) {}
    }
}
