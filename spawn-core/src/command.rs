//! [`Command`]: the builder. It wraps `std::process::Command` so that std's
//! `posix_spawn` fast path is kept whenever no option needs a `pre_exec`
//! hook, and hands the spawn to `tokio::process` (whose reaper collects every
//! child, waited for or not).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::Signal;

use crate::hook::{FdMove, Hook};
use crate::{Child, Close, Error, spawner};

/// How one standard stream of the child is connected. The default is
/// [`Stdio::Inherit`], like the seed's `stdio: "inherit"`.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Stdio {
    /// The child shares the parent's stream.
    #[default]
    Inherit,
    /// A pipe to the parent, taken with [`Child::take_stdout`] and friends.
    Piped,
    /// `/dev/null`.
    Null,
    /// An open file.
    File(File),
}

impl Stdio {
    fn into_std(self) -> process::Stdio {
        match self {
            Stdio::Inherit => process::Stdio::inherit(),
            Stdio::Piped => process::Stdio::piped(),
            Stdio::Null => process::Stdio::null(),
            Stdio::File(file) => process::Stdio::from(file),
        }
    }
}

/// A description of one child process to start: the program, its arguments,
/// environment, working directory, stdio, and process attributes.
///
/// A `Command` is spent by [`spawn`](Command::spawn) (and
/// [`output`](Command::output), [`status_blocking`](Command::status_blocking)):
/// the descriptors it hands to the child are closed in the parent once the
/// child has them.
#[derive(Debug)]
pub struct Command {
    std: process::Command,
    program: OsString,
    cwd: Option<PathBuf>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    fds: Vec<(RawFd, OwnedFd)>,
    process_group: bool,
    new_session: bool,
    parent_death: Option<Signal>,
    kill_on_drop: bool,
}

