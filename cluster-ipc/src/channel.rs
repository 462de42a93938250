//! Creating the socketpair, and adopting the inherited end in the worker.
//! Placing the child end in a child process is not done here: a spawner
//! that can place descriptors does it (`spawn_core::Command::inherit_fd`, or
//! any `pre_exec` `dup2`), and sets [`CHANNEL_FD_ENV`].

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::Error;
use crate::sys;

/// The environment variable that names the worker's channel descriptor
/// (Node.js: `NODE_CHANNEL_FD`).
pub const CHANNEL_FD_ENV: &str = "CLUSTER_IPC_FD";

/// The descriptor number a primary conventionally places the child end at
/// (any number 3 or above works, named in [`CHANNEL_FD_ENV`]).
pub const DEFAULT_CHILD_FD: RawFd = 3;

/// Creates a connected pair of channel ends: `(primary end, child end)`.
///
/// Both are `AF_UNIX`/`SOCK_STREAM` sockets with close-on-exec set, so
/// neither leaks into an unrelated child. To hand the child end to one
/// chosen child, place it at a number of 3 or above in that child (for
/// example `spawn_core::Command::inherit_fd(DEFAULT_CHILD_FD, child_end)`,
/// which `dup2`s it there just before `exec`, clearing close-on-exec in the
/// child only) and set [`CHANNEL_FD_ENV`] to that number.
pub fn channel_pair() -> Result<(OwnedFd, OwnedFd), Error> {
    sys::socketpair()
}

static ADOPTED: AtomicBool = AtomicBool::new(false);

/// In a worker: adopts the channel end named by [`CHANNEL_FD_ENV`].
///
/// Returns `Ok(None)` when the variable is absent (this process is not a
/// worker). Otherwise checks that the descriptor is 3 or above (0-2 are
/// stdio) and an open `AF_UNIX` stream
/// socket, sets close-on-exec on it (so the worker's own children do not
/// inherit it), and returns it owned. It only reads the environment: the
/// variable stays set, and a second call returns `Ok(None)` (the descriptor
/// is adopted once per process).
///
/// # Safety
///
/// The descriptor the variable names must be this process's channel end,
/// handed to it by its parent (for example with `spawn-core`'s
/// `Command::inherit_fd`), and owned by nothing else
/// in the process. The variable alone does not prove that: a program the
/// worker starts inherits the variable too (it is not removed), while the
/// descriptor is close-on-exec once adopted, so in that program the number
/// names whatever was opened there next, or nothing. Call it only in a
/// process that knows it was launched with the channel, for example by a
/// second variable naming its parent's pid, checked against
/// `std::os::unix::process::parent_id()` (what `cluster-core` does, with a
/// per-launch token checked in the [`Handshake`](crate::Handshake)).
pub unsafe fn from_env() -> Result<Option<OwnedFd>, Error> {
    let Some(value) = std::env::var_os(CHANNEL_FD_ENV) else {
        return Ok(None);
    };
    if ADOPTED.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let invalid = |reason, source| Error::InvalidInheritedChannel {
        var: CHANNEL_FD_ENV,
        reason,
        source,
    };
    let fd: RawFd = value
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| invalid("not a descriptor number", None))?;
    if fd < 3 {
        // Never a channel's place: adopting stdin, stdout or
        // stderr as the channel would close it when the channel is dropped.
        return Err(invalid(
            "descriptor must be 3 or above (0-2 are stdio)",
            None,
        ));
    }
    sys::check_unix_stream(fd).map_err(|(reason, source)| invalid(reason, source))?;
    sys::set_cloexec_raw(fd).map_err(|e| invalid("cannot set close-on-exec", Some(e)))?;
    // SAFETY: the descriptor is open (checked above); the caller guarantees
    // it was handed to this process for the channel and that nothing else
    // owns it; ADOPTED makes sure we wrap it only once.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What [`inherited_peer`] saw: the peer of an inherited channel end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InheritedPeer {
    /// The pid `SO_PEERCRED` names: for a pair made by [`channel_pair`],
    /// the process that made it (the primary), even once it is gone.
    pub pid: u32,
    /// Whether the other end was closed when looked at: no process held it
    /// any more.
    pub closed: bool,
    /// The inherited descriptor, looked at, never owned.
    fd: RawFd,
}

impl InheritedPeer {
    /// Whether the other end is closed, or closes within `timeout` (a
    /// `poll` for `POLLHUP`, bounded; an error counts as not closed).
    ///
    /// A process that made the channel can die while a copy of its end
    /// still lives on for a moment elsewhere: a child it was starting, in
    /// the instant between `posix_spawn`'s clone and the `exec` that closes
    /// the close-on-exec descriptors. One look would then see the end open;
    /// a bounded wait sees it close.
    pub fn closes_within(&self, timeout: Duration) -> bool {
        self.closed || sys::wait_hangup(self.fd, timeout).unwrap_or(false)
    }
}

/// In a process started with a channel end: who made the channel named by
/// [`CHANNEL_FD_ENV`], and whether its other end is closed, looked at
/// without adopting the descriptor (it stays where it is, as it was).
/// `None` when the variable is absent, or names a number below 3 or no
/// open `AF_UNIX` stream socket.
///
/// A worker whose primary died before it asked for its role has another
/// parent by then, like a program a worker started: the channel tells them
/// apart (`cluster-core` uses it so; see its `role` module).
pub fn inherited_peer() -> Option<InheritedPeer> {
    let fd: RawFd = std::env::var_os(CHANNEL_FD_ENV)?
        .to_str()?
        .parse()
        .ok()
        .filter(|fd| *fd >= 3)?;
    sys::check_unix_stream(fd).ok()?;
    let (pid, closed) = sys::peer_of_raw(fd).ok()?;
    Some(InheritedPeer { pid, closed, fd })
}

#[cfg(test)]
mod tests;
