//! Creating the socketpair, handing one end to a child process, and adopting
//! the inherited end in the worker.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::sys;

/// The environment variable that names the worker's channel descriptor
/// (Node.js: `NODE_CHANNEL_FD`).
pub const CHANNEL_FD_ENV: &str = "CLUSTER_IPC_FD";

/// The descriptor number [`pass_to_child`] uses unless told otherwise.
pub const DEFAULT_CHILD_FD: RawFd = 3;

/// Creates a connected pair of channel ends: `(primary end, child end)`.
///
/// Both are `AF_UNIX`/`SOCK_STREAM` sockets with close-on-exec set, so
/// neither leaks into an unrelated child; [`pass_to_child`] makes the child
/// end visible to one chosen child.
pub fn channel_pair() -> Result<(OwnedFd, OwnedFd), Error> {
    sys::socketpair()
}

/// Arranges for `child_end` to appear in the child spawned by `cmd` as
/// descriptor `target` (>= 3), and sets [`CHANNEL_FD_ENV`] to `target`.
///
/// The descriptor stays close-on-exec in this process; in the forked child,
/// just before `exec`, it is `dup2`ed onto `target`, which clears
/// close-on-exec there only. `cmd` owns `child_end` afterwards (drop the
/// command after spawning to close the primary's copy). Works with
/// `tokio::process::Command` through `as_std_mut()`.
///
/// When `target` is free in this process, `cmd` holds it with a
/// close-on-exec copy of `child_end` until it is dropped: std reports a
/// failed `exec` through a pipe made at spawn time at the lowest free
/// numbers, and that pipe must not land on `target`, where the hook's
/// `dup2` would close it (the spawn of a missing program would then seem to
/// succeed).
///
/// `target` must not be a descriptor the child needs for anything else.
pub fn pass_to_child(
    cmd: &mut std::process::Command,
    child_end: OwnedFd,
    target: RawFd,
) -> Result<(), Error> {
    if target < 3 {
        return Err(Error::InvalidInheritedChannel {
            var: CHANNEL_FD_ENV,
            reason: "target descriptor must be 3 or above (0-2 are stdio)",
            source: None,
        });
    }
    cmd.env(CHANNEL_FD_ENV, target.to_string());
    let child_end = hold_number(child_end, target);
    // SAFETY: the hook runs in the forked child before exec and calls only
    // dup2/fcntl, which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || sys::dup_onto_in_child(child_end.as_raw_fd(), target));
    }
    Ok(())
}

/// `fd` itself, or a close-on-exec copy of it at number `target` when that
/// number is free, so that nothing else can be opened there while the
/// returned descriptor lives.
fn hold_number(fd: OwnedFd, target: RawFd) -> OwnedFd {
    match sys::dup_cloexec_at_least(fd.as_fd(), target) {
        Ok(copy) if copy.as_raw_fd() == target => copy,
        // The number is taken (the copy landed higher and is closed here),
        // or no descriptor is left: the original serves, as before.
        Ok(_) | Err(_) => fd,
    }
}

static ADOPTED: AtomicBool = AtomicBool::new(false);

/// In a worker: adopts the channel end named by [`CHANNEL_FD_ENV`].
///
/// Returns `Ok(None)` when the variable is absent (this process is not a
/// worker). Otherwise checks that the descriptor is 3 or above (0-2 are
/// stdio, which [`pass_to_child`] refuses too) and an open `AF_UNIX` stream
/// socket, sets close-on-exec on it (so the worker's own children do not
/// inherit it), and returns it owned. It only reads the environment: the
/// variable stays set, and a second call returns `Ok(None)` (the descriptor
/// is adopted once per process).
///
/// # Safety
///
/// The descriptor the variable names must be this process's channel end,
/// handed to it by its parent ([`pass_to_child`]), and owned by nothing else
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
        // What `pass_to_child` refuses to set up: adopting stdin, stdout or
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
