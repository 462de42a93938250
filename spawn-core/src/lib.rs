//! Spawn a program and await its close, safely and fast: the Rust answer to
//! Node's `child_process.spawn` (and the seed's `spawnProcess`).
//!
//! - [`Command`] is the builder: program and arguments, working directory,
//!   environment (set, remove, clear), `argv[0]`, [`Stdio`] per stream
//!   (inherit by default, piped, null, a file), a process group or a new
//!   session, uid/gid, extra descriptors at chosen numbers
//!   ([`Command::inherit_fd`]) and a parent-death signal.
//!   [`Command::shell`] runs a script with `/bin/sh -c` and passes the
//!   arguments as positional parameters, never spliced into the script.
//! - [`Command::spawn`] returns a [`Child`] or an [`Error`] naming the program
//!   (not found, permission denied, bad working directory, ...).
//! - [`Child::wait`] returns a [`Close`]: exactly one of an exit code or a
//!   signal, with its name (`SIGKILL`), like the seed's `{code, signal}`.
//! - [`Child::kill`], [`Child::kill_group`], [`Child::stop`] (signal, grace,
//!   SIGKILL), [`Child::wait_timeout`], and capped capture with
//!   [`Command::output`] / [`Child::output`] (Node's `maxBuffer`).
//! - [`Command::status_blocking`]: the same without a runtime (`spawnSync`).
//!
//! ```
//! use spawn_core::{Close, Command};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), spawn_core::Error> {
//! // "$1" is a positional parameter: the argument is never parsed as code.
//! let mut child = Command::shell("exit \"$1\"").arg("3").spawn()?;
//! let close = child.wait().await?;
//! assert_eq!(close, Close::Exited(3));
//! assert_eq!(close.to_json(), r#"{"code":3,"signal":null}"#);
//! # Ok(())
//! # }
//! ```
//!
//! # Speed
//! The crate builds on `std::process::Command` and `tokio::process` (whose
//! reaper it reuses). When no option needs code between `fork` and `exec`, no
//! `pre_exec` hook is installed and std spawns with `posix_spawn` (a vfork-like
//! clone). Only [`Command::inherit_fd`], [`Command::new_session`] and
//! [`Command::parent_death_signal`] install a hook; `uid`/`gid` make std fork.
//!
//! # Caveats
//! - **Dropping a [`Child`] does not kill it** (like std and Node): the child
//!   runs on, and tokio's orphan queue reaps it when it exits, so it never
//!   stays a zombie (tokio's driver does the reaping: a child that exits
//!   after the last runtime of the process is gone stays a zombie until the
//!   process exits). Set [`Command::kill_on_drop`] to send SIGKILL on drop
//!   instead. Grandchildren are never reaped by us: use a process group and
//!   [`Child::kill_group`] to stop them.
//! - **The parent-death signal is per thread.** Linux fires
//!   `PR_SET_PDEATHSIG` when the *thread* that forked the child exits, not
//!   when the process does. Spawning from a short-lived thread (tokio's
//!   blocking pool retires idle threads) would kill the child early. So every
//!   spawn with [`Command::parent_death_signal`] is forked from one
//!   process-wide spawner thread that never exits: the signal then means
//!   "the parent process died", whichever thread called `spawn`. The race
//!   where the parent dies before the child's `prctl` is closed by comparing
//!   `getppid()` with the parent's pid read before the fork.
//! - [`Command::inherit_fd`] targets are placed by `dup2` in the child; any
//!   mapping works (sources and targets may overlap). While the spawn runs,
//!   target numbers free in the parent are held by close-on-exec
//!   placeholders, so std's exec-error pipe never lands on one (which would
//!   hide a failed exec). The parent's copies are closed after the spawn.
//! - [`Child::kill`] does nothing once the child was reaped, so it never
//!   signals a process that reused the pid; [`Child::pid`] may be stale then.
//! - [`Child::kill_group`] signals the group the child leads, even after the
//!   leader was reaped (the group lives while any member does). Once the
//!   leader is reaped *and* the group is empty, the number is free for the
//!   kernel to reuse: do not signal a group long after its last member may
//!   have exited.
//! - [`Child::wait_timeout`] sends the chosen signal when the timeout expires,
//!   then SIGKILL after [`TIMEOUT_GRACE`] if the child ignores it.
//! - The async API needs a tokio runtime with its I/O and time drivers
//!   (`Runtime` built with `enable_all`); outside one, `spawn` returns
//!   [`Error::NoRuntime`].
//!
//! # Platforms
//!
//! Unix only (`pre_exec`, process groups, signals; a `compile_error!`
//! elsewhere), developed and tested on Linux. The parent-death signal
//! ([`Command::parent_death_signal`]) is Linux only: elsewhere a spawn that
//! asks for it fails with an `Unsupported` I/O error.
#![deny(missing_docs)]

#[cfg(not(unix))]
compile_error!("spawn-core supports Unix only (Linux for the parent-death signal)");

mod child;
mod close;
mod command;
mod error;
mod hook;
mod spawner;

pub use child::{Child, TIMEOUT_GRACE};
pub use close::Close;
pub use command::{Command, Output, Stdio, spawn_all};
pub use error::{Error, Stream};
pub use nix::sys::signal::Signal;

// The Rust snippets of the README and of docs/spawn.md are compiled (and run,
// unless marked `no_run`) as doc tests, so the documentation cannot drift
// from the API; `cargo xtask tidy` checks that every such file is included.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/spawn.md")]
struct SpawnDocDoctests;
