//! [`Command`]: the builder. Like std's and tokio's, its setters take
//! `&mut self`, so one command can be spawned again. Each spawn builds a
//! fresh `std::process::Command` from the settings, so that std's
//! `posix_spawn` fast path is kept whenever no option needs a `pre_exec`
//! hook, and hands it to `tokio::process` (whose reaper collects every
//! child, waited for or not).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::resource::{Resource, getrlimit};

use crate::error::check_dir;
use crate::hook::{FdMove, Hook};
use crate::stdio::ToStdError;
use crate::{Child, Close, Error, Signal, Stdio, Stream, spawner};

/// A description of one child process to start: the program, its arguments,
/// environment, working directory, stdio, and process attributes.
///
/// The setters take `&mut self` and return it, as std's and tokio's do: chain
/// them on a temporary (`Command::new("ls").arg("-l").spawn()?`), or keep the
/// command in a variable to spawn it again. What each spawn does with the
/// descriptors it is given:
/// - a [`Stdio`] made from a file or an [`OwnedFd`] stays open in the
///   command and each child gets its own copy (std's rule); another child's
///   pipe end goes to the next spawn only (see [`Stdio`]);
/// - a descriptor given to [`inherit_fd`](Command::inherit_fd) goes to the
///   next spawn only, and the parent's copy is closed right after it, so the
///   peer of a socket handed to a child sees the end of the stream when that
///   child exits. Spawning again needs a new `inherit_fd` for that number
///   ([`Error::FdHandedOver`] otherwise).
#[derive(Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    arg0: Option<OsString>,
    env_clear: bool,
    /// `None` removes the variable.
    env: BTreeMap<OsString, Option<OsString>>,
    cwd: Option<PathBuf>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    uid: Option<u32>,
    gid: Option<u32>,
    process_group: Option<i32>,
    new_session: bool,
    fds: Vec<(RawFd, OwnedFd)>,
    /// Targets whose descriptor went to an earlier spawn.
    handed_over: Vec<RawFd>,
    parent_death: Option<Signal>,
    kill_on_drop: bool,
}

/// What a stream is when the command does not set it: std's defaults for
/// `spawn` (inherit all) and `output` (null stdin, piped stdout and stderr).
#[derive(Clone, Copy)]
pub(crate) struct Defaults {
    stdin_null: bool,
    capture: bool,
}

impl Defaults {
    pub(crate) const SPAWN: Defaults = Defaults {
        stdin_null: false,
        capture: false,
    };
    const OUTPUT: Defaults = Defaults {
        stdin_null: true,
        capture: true,
    };
}

