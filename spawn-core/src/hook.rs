//! The `pre_exec` hook: the only code of the crate that runs in the child
//! between `fork` and `exec`. It is installed only when an option needs it
//! (extra descriptors, a new session, a parent-death signal), so that every
//! other spawn keeps std's `posix_spawn` fast path.
//!
//! Everything here is async-signal-safe: no allocation, no lock, only raw
//! system calls on memory prepared in the parent.

use std::io;
use std::os::fd::RawFd;

/// One descriptor to place in the child: `src` (open in the parent) becomes
/// `target` in the child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdMove {
    pub(crate) src: RawFd,
    pub(crate) target: RawFd,
    /// The temporary copy made in the child, at a number that is no target.
    tmp: RawFd,
}

impl FdMove {
    pub(crate) fn new(src: RawFd, target: RawFd) -> Self {
        FdMove {
            src,
            target,
            tmp: -1,
        }
    }
}

/// What the child does before `exec`, prepared (and allocated) in the parent.
#[derive(Debug, Default)]
pub(crate) struct Hook {
    pub(crate) fds: Vec<FdMove>,
    pub(crate) new_session: bool,
    /// The signal number, and the parent's pid read before the fork.
    pub(crate) parent_death: Option<(libc::c_int, libc::pid_t)>,
}

impl Hook {
    pub(crate) fn is_needed(&self) -> bool {
        !self.fds.is_empty() || self.new_session || self.parent_death.is_some()
    }

    /// Runs in the child after `fork`, before `exec`.
    ///
    /// # Safety
    /// Must only be called in the forked child, where only async-signal-safe
    /// functions may be used. This function itself only calls `setsid`,
    /// `prctl`, `getppid`, `getpid`, `kill`, `fcntl` and `dup2`, and does
    /// not allocate.
    pub(crate) unsafe fn run_in_child(&mut self) -> io::Result<()> {
        if self.new_session {
            // SAFETY: setsid is async-signal-safe and takes no pointer.
            if unsafe { libc::setsid() } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some((signo, parent)) = self.parent_death {
            set_parent_death_signal(signo, parent)?;
        }
        self.place_fds()
    }

    /// Places every source at its target, even when a source's number is
    /// another move's target: first every source is copied to a number that
    /// is no target (close-on-exec copies, so they vanish at exec), then each
    /// copy is `dup2`ed onto its target (which clears close-on-exec there).
    ///
    /// A copy that lands on a target number is left there (the `dup2` onto
    /// that target replaces it) and the copy is made again: each such miss
    /// fills one target number, so there are at most as many misses as
    /// moves. No number is computed from a target, so no target (the parent
    /// checked them against the descriptor limit) can overflow here.
    fn place_fds(&mut self) -> io::Result<()> {
        for i in 0..self.fds.len() {
            let src = self.fds[i].src;
            let tmp = loop {
                // SAFETY: fcntl(F_DUPFD_CLOEXEC) is async-signal-safe; `src`
                // is a descriptor the parent kept open across the fork.
                let tmp = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 3) };
                if tmp == -1 {
                    return Err(io::Error::last_os_error());
                }
                if !self.fds.iter().any(|m| m.target == tmp) {
                    break tmp;
                }
            };
            self.fds[i].tmp = tmp;
        }
        for m in &self.fds {
            // SAFETY: dup2 is async-signal-safe; `tmp` is open (above) and is
            // no target, so no earlier dup2 replaced it.
            if unsafe { libc::dup2(m.tmp, m.target) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(signo: libc::c_int, parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer argument and is
    // async-signal-safe (a plain system call).
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signo as libc::c_ulong) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // The parent may have died between the fork and the prctl: then the
    // child has been re-parented and the signal will never come. Deliver it
    // now.
    // SAFETY: getppid, getpid and kill are async-signal-safe system calls.
    unsafe {
        if libc::getppid() != parent {
            libc::kill(libc::getpid(), signo);
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_signo: libc::c_int, _parent: libc::pid_t) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
