//! [`Command`]: the builder. Like std's and tokio's, its setters take
//! `&mut self`, so one command can be spawned again. Each spawn prepares
//! one of two launches from the settings: a fresh `std::process::Command`
//! handed to `tokio::process` (whose reaper collects every child, waited
//! for or not), which keeps std's `posix_spawn` fast path whenever no
//! option needs a `pre_exec` hook; or, on Linux, spawn-core's own
//! `posix_spawn` (`posix.rs`) for the spawns std would fork only for
//! spawn-core's options (extra descriptors, a new session).

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
use crate::stdio::{Given, ToStdError};
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
    lasting_parent_thread: bool,
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
            lasting_parent_thread: false,
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
    /// `detached: true` (default: off). Keeps the `posix_spawn` path on
    /// Linux (see the crate's Speed section); elsewhere it needs a
    /// `pre_exec` hook.
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
    /// mapping's target. Keeps the `posix_spawn` path on Linux (see the
    /// crate's Speed section); elsewhere it needs a `pre_exec` hook.
    pub fn inherit_fd(&mut self, child_fd: RawFd, fd: OwnedFd) -> &mut Self {
        self.fds.push((child_fd, fd));
        self
    }

    /// Linux only: the child receives `signal` when the parent process dies
    /// (`PR_SET_PDEATHSIG`), including when it died during the spawn itself.
    /// Such spawns are forked from a process-wide thread that never exits,
    /// because the kernel fires the signal when the *thread* that forked
    /// exits (see the crate's Caveats). Default: off. Needs a `pre_exec`
    /// hook, so the spawn forks: for a child that can set the signal
    /// itself, [`lasting_parent_thread`](Command::lasting_parent_thread)
    /// keeps the `posix_spawn` path.
    pub fn parent_death_signal(&mut self, signal: Signal) -> &mut Self {
        self.parent_death = Some(signal);
        self
    }

    /// Spawns from spawn-core's spawner thread, which lives as long as the
    /// process, instead of the calling thread. To Linux the child's parent
    /// is the *thread* that spawned it: a parent-death signal
    /// (`PR_SET_PDEATHSIG`) that the child sets on itself after `exec` fires
    /// when that thread exits, and with this it fires only when the process
    /// dies. For a child that sets its own signal, as a `cluster-core`
    /// worker does; unlike [`parent_death_signal`](Command::parent_death_signal)
    /// (which implies it) it needs no hook, so the spawn keeps the
    /// `posix_spawn` path. Costs a trip to that thread and back
    /// ([`spawn_all`](crate::spawn_all) makes one for a whole batch).
    /// Default: off.
    pub fn lasting_parent_thread(&mut self) -> &mut Self {
        self.lasting_parent_thread = true;
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
        let on_spawner = self.needs_spawner();
        self.check()?;
        let Prepared {
            launch,
            program,
            cwd,
            kept,
            ..
        } = self.prepare_std(Defaults::SPAWN)?;
        let Launch::Std(mut std) = launch else {
            unreachable!("prepare_std prepares std's launch");
        };
        let spawned = if on_spawner {
            spawner::run(move || std.spawn()).and_then(|r| r)
        } else {
            std.spawn()
        };
        drop(kept);
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

    /// Whether the spawn must run on the spawner thread.
    pub(crate) fn needs_spawner(&self) -> bool {
        self.parent_death.is_some() || self.lasting_parent_thread
    }

    pub(crate) fn kill_on_drop_set(&self) -> bool {
        self.kill_on_drop
    }

    /// Checks the settings, then prepares one spawn: spawn-core's own
    /// `posix_spawn` when only spawn-core's options would make std fork
    /// (Linux), std's command otherwise. Nothing is taken from the command
    /// when a check fails.
    pub(crate) fn prepare(&mut self, defaults: Defaults) -> Result<Prepared, Error> {
        self.check()?;
        #[cfg(target_os = "linux")]
        if self.takes_posix_spawn() {
            return self.prepare_posix(defaults);
        }
        self.prepare_std(defaults)
    }

    /// The checks every spawn makes first: the working directory, and the
    /// descriptor targets.
    fn check(&self) -> Result<(), Error> {
        if let Some(cwd) = &self.cwd
            && let Err(source) = check_dir(cwd)
        {
            return Err(Error::BadCwd {
                program: self.program.clone(),
                cwd: cwd.clone(),
                source,
            });
        }
        self.check_fds()
    }

    /// Whether this spawn takes spawn-core's own `posix_spawn`: std would
    /// fork it only for extra descriptors or a new session (no uid or gid,
    /// no parent-death signal, and a program found on the parent's own
    /// `PATH`, as `posix_spawnp` looks it up), and the system has what the
    /// path needs (`posix::available`).
    #[cfg(target_os = "linux")]
    fn takes_posix_spawn(&self) -> bool {
        let searches_path = !self.program.as_encoded_bytes().contains(&b'/');
        let path_changed = self.env_clear || self.env.contains_key(OsStr::new("PATH"));
        (!self.fds.is_empty() || self.new_session)
            && self.uid.is_none()
            && self.gid.is_none()
            && self.parent_death.is_none()
            && !(searches_path && path_changed)
            && crate::posix::available()
    }

    /// Builds the std command for one spawn: its stdio, process group and
    /// hook. The checks are made.
    fn prepare_std(&mut self, defaults: Defaults) -> Result<Prepared, Error> {
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
        std.stdin(stdin.into_std())
            .stdout(stdout.into_std())
            .stderr(stderr.into_std());

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
        let mut kept: Vec<OwnedFd> = fds.into_iter().map(|(_, fd)| fd).collect();
        kept.extend(reserved);
        Ok(Prepared {
            launch: Launch::Std(std),
            program: self.program.clone(),
            cwd: self.cwd.clone(),
            kept,
            group_leader,
        })
    }

    /// Builds spawn-core's own `posix_spawn` of one spawn: `argv`, the
    /// child's whole environment, its stdio and descriptors as file
    /// actions, its process group or session. The checks are made.
    #[cfg(target_os = "linux")]
    fn prepare_posix(&mut self, defaults: Defaults) -> Result<Prepared, Error> {
        use crate::posix::{Moves, Plan};

        let spawn_error = |program: &OsStr, source: std::io::Error| Error::Spawn {
            program: program.to_owned(),
            source,
        };
        let argv0 = self.arg0.as_ref().unwrap_or(&self.program);
        let argv = std::iter::once(argv0)
            .chain(&self.args)
            .map(|arg| c_string(arg.as_encoded_bytes().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| spawn_error(&self.program, e))?;
        let envp = self
            .child_env()
            .into_iter()
            .map(|(key, value)| {
                let mut entry = key.into_encoded_bytes();
                entry.push(b'=');
                entry.extend_from_slice(value.as_encoded_bytes());
                c_string(entry)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| spawn_error(&self.program, e))?;
        let program = c_string(self.program.as_encoded_bytes().to_vec())
            .map_err(|e| spawn_error(&self.program, e))?;
        let cwd = match &self.cwd {
            Some(cwd) => Some(
                c_string(cwd.as_os_str().as_encoded_bytes().to_vec())
                    .map_err(|e| spawn_error(&self.program, e))?,
            ),
            None => None,
        };
        let (process_group, group_leader) = if self.new_session {
            (None, true)
        } else {
            (self.process_group, self.process_group == Some(0))
        };

        let mut moves = Moves::new();
        let mut ends = ParentEnds::default();
        for (stream, target) in [(Stream::Stdin, 0), (Stream::Stdout, 1), (Stream::Stderr, 2)] {
            match self.stdio_for(stream, defaults)? {
                Given::Inherit => {}
                Given::Fd(fd) => moves.push(fd, target),
                Given::Null => {
                    let null = std::fs::OpenOptions::new()
                        .read(stream == Stream::Stdin)
                        .write(stream != Stream::Stdin)
                        .open("/dev/null")
                        .map_err(|e| spawn_error(&self.program, e))?;
                    moves.push(null.into(), target);
                }
                Given::Piped => {
                    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|e| spawn_error(&self.program, e.into()))?;
                    let (child, parent) = if stream == Stream::Stdin {
                        (read, write)
                    } else {
                        (write, read)
                    };
                    moves.push(child, target);
                    ends.set(stream, parent);
                }
            }
        }
        // From here on the descriptors belong to this spawn.
        let fds = std::mem::take(&mut self.fds);
        self.handed_over = fds.iter().map(|(target, _)| *target).collect();
        for (target, fd) in fds {
            // The parent's copy must not leak into other children spawned
            // meanwhile; the child gets its own copy from the file actions.
            fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .map_err(|errno| spawn_error(&self.program, errno.into()))?;
            moves.push(fd, target);
        }
        let (moves, held) = moves.finish().map_err(|e| spawn_error(&self.program, e))?;
        Ok(Prepared {
            launch: Launch::Posix(
                Plan {
                    program,
                    search_path: !self.program.as_encoded_bytes().contains(&b'/'),
                    argv,
                    envp,
                    cwd,
                    moves,
                    process_group,
                    new_session: self.new_session,
                },
                ends,
            ),
            program: self.program.clone(),
            cwd: self.cwd.clone(),
            kept: held,
            group_leader,
        })
    }

    /// The child's whole environment: the parent's (unless cleared) with
    /// the command's changes.
    #[cfg(target_os = "linux")]
    fn child_env(&self) -> BTreeMap<OsString, OsString> {
        let mut env: BTreeMap<OsString, OsString> = if self.env_clear {
            BTreeMap::new()
        } else {
            std::env::vars_os().collect()
        };
        for (key, value) in &self.env {
            match value {
                Some(value) => env.insert(key.clone(), value.clone()),
                None => env.remove(key),
            };
        }
        env
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

    /// What `stream` is in one spawn.
    fn stdio_for(&mut self, stream: Stream, defaults: Defaults) -> Result<Given, Error> {
        let (set, default) = match stream {
            Stream::Stdin => (
                &mut self.stdin,
                if defaults.stdin_null {
                    Given::Null
                } else {
                    Given::Inherit
                },
            ),
            Stream::Stdout => (&mut self.stdout, capture_default(defaults)),
            Stream::Stderr => (&mut self.stderr, capture_default(defaults)),
        };
        match set {
            None => Ok(default),
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

fn capture_default(defaults: Defaults) -> Given {
    if defaults.capture {
        Given::Piped
    } else {
        Given::Inherit
    }
}

/// `bytes` as a C string; a NUL inside is std's error for it.
#[cfg(target_os = "linux")]
fn c_string(bytes: Vec<u8>) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// One spawn ready to run, and the descriptors that must stay open until
/// it has (std's path: the ones handed over, and placeholders holding
/// their target numbers; ours: sources that sat at a target number).
pub(crate) struct Prepared {
    pub(crate) launch: Launch,
    pub(crate) program: OsString,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) kept: Vec<OwnedFd>,
    pub(crate) group_leader: bool,
}

/// How one spawn runs.
pub(crate) enum Launch {
    /// std's command, through `tokio::process`.
    Std(process::Command),
    /// spawn-core's own `posix_spawn`, and the parent's ends of the
    /// child's pipes.
    #[cfg(target_os = "linux")]
    Posix(crate::posix::Plan, ParentEnds),
}

/// The parent's ends of a child's piped streams.
#[derive(Default)]
pub(crate) struct ParentEnds {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

impl ParentEnds {
    #[cfg(target_os = "linux")]
    fn set(&mut self, stream: Stream, end: OwnedFd) {
        match stream {
            Stream::Stdin => self.stdin = Some(end),
            Stream::Stdout => self.stdout = Some(end),
            Stream::Stderr => self.stderr = Some(end),
        }
    }
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
