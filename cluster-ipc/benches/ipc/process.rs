//! Processes and affinity: the peer re-executed with its channel end, CPU
//! pinning, the runtime and the endpoint of each side.

use super::*;

/// A peer process, and the runtime that spawned it and reaps it (spawn-core
/// spawns through tokio; the measuring runtime is a separate one).
pub(crate) struct Child {
    rt: tokio::runtime::Runtime,
    child: spawn_core::Child,
}

/// Re-executes the bench as a peer, its channel end placed at the
/// conventional number by spawn-core's `inherit_fd`, as a cluster does.
pub(crate) fn spawn_peer(args: &[&str]) -> anyhow::Result<(Child, OwnedFd)> {
    let (primary, child_end) = channel_pair()?;
    let mut cmd = spawn_core::Command::new(std::env::current_exe()?);
    cmd.arg("--peer")
        .args(args)
        .inherit_fd(DEFAULT_CHILD_FD, child_end)
        .env(CHANNEL_FD_ENV, DEFAULT_CHILD_FD.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let child = rt
        .block_on(async { cmd.spawn() })
        .context("spawning the peer")?;
    Ok((Child { rt, child }, primary))
}

pub(crate) fn reap(mut peer: Child) -> anyhow::Result<()> {
    let close = peer.rt.block_on(peer.child.wait())?;
    if !close.success() {
        bail!("peer closed with {close:?}");
    }
    Ok(())
}

pub(crate) fn affinity() -> anyhow::Result<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-pointer of the given size.
    let ret = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    Ok(set)
}

pub(crate) fn set_affinity(set: &libc::cpu_set_t) -> anyhow::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the given size.
    let ret = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// Pins this thread (and the peers it forks later) to CPU 0, as `taskset -c 0`.
pub(crate) fn pin_to_cpu0() -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 is within the set's bounds.
    unsafe { libc::CPU_SET(0, &mut set) };
    set_affinity(&set)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?)
}

pub(crate) async fn open(fd: OwnedFd) -> anyhow::Result<(Sender, Receiver)> {
    let (tx, rx, _) = handshake(fd, Handshake::for_this_process(1), Config::default()).await?;
    Ok((tx, rx))
}

pub(crate) fn small_frame_len() -> usize {
    8 + postcard::to_allocvec(&Small {
        seq: 0,
        text: TEXT.into(),
    })
    .map_or(0, |v| v.len())
}