impl Command {
    /// A command that runs `program` (looked up on `PATH` when it has no
    /// slash) with no arguments, the parent's environment, working directory
    /// and stdio.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref().to_owned();
        Command {
            std: process::Command::new(&program),
            program,
            cwd: None,
            stdin: None,
            stdout: None,
            stderr: None,
            fds: Vec::new(),
            process_group: false,
            new_session: false,
            parent_death: None,
            kill_on_drop: false,
        }
    }

    /// A command that runs `script` with `/bin/sh -c`. Arguments added with
    /// [`arg`](Command::arg) become the script's positional parameters (`$1`,
    /// `$2`, `"$@"`; `$0` is `sh`): they are never spliced into the script
    /// text, so no argument can inject shell code (Node's `shell: true` joins
    /// them into the script, which can).
    pub fn shell(script: impl AsRef<OsStr>) -> Self {
        let mut command = Command::new("/bin/sh");
        command.std.arg("-c").arg(script).arg("sh");
        command
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.std.arg(arg);
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets `argv[0]` (by default the program as given).
    pub fn argv0(mut self, argv0: impl AsRef<OsStr>) -> Self {
        self.std.arg0(argv0);
        self
    }

    /// Sets the working directory (by default the parent's). A directory
    /// that does not exist gives [`Error::BadCwd`].
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_path_buf();
        self.std.current_dir(&dir);
        self.cwd = Some(dir);
        self
    }

    /// Sets one environment variable (by default the parent's environment
    /// is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.std.env(key, value);
        self
    }

    /// Removes one environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.std.env_remove(key);
        self
    }

    /// Clears the environment: the child sees only variables set after this.
    pub fn env_clear(mut self) -> Self {
        self.std.env_clear();
        self
    }

    /// Connects standard input (default: [`Stdio::Inherit`]).
    pub fn stdin(mut self, stdio: Stdio) -> Self {
        self.stdin = Some(stdio);
        self
    }

    /// Connects standard output (default: [`Stdio::Inherit`]).
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.stdout = Some(stdio);
        self
    }

    /// Connects standard error (default: [`Stdio::Inherit`]).
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.stderr = Some(stdio);
        self
    }

    /// Puts the child in a new process group that it leads, so that
    /// [`Child::kill_group`] reaches its descendants too (default: off, the
    /// child stays in the parent's group). Keeps the `posix_spawn` path.
    pub fn process_group(mut self) -> Self {
        self.process_group = true;
        self
    }

    /// Starts the child in a new session (`setsid`), detached from the
    /// parent's controlling terminal, leading a new process group: Node's
    /// `detached: true` (default: off). Needs a `pre_exec` hook.
    pub fn new_session(mut self) -> Self {
        self.new_session = true;
        self
    }

    /// Runs the child as this user id (default: the parent's).
    pub fn uid(mut self, uid: u32) -> Self {
        self.std.uid(uid);
        self
    }

    /// Runs the child as this group id (default: the parent's).
    pub fn gid(mut self, gid: u32) -> Self {
        self.std.gid(gid);
        self
    }

    /// Hands `fd` to the child as descriptor number `child_fd` (3 or more),
    /// for example one end of a socketpair for IPC. The parent's copy is
    /// closed once the child is spawned. Any mapping works, including one
    /// where a source's number is another mapping's target. Needs a
    /// `pre_exec` hook.
    pub fn inherit_fd(mut self, child_fd: RawFd, fd: OwnedFd) -> Self {
        self.fds.push((child_fd, fd));
        self
    }

    /// Linux only: the child receives `signal` when the parent process dies
    /// (`PR_SET_PDEATHSIG`), including when it died during the spawn itself.
    /// Such spawns are forked from a process-wide thread that never exits,
    /// because the kernel fires the signal when the *thread* that forked
    /// exits (see the crate's Caveats). Default: off. Needs a `pre_exec`
    /// hook.
    pub fn parent_death_signal(mut self, signal: Signal) -> Self {
        self.parent_death = Some(signal);
        self
    }

    /// Whether dropping the [`Child`] without waiting sends it SIGKILL
    /// (default: `false`, the child runs on; either way it is reaped and
    /// never left a zombie).
    pub fn kill_on_drop(mut self, kill: bool) -> Self {
        self.kill_on_drop = kill;
        self
    }

    /// The program as given.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// Starts the child. Needs a tokio runtime (any flavour).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::BadCwd`],
    /// [`Error::BadFdTarget`], [`Error::NoRuntime`] or [`Error::Spawn`], each
    /// naming the program.
    ///
    /// # Panics
    /// Inside a tokio runtime built without its I/O driver: tokio panics when
    /// it registers the child (build the runtime with `enable_all`).
    pub fn spawn(self) -> Result<Child, Error> {
        spawn_all([self])
            .pop()
            .unwrap_or_else(|| unreachable!("one command gives one result"))
    }

    /// Runs the child to its close while capturing stdout and stderr
    /// concurrently (no pipe deadlock whatever the volume), each up to `cap`
    /// bytes. Standard input is `/dev/null` unless set (a piped stdin is
    /// closed at once, as [`Child::output`] does). Past the cap the child
    /// is killed and [`Error::OutputTooLarge`] says so (Node's `maxBuffer`).
    ///
    /// # Errors
    /// The spawn errors of [`spawn`](Command::spawn), [`Error::OutputTooLarge`],
    /// [`Error::Read`] and [`Error::Wait`].
    pub async fn output(mut self, cap: usize) -> Result<Output, Error> {
        self.stdout = Some(Stdio::Piped);
        self.stderr = Some(Stdio::Piped);
        if self.stdin.is_none() {
            self.stdin = Some(Stdio::Null);
        }
        self.spawn()?.output(cap).await
    }

    /// Blocking counterpart for callers without a runtime (Node's
    /// `spawnSync`): spawns, waits, and returns the close. Piped streams are
    /// closed unread; use the async [`output`](Command::output) to capture.
    ///
    /// # Errors
    /// The spawn errors of [`spawn`](Command::spawn) (except
    /// [`Error::NoRuntime`]) and [`Error::Wait`].
    pub fn status_blocking(self) -> Result<Close, Error> {
        let on_spawner = self.parent_death.is_some();
        let prepared = self.prepare()?;
        let Prepared {
            mut std,
            program,
            cwd,
            fds,
        } = prepared;
        let spawned = if on_spawner {
            spawner::run(move || std.spawn()).and_then(|r| r)
        } else {
            std.spawn()
        };
        drop(fds);
        let mut child =
            spawned.map_err(|source| Error::from_spawn(program.clone(), cwd.as_ref(), source))?;
        // Close our pipe ends so that a child reading stdin sees EOF.
        drop(child.stdin.take());
        drop(child.stdout.take());
        drop(child.stderr.take());
        let pid = child.id();
        child
            .wait()
            .map(Close::from_status)
            .map_err(|source| Error::Wait {
                program,
                pid,
                source,
            })
    }

    /// Applies stdio, the process group and the hook to the std command.
    fn prepare(mut self) -> Result<Prepared, Error> {
        if let Some(cwd) = &self.cwd
            && let Err(source) = crate::error::check_dir(cwd)
        {
            return Err(Error::BadCwd {
                program: self.program,
                cwd: cwd.clone(),
                source,
            });
        }
        self.std
            .stdin(self.stdin.take().unwrap_or_default().into_std());
        self.std
            .stdout(self.stdout.take().unwrap_or_default().into_std());
        self.std
            .stderr(self.stderr.take().unwrap_or_default().into_std());
        if self.process_group && !self.new_session {
            self.std.process_group(0);
        }

        let mut hook = Hook {
            new_session: self.new_session,
            parent_death: self
                .parent_death
                .map(|signal| (signal as libc::c_int, std::process::id() as libc::pid_t)),
            ..Hook::default()
        };
        let mut reserved = Vec::new();
        for (i, (target, fd)) in self.fds.iter().enumerate() {
            let repeated = self.fds[..i].iter().any(|(t, _)| t == target);
            if *target < 3 || repeated {
                return Err(Error::BadFdTarget {
                    program: self.program,
                    child_fd: *target,
                });
            }
            // The parent's copy must not leak into other children spawned
            // meanwhile; the child gets its own copy from the hook.
            let cloexec = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
            if let Err(errno) = cloexec {
                return Err(Error::Spawn {
                    program: self.program,
                    source: errno.into(),
                });
            }
            hook.fds.push(FdMove::new(fd.as_raw_fd(), *target));
            // Hold the target number in the parent during the spawn if it is
            // free, so that std's own exec-error pipe cannot be allocated
            // there and then be overwritten by the hook's dup2 in the child.
            if let Ok(placeholder) = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(*target)) {
                // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor we own.
                let placeholder = unsafe { OwnedFd::from_raw_fd(placeholder) };
                if placeholder.as_raw_fd() == *target {
                    reserved.push(placeholder);
                }
            }
        }
        if hook.is_needed() {
            // SAFETY: the closure only calls `Hook::run_in_child`, which is
            // async-signal-safe and allocation-free (see its docs); the
            // descriptors it reads stay open in the parent until the spawn
            // returns (`Prepared::fds`).
            unsafe {
                self.std.pre_exec(move || hook.run_in_child());
            }
        }
        Ok(Prepared {
            std: self.std,
            program: self.program,
            cwd: self.cwd,
            fds: (self.fds, reserved),
        })
    }
}