impl Command {
    /// A command that runs `program` (looked up on `PATH` when it has no
    /// slash) with no arguments, the parent's environment, working directory
    /// and stdio.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            arg0: None,
            env_clear: false,
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
            stdout: None,
            stderr: None,
            uid: None,
            gid: None,
            process_group: None,
            new_session: false,
            fds: Vec::new(),
            handed_over: Vec::new(),
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
        command.args([OsStr::new("-c"), script.as_ref(), OsStr::new("sh")]);
        command
    }

    /// Appends one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets `argv[0]` (by default the program as given).
    pub fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Self {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Sets the working directory (by default the parent's). A directory
    /// that does not exist gives [`Error::BadCwd`].
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets one environment variable (by default the parent's environment
    /// is inherited).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self.env(key, value);
        }
        self
    }

    /// Removes one environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        let key = key.as_ref().to_owned();
        if self.env_clear {
            self.env.remove(&key);
        } else {
            self.env.insert(key, None);
        }
        self
    }

    /// Clears the environment: the child sees only variables set after this.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Connects standard input. Default: inherited for
    /// [`spawn`](Command::spawn) and [`status`](Command::status), `/dev/null`
    /// for [`output`](Command::output).
    pub fn stdin(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdin = Some(stdio.into());
        self
    }

    /// Connects standard output. Default: inherited for
    /// [`spawn`](Command::spawn) and [`status`](Command::status), piped for
    /// [`output`](Command::output).
    pub fn stdout(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdout = Some(stdio.into());
        self
    }

    /// Connects standard error; defaults as [`stdout`](Command::stdout).
    pub fn stderr(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stderr = Some(stdio.into());
        self
    }

    /// Puts the child in process group `pgroup`, as std's
    /// `CommandExt::process_group`: 0 makes a new group that the child leads,
    /// so that [`Child::signal_group`] reaches its descendants too. Default:
    /// the parent's group. Keeps the `posix_spawn` path. Ignored with
    /// [`new_session`](Command::new_session), whose group the child leads.
    pub fn process_group(&mut self, pgroup: i32) -> &mut Self {
        self.process_group = Some(pgroup);
        self
    }

    /// Starts the child in a new session (`setsid`), detached from the
    /// parent's controlling terminal, leading a new process group: Node's
    /// `detached: true` (default: off). Needs a `pre_exec` hook.
    pub fn new_session(&mut self) -> &mut Self {
        self.new_session = true;
        self
    }

    /// Runs the child as this user id (default: the parent's).
    pub fn uid(&mut self, uid: u32) -> &mut Self {
        self.uid = Some(uid);
        self
    }

    /// Runs the child as this group id (default: the parent's).
    pub fn gid(&mut self, gid: u32) -> &mut Self {
        self.gid = Some(gid);
        self
    }

    /// Hands `fd` to the next spawned child as descriptor number `child_fd`,
    /// for example one end of a socketpair for IPC. The number must be 3 or
    /// more and below the open-file limit (`RLIMIT_NOFILE`), checked in the
    /// parent ([`Error::BadFdTarget`], [`Error::FdTargetAboveLimit`]). The
    /// parent's copy is closed once that spawn returns (see [`Command`]).
    /// Any mapping works, including one where a source's number is another
    /// mapping's target. Needs a `pre_exec` hook.
    pub fn inherit_fd(&mut self, child_fd: RawFd, fd: OwnedFd) -> &mut Self {
        self.fds.push((child_fd, fd));
        self
    }

    /// Linux only: the child receives `signal` when the parent process dies
    /// (`PR_SET_PDEATHSIG`), including when it died during the spawn itself.
    /// Such spawns are forked from a process-wide thread that never exits,
    /// because the kernel fires the signal when the *thread* that forked
    /// exits (see the crate's Caveats). Default: off. Needs a `pre_exec`
    /// hook.
    pub fn parent_death_signal(&mut self, signal: Signal) -> &mut Self {
        self.parent_death = Some(signal);
        self
    }

    /// Whether dropping the [`Child`] without waiting sends it SIGKILL
    /// (default: `false`, the child runs on; either way it is reaped and
    /// never left a zombie).
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Self {
        self.kill_on_drop = kill;
        self
    }

    /// The program as given.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments after the program (for [`Command::shell`]: `-c`, the
    /// script, `sh`, then the positional parameters).
    pub fn get_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// Starts the child. Needs a tokio runtime (any flavour).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::BadCwd`],
    /// [`Error::BadFdTarget`], [`Error::FdTargetAboveLimit`],
    /// [`Error::FdHandedOver`], [`Error::StdioHandedOver`],
    /// [`Error::NoRuntime`], [`Error::SpawnPanicked`] or [`Error::Spawn`],
    /// each naming the program.
    pub fn spawn(&mut self) -> Result<Child, Error> {
        crate::batch::spawn_each([(self, Defaults::SPAWN)])
            .pop()
            .unwrap_or_else(|| unreachable!("one command gives one result"))
    }

    /// Runs the child to its close and returns it, as tokio's `status`:
    /// stdio inherited unless set, piped streams closed unread. The child is
    /// spawned now; the future waits for it.
    ///
    /// # Errors
    /// The spawn errors of [`spawn`](Command::spawn), and [`Error::Wait`].
    pub fn status(&mut self) -> impl Future<Output = Result<Close, Error>> + Send + use<> {
        let spawned = self.spawn();
        async move {
            let mut child = spawned?;
            drop(child.take_stdin());
            drop(child.take_stdout());
            drop(child.take_stderr());
            child.wait().await
        }
    }

    /// Runs the child to its close while capturing all of stdout and stderr
    /// concurrently (no pipe deadlock whatever the volume), std's and tokio's
    /// `output`: stdout and stderr are piped and stdin is `/dev/null` unless
    /// set. The child is spawned now; the future reads and waits. To bound
    /// the memory a child can make us use, see
    /// [`output_capped`](Command::output_capped).
    ///
    /// # Errors
    /// The spawn errors of [`spawn`](Command::spawn), [`Error::Read`] and
    /// [`Error::Wait`].
    pub fn output(&mut self) -> impl Future<Output = Result<Output, Error>> + Send + use<> {
        let spawned = self.spawn_for_output();
        async move { spawned?.wait_with_output().await }
    }

    /// [`output`](Command::output), with each stream capped at `cap` bytes:
    /// past it the child is killed with SIGKILL and
    /// [`Error::OutputTooLarge`] says so (Node's `maxBuffer`).
    ///
    /// # Errors
    /// The errors of [`output`](Command::output), [`Error::OutputTooLarge`]
    /// and [`Error::Kill`].
    pub fn output_capped(
        &mut self,
        cap: usize,
    ) -> impl Future<Output = Result<Output, Error>> + Send + use<> {
        let spawned = self.spawn_for_output();
        async move { spawned?.wait_with_output_capped(cap).await }
    }

    fn spawn_for_output(&mut self) -> Result<Child, Error> {
        crate::batch::spawn_each([(self, Defaults::OUTPUT)])
            .pop()
            .unwrap_or_else(|| unreachable!("one command gives one result"))
    }

    /// Blocking counterpart of [`status`](Command::status) for callers
    /// without a runtime (Node's `spawnSync`): spawns, waits, and returns the
    /// close. Piped streams are closed unread; use the async
    /// [`output`](Command::output) to capture.
    ///
    /// # Errors
    /// The spawn errors of [`spawn`](Command::spawn) (except
    /// [`Error::NoRuntime`]) and [`Error::Wait`].
    pub fn status_blocking(&mut self) -> Result<Close, Error> {
        let on_spawner = self.parent_death.is_some();
        let Prepared {
            mut std,
            program,
            cwd,
            fds,
            ..
        } = self.prepare(Defaults::SPAWN)?;
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

    /// Whether the spawn must be forked from the spawner thread.
    pub(crate) fn needs_spawner(&self) -> bool {
        self.parent_death.is_some()
    }

    pub(crate) fn kill_on_drop_set(&self) -> bool {
        self.kill_on_drop
    }

    /// Checks the settings, then builds the std command for one spawn: its
    /// stdio, process group and hook. Nothing is taken from the command when
    /// a check fails.
    pub(crate) fn prepare(&mut self, defaults: Defaults) -> Result<Prepared, Error> {
        if let Some(cwd) = &self.cwd
            && let Err(source) = check_dir(cwd)
        {
            return Err(Error::BadCwd {
                program: self.program.clone(),
                cwd: cwd.clone(),
                source,
            });
        }
        self.check_fds()?;

        let mut std = process::Command::new(&self.program);
        std.args(&self.args);
        if let Some(arg0) = &self.arg0 {
            std.arg0(arg0);
        }
        if self.env_clear {
            std.env_clear();
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => std.env(key, value),
                None => std.env_remove(key),
            };
        }
        if let Some(cwd) = &self.cwd {
            std.current_dir(cwd);
        }
        if let Some(uid) = self.uid {
            std.uid(uid);
        }
        if let Some(gid) = self.gid {
            std.gid(gid);
        }
        let group_leader = if self.new_session {
            true
        } else if let Some(pgroup) = self.process_group {
            std.process_group(pgroup);
            pgroup == 0
        } else {
            false
        };
        let stdin = self.stdio_for(Stream::Stdin, defaults)?;
        let stdout = self.stdio_for(Stream::Stdout, defaults)?;
        let stderr = self.stdio_for(Stream::Stderr, defaults)?;
        std.stdin(stdin).stdout(stdout).stderr(stderr);

        let mut hook = Hook {
            new_session: self.new_session,
            parent_death: self
                .parent_death
                .map(|signal| (signal.as_raw(), std::process::id() as libc::pid_t)),
            ..Hook::default()
        };
        // From here on the descriptors belong to this spawn.
        let fds = std::mem::take(&mut self.fds);
        self.handed_over = fds.iter().map(|(target, _)| *target).collect();
        let mut reserved = Vec::new();
        for (target, fd) in &fds {
            // The parent's copy must not leak into other children spawned
            // meanwhile; the child gets its own copy from the hook.
            if let Err(errno) = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
                return Err(Error::Spawn {
                    program: self.program.clone(),
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
                std.pre_exec(move || hook.run_in_child());
            }
        }
        Ok(Prepared {
            std,
            program: self.program.clone(),
            cwd: self.cwd.clone(),
            fds: (fds, reserved),
            group_leader,
        })
    }

    /// The checks on the descriptor targets: each at least 3, given once,
    /// below the open-file limit, and none handed to an earlier spawn without
    /// a new descriptor.
    fn check_fds(&self) -> Result<(), Error> {
        let bad = |child_fd| Error::BadFdTarget {
            program: self.program.clone(),
            child_fd,
        };
        if let Some(&child_fd) = self
            .handed_over
            .iter()
            .find(|t| !self.fds.iter().any(|(target, _)| target == *t))
        {
            return Err(Error::FdHandedOver {
                program: self.program.clone(),
                child_fd,
            });
        }
        if self.fds.is_empty() {
            return Ok(());
        }
        let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _hard)) => soft,
            Err(errno) => {
                return Err(Error::Spawn {
                    program: self.program.clone(),
                    source: errno.into(),
                });
            }
        };
        for (i, (target, _)) in self.fds.iter().enumerate() {
            if *target < 3 || self.fds[..i].iter().any(|(t, _)| t == target) {
                return Err(bad(*target));
            }
            if u64::try_from(*target).is_ok_and(|t| t >= limit) {
                return Err(Error::FdTargetAboveLimit {
                    program: self.program.clone(),
                    child_fd: *target,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// std's stdio for `stream` in one spawn.
    fn stdio_for(&mut self, stream: Stream, defaults: Defaults) -> Result<process::Stdio, Error> {
        let (set, default) = match stream {
            Stream::Stdin => (
                &mut self.stdin,
                if defaults.stdin_null {
                    process::Stdio::null as fn() -> process::Stdio
                } else {
                    process::Stdio::inherit
                },
            ),
            Stream::Stdout => (&mut self.stdout, capture_default(defaults)),
            Stream::Stderr => (&mut self.stderr, capture_default(defaults)),
        };
        match set {
            None => Ok(default()),
            Some(stdio) => stdio.for_spawn().map_err(|e| match e {
                ToStdError::HandedOver => Error::StdioHandedOver {
                    program: self.program.clone(),
                    stream,
                },
                ToStdError::Io(source) => Error::Spawn {
                    program: self.program.clone(),
                    source,
                },
            }),
        }
    }
}

fn capture_default(defaults: Defaults) -> fn() -> process::Stdio {
    if defaults.capture {
        process::Stdio::piped
    } else {
        process::Stdio::inherit
    }
}

/// A std command ready to spawn, and the descriptors that must stay open
/// until it has: the ones handed over, and placeholders holding their
/// target numbers.
pub(crate) struct Prepared {
    pub(crate) std: process::Command,
    pub(crate) program: OsString,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) fds: (Vec<(RawFd, OwnedFd)>, Vec<OwnedFd>),
    pub(crate) group_leader: bool,
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
