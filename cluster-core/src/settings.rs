//! How a primary starts and guards its workers: [`Settings`] (Node's
//! `setupPrimary`).
//!
//! Settings are a plain value with chained setters; each setter's doc states
//! the default. A running cluster accepts further changes through
//! `Cluster::setup` until its first fork: the changes merge into what is
//! already set (args and env accumulate, the rest is replaced), like Node's
//! repeated `setupPrimary` calls.

#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::restart::{Backoff, CrashLoopLimit, RestartPolicy};

/// Where a worker's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerStdio {
    /// The worker writes straight to the primary's stdout and stderr.
    Inherit,
    /// The primary reads the worker's output and forwards it line by line,
    /// each line prefixed with `[worker <id>] `, so lines of different workers
    /// never interleave mid-line.
    #[default]
    Piped,
}

/// Liveness checking: a worker sends a heartbeat every `interval` from its own
/// runtime; one silent for longer than `timeout` is killed (and restarted by
/// the guard, like Gunicorn's worker timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often the worker reports.
    pub interval: Duration,
    /// How long the primary tolerates silence.
    pub timeout: Duration,
}

/// The settings of a primary. See the module docs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) n_workers: usize,
    pub(crate) stdio: WorkerStdio,
    pub(crate) restart: RestartPolicy,
    pub(crate) backoff: Backoff,
    pub(crate) crash_loop: CrashLoopLimit,
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) shutdown_deadline: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) handle_signals: bool,
    pub(crate) message_credits: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            program: None,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            n_workers: std::thread::available_parallelism().map_or(1, usize::from),
            stdio: WorkerStdio::default(),
            restart: RestartPolicy::default(),
            backoff: Backoff::default(),
            crash_loop: CrashLoopLimit::default(),
            heartbeat: None,
            shutdown_deadline: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
            handle_signals: false,
            message_credits: 64,
        }
    }
}

impl Settings {
    /// The defaults, as documented on each setter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The program the workers run. Default: the current executable.
    pub fn program(&mut self, program: impl AsRef<Path>) -> &mut Self {
        self.program = Some(program.as_ref().to_path_buf());
        self
    }

    /// Append an argument. Default: no arguments.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Append arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Set an environment variable for every worker, on top of the primary's
    /// own environment (a later value of the same key wins). Default: none.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        let key = key.as_ref().to_os_string();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_os_string()));
        self
    }

    /// The workers' working directory. Default: the primary's.
    pub fn cwd(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// How many workers `Cluster::start` forks. Default: the available
    /// parallelism (number of CPUs).
    pub fn n_workers(&mut self, n: usize) -> &mut Self {
        self.n_workers = n;
        self
    }

    /// Where worker output goes. Default: [`WorkerStdio::Piped`].
    pub fn stdio(&mut self, stdio: WorkerStdio) -> &mut Self {
        self.stdio = stdio;
        self
    }

    /// When dead workers are replaced. Default: [`RestartPolicy::OnFailure`].
    pub fn restart(&mut self, policy: RestartPolicy) -> &mut Self {
        self.restart = policy;
        self
    }

    /// Backoff between restarts. Default: [`Backoff::default`] (immediate,
    /// then 100 ms doubling up to 10 s; reset after 1 s of uptime).
    pub fn backoff(&mut self, backoff: Backoff) -> &mut Self {
        self.backoff = backoff;
        self
    }

    /// The crash-loop limit. Default: 10 restarts per 60 s.
    pub fn crash_loop_limit(&mut self, limit: CrashLoopLimit) -> &mut Self {
        self.crash_loop = limit;
        self
    }

    /// Turn on heartbeats. Default: off.
    pub fn heartbeat(&mut self, interval: Duration, timeout: Duration) -> &mut Self {
        self.heartbeat = Some(Heartbeat { interval, timeout });
        self
    }

    /// How long a graceful shutdown waits before SIGKILLing stragglers.
    /// Default: 10 s.
    pub fn shutdown_deadline(&mut self, deadline: Duration) -> &mut Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// How long a rolling reload waits for each replacement to become ready
    /// (listening, or online). Default: 30 s.
    pub fn ready_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.ready_timeout = timeout;
        self
    }

    /// Shut down gracefully on SIGTERM and SIGINT. Default: off (the signals
    /// keep their usual effect on the primary; its workers die with it).
    pub fn handle_signals(&mut self) -> &mut Self {
        self.handle_signals = true;
        self
    }

    /// How many undelivered messages of one worker the primary holds before
    /// that worker's sends wait. Default: 64.
    pub fn message_credits(&mut self, n: usize) -> &mut Self {
        self.message_credits = n.max(1);
        self
    }

    /// Merge `other` into `self`: args and env accumulate, every other field
    /// that `other` changed from the default replaces ours.
    pub fn merge(&mut self, other: &Settings) -> &mut Self {
        let d = Settings::default();
        if other.program.is_some() {
            self.program.clone_from(&other.program);
        }
        self.args.extend(other.args.iter().cloned());
        for (k, v) in &other.env {
            self.env(k, v);
        }
        if other.cwd.is_some() {
            self.cwd.clone_from(&other.cwd);
        }
        macro_rules! take_if_set {
            ($($f:ident),*) => {$(
                if other.$f != d.$f {
                    self.$f = other.$f;
                }
            )*};
        }
        take_if_set!(
            n_workers,
            stdio,
            restart,
            backoff,
            crash_loop,
            heartbeat,
            shutdown_deadline,
            ready_timeout,
            handle_signals,
            message_credits
        );
        self
    }
}