/// Starts every command, in order, like [`Command::spawn`] each, with one
/// trip to spawn-core's spawner thread for all of those that ask for a
/// [parent-death signal](Command::parent_death_signal) instead of one each.
///
/// That trip costs the caller a thread switch there and back; on a busy
/// machine, being scheduled again after it can take as long as the spawn
/// itself (here up to 0.9 ms, while the children it just started take both
/// CPUs). Starting n such children together pays it once: this is how a
/// cluster starts its workers.
///
/// The results are in the order of the commands; a command that fails does
/// not stop the others. Needs a tokio runtime (any flavour).
///
/// # Errors
/// Each result has the errors of [`Command::spawn`].
pub fn spawn_all(commands: impl IntoIterator<Item = Command>) -> Vec<Result<Child, Error>> {
    let handle = tokio::runtime::Handle::try_current();
    let mut results: Vec<Option<Result<Child, Error>>> = Vec::new();
    // Ready to spawn: (index in `results`, the spawn, what to keep).
    let mut here = Vec::new();
    let mut there = Vec::new();
    for command in commands {
        let index = results.len();
        results.push(None);
        if handle.is_err() {
            results[index] = Some(Err(Error::NoRuntime {
                program: command.program,
            }));
            continue;
        }
        let kill_on_drop = command.kill_on_drop;
        let group_leader = command.process_group || command.new_session;
        let on_spawner = command.parent_death.is_some();
        match command.prepare() {
            Ok(prepared) => {
                let Prepared {
                    std,
                    program,
                    cwd,
                    fds,
                } = prepared;
                let mut tokio_cmd = tokio::process::Command::from(std);
                tokio_cmd.kill_on_drop(kill_on_drop);
                let kept = Kept {
                    program,
                    cwd,
                    fds,
                    group_leader,
                };
                if on_spawner {
                    there.push((index, tokio_cmd, kept));
                } else {
                    here.push((index, tokio_cmd, kept));
                }
            }
            Err(error) => results[index] = Some(Err(error)),
        }
    }
    let mut spawned = Vec::with_capacity(here.len() + there.len());
    for (index, mut tokio_cmd, kept) in here {
        let result = tokio_cmd.spawn();
        spawned.push((index, result, kept));
    }
    if !there.is_empty() {
        let n = there.len();
        let (kept, commands): (Vec<(usize, Kept)>, Vec<tokio::process::Command>) = there
            .into_iter()
            .map(|(index, command, kept)| ((index, kept), command))
            .unzip();
        let handle = handle.as_ref().map(Clone::clone).ok();
        let outcome = spawner::run(move || {
            let _entered = handle.as_ref().map(tokio::runtime::Handle::enter);
            commands
                .into_iter()
                .map(|mut command| command.spawn())
                .collect::<Vec<_>>()
        });
        let outcome = match outcome {
            Ok(each) => each,
            Err(error) => (0..n)
                .map(|_| Err(std::io::Error::new(error.kind(), error.to_string())))
                .collect(),
        };
        for ((index, kept), result) in kept.into_iter().zip(outcome) {
            spawned.push((index, result, kept));
        }
    }
    for (index, result, kept) in spawned {
        // The descriptors handed over are closed here, the child has them.
        drop(kept.fds);
        results[index] = Some(match result {
            Ok(child) => Ok(Child::new(child, kept.program, kept.group_leader)),
            Err(source) => Err(Error::from_spawn(kept.program, kept.cwd.as_ref(), source)),
        });
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| unreachable!("every command has a result")))
        .collect()
}

/// What a spawn keeps until it returned: the program and directory for its
/// errors, and the descriptors the child takes.
struct Kept {
    program: OsString,
    cwd: Option<PathBuf>,
    fds: (Vec<(RawFd, OwnedFd)>, Vec<OwnedFd>),
    group_leader: bool,
}

/// A std command ready to spawn, and the descriptors that must stay open
/// until it has: the ones handed over, and placeholders holding their
/// target numbers.
struct Prepared {
    std: process::Command,
    program: OsString,
    cwd: Option<PathBuf>,
    fds: (Vec<(RawFd, OwnedFd)>, Vec<OwnedFd>),
}

/// The captured output of a child that closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it closed.
    pub close: Close,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

#[cfg(test)]
mod tests;
