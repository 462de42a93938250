//! Spawn a program and await its close, safely and fast: the Rust answer to
//! Node's `child_process.spawn` (and the seed's `spawnProcess`), shaped like
//! `tokio::process` where the two overlap.
//!
//! - [`Command`] is the builder (`&mut self` setters, so a command can be
//!   spawned again): program and arguments, working directory, environment
//!   (set, remove, clear), `argv[0]`, [`Stdio`] per stream (inherit by
//!   default, piped, null, a file, or another child's pipe end), a process
//!   group or a new session, uid/gid, extra descriptors at chosen numbers
//!   ([`Command::inherit_fd`]) and a parent-death signal.
//!   [`Command::shell`] runs a script with `/bin/sh -c` and passes the
//!   arguments as positional parameters, never spliced into the script.
//! - [`Command::spawn`] returns a [`Child`] or an [`Error`] naming the program
//!   (not found, permission denied, bad working directory, ...);
//!   [`Command::status`] and [`Command::output`] run it to its close, as
//!   tokio's do, and [`Command::output_capped`] bounds the capture (Node's
//!   `maxBuffer`).
//! - [`Child::wait`] returns a [`Close`]: exactly one of an exit code or a
//!   signal, with its name (`SIGKILL`), like the seed's `{code, signal}`.
//! - [`Child::kill`] and [`Child::start_kill`] (tokio's), [`Child::signal`]
//!   (any [`Signal`]), [`Child::signal_group`], [`Child::stop`] (signal,
//!   grace, SIGKILL) and [`Child::wait_timeout`].
//! - [`Command::status_blocking`]: the same without a runtime (`spawnSync`).
//!
//! ```
//! use spawn_core::{Close, Command};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), spawn_core::Error> {
//! // "$1" is a positional parameter: the argument is never parsed as code.
//! let close = Command::shell("exit \"$1\"").arg("3").status().await?;
//! assert_eq!(close, Close::Exited(3));
//! assert_eq!(close.to_json(), r#"{"code":3,"signal":null}"#);
//!
//! // A pipeline: `seq 1 1000 | wc -l`.
//! let mut seq = Command::new("seq").args(["1", "1000"]).stdout(spawn_core::Stdio::piped()).spawn()?;
//! let wc = Command::new("wc").arg("-l").stdin(seq.take_stdout().expect("piped")).output().await?;
//! assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "1000");
//! # assert!(seq.wait().await?.success());
//! # Ok(())
//! # }
//! ```
//!
//! # Names
//! `Command`, `Child`, `Stdio` and `Output` are the names std and tokio use,
//! on purpose: a program moves from `tokio::process` by changing its `use`
//! line, and the methods it calls keep their names and meanings (`output`
//! captures everything, `id` ends with the child, `kill` sends SIGKILL and
//! waits). A module that needs std's types beside ours imports one of the
//! two by its path (`std::process::Command`) or renames it
//! (`use spawn_core::Command as Spawn;`), as with tokio. No type of a
//! dependency other than tokio's pipe ends is part of the API: [`Signal`] is
//! the crate's own.
//!
//! # Speed
//! Every spawn that needs no code between `fork` and `exec` takes
//! `posix_spawn`, a vfork-like clone that shares the parent's memory until
//! `exec`, so the parent's image is never copied (its page tables, the
//! copy-on-write faults of both sides): std's own, through
//! `std::process::Command` and `tokio::process` (whose reaper collects
//! those children), for plain spawns; and on Linux spawn-core's own for
//! [`Command::inherit_fd`] and [`Command::new_session`] (the spawn's file
//! actions place the descriptors, the child is awaited through its pidfd,
//! and a dropped handle's child is reaped by a process-wide reaper thread).
//! Only [`Command::parent_death_signal`] installs a `pre_exec` hook, and
//! `uid`/`gid` make std fork; so do all three options elsewhere, and on a
//! Linux without `pidfd_open` (5.3) or whose C library lacks
//! `posix_spawn_file_actions_addchdir_np` (glibc 2.29, musl 1.1.24).
//!
//! # Caveats
//! - **Dropping a [`Child`] does not kill it** (like std and Node): the child
//!   runs on, and is reaped when it exits, so it never stays a zombie:
//!   tokio's orphan queue reaps the children std spawned (tokio's driver
//!   does the reaping: such a child that exits after the last runtime of
//!   the process is gone stays a zombie until the process exits), and
//!   spawn-core's reaper thread those of its own `posix_spawn`. Set [`Command::kill_on_drop`] to send SIGKILL on drop
//!   instead. Grandchildren are never reaped by us: use a process group and
//!   [`Child::signal_group`] to stop them.
//! - **The parent-death signal is per thread.** Linux fires
//!   `PR_SET_PDEATHSIG` when the *thread* that forked the child exits, not
//!   when the process does. Spawning from a short-lived thread (tokio's
//!   blocking pool retires idle threads) would kill the child early. So every
//!   spawn with [`Command::parent_death_signal`] is forked from one
//!   process-wide spawner thread that never exits: the signal then means
//!   "the parent process died", whichever thread called `spawn`. The race
//!   where the parent dies before the child's `prctl` is closed by comparing
//!   `getppid()` with the parent's pid read before the fork. A child that
//!   sets its own signal after `exec` needs the same thread, without the
//!   hook: [`Command::lasting_parent_thread`].
//! - [`Command::inherit_fd`] targets are checked in the parent (3 or more,
//!   once each, below `RLIMIT_NOFILE`) and placed by `dup2` in the child
//!   (`posix_spawn`'s file actions, or the hook); any mapping works
//!   (sources and targets may overlap: a source at a target's number is
//!   copied elsewhere first). On the fork path, target numbers free in the
//!   parent are held by close-on-exec placeholders while the spawn runs, so
//!   std's exec-error pipe never lands on one (which would hide a failed
//!   exec). The parent's copies are closed after the spawn.
//! - [`Child::signal`] does nothing once the child was reaped, so it never
//!   signals a process that reused the pid; [`Child::id`] is `None` then.
//! - [`Child::signal_group`] signals the group the child leads, even after
//!   the leader was reaped (the group lives while any member does). Once the
//!   leader is reaped *and* the group is empty, the number is free for the
//!   kernel to reuse: do not signal a group long after its last member may
//!   have exited.
//! - [`Child::wait_timeout`] sends the chosen signal when the timeout expires,
//!   then SIGKILL after [`TIMEOUT_GRACE`] if the child ignores it.
//! - The async API needs a tokio runtime with its I/O and time drivers
//!   (`Runtime` built with `enable_all`); outside one, `spawn` returns
//!   [`Error::NoRuntime`], and in one built without its I/O driver
//!   [`Error::SpawnPanicked`] (tokio panics there; the panic is caught).
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

mod batch;
mod child;
mod close;
mod command;
mod error;
mod hook;
#[cfg(target_os = "linux")]
mod pidfd;
#[cfg(target_os = "linux")]
mod posix;
#[cfg(target_os = "linux")]
mod reaper;
mod signal;
mod spawner;
mod stdio;

pub use batch::spawn_all;
pub use child::{Child, TIMEOUT_GRACE};
pub use close::Close;
pub use command::{Command, Output};
pub use error::{Error, Stream};
pub use signal::{Signal, UnknownSignal};
pub use stdio::Stdio;
/// tokio's pipe ends, as [`Child::take_stdout`] and friends return them;
/// each converts into a [`Stdio`] for another child.
pub use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

// The Rust snippets of the README and of docs/spawn.md are compiled (and run,
// unless marked `no_run`) as doc tests, so the documentation cannot drift
// from the API; `cargo xtask tidy` checks that every such file is included.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/spawn.md")]
struct SpawnDocDoctests;
