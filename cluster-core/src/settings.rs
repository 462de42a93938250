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

use std::sync::Arc;

use sched_policy::{Policy, PolicyKind, SchedulingPolicy};

use crate::restart::{Backoff, CrashLoopLimit, RestartPolicy};

/// A factory of custom policies: one policy per listening address.
type PolicyFactory = Arc<dyn Fn() -> Box<dyn Policy> + Send + Sync>;

/// How the connections of each listening address are scheduled: one of the
/// named built-ins, or a user policy made by a factory (each distinct listen
/// address gets its own policy instance).
#[derive(Clone)]
pub(crate) enum PolicyChoice {
    Kind(PolicyKind),
    Custom(PolicyFactory),
}

impl std::fmt::Debug for PolicyChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyChoice::Kind(k) => write!(f, "{k}"),
            PolicyChoice::Custom(_) => f.write_str("custom"),
        }
    }
}

impl PolicyChoice {
    /// Whether this is the shared-listener mode (`none`).
    pub(crate) fn is_none(&self) -> bool {
        matches!(self, PolicyChoice::Kind(PolicyKind::None))
    }

    /// A fresh policy for one listener; `None` in the shared-listener mode.
    /// Power of two choices is seeded from the process id and the clock, so
    /// two primaries differ.
    pub(crate) fn build(&self) -> Option<Box<dyn Policy>> {
        match self {
            PolicyChoice::Kind(kind) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let seed = (u64::from(std::process::id()) << 32) ^ nanos;
                match kind.build_with_seed(seed) {
                    SchedulingPolicy::None => None,
                    SchedulingPolicy::Distributed(p) => Some(p),
                }
            }
            PolicyChoice::Custom(make) => Some(make()),
        }
    }
}

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
    pub(crate) scheduling: Option<PolicyChoice>,
    pub(crate) upgrade_on_signal: bool,
    pub(crate) upgrade_timeout: Duration,
    pub(crate) pid_file: Option<PathBuf>,
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
            scheduling: None,
            upgrade_on_signal: false,
            upgrade_timeout: Duration::from_secs(60),
            pid_file: None,
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

    /// How connections to the workers' listening addresses are scheduled
    /// (Node's `cluster.schedulingPolicy`): [`PolicyKind::RoundRobin`] (the
    /// primary accepts and hands each connection over in turn),
    /// [`PolicyKind::None`] (the workers accept on a shared socket),
    /// [`PolicyKind::Sticky`], [`PolicyKind::LeastConnections`] or
    /// [`PolicyKind::PowerOfTwoChoices`]. Default: the environment variable
    /// `CLUSTER_SCHED_POLICY` (`rr`, `none`, `sticky`, `least-conn`, `p2c`),
    /// read by `Cluster::new`, else round-robin. A setting here wins over
    /// the variable.
    ///
    /// Node's `cluster.schedulingPolicy = cluster.SCHED_RR`:
    ///
    /// ```no_run
    /// use cluster_core::{Cluster, PolicyKind, Settings};
    ///
    /// # async fn f() -> cluster_core::Result<()> {
    /// let mut settings = Settings::new();
    /// settings.scheduling_policy(PolicyKind::RoundRobin); // or PolicyKind::None, Sticky, …
    /// let cluster = Cluster::<String>::new(settings)?;
    /// # Ok(()) }
    /// ```
    pub fn scheduling_policy(&mut self, kind: PolicyKind) -> &mut Self {
        self.scheduling = Some(PolicyChoice::Kind(kind));
        self
    }

    /// Schedule connections with a policy of your own: `make` is called once
    /// per distinct listening address (each gets its own instance). Wins
    /// over `CLUSTER_SCHED_POLICY`.
    pub fn custom_policy<P, F>(&mut self, make: F) -> &mut Self
    where
        P: Policy + 'static,
        F: Fn() -> P + Send + Sync + 'static,
    {
        self.scheduling = Some(PolicyChoice::Custom(Arc::new(move || Box::new(make()))));
        self
    }

    /// Upgrade the primary itself on SIGUSR2, like nginx: the program now on
    /// disk is started as a new primary with the listening sockets, and this
    /// one drains once it is ready (see `Cluster::upgrade`). Default: off
    /// (SIGUSR2 keeps its usual effect).
    pub fn upgrade_on_signal(&mut self) -> &mut Self {
        self.upgrade_on_signal = true;
        self
    }

    /// How long an upgrade waits for the new primary to be ready before it
    /// kills it and keeps serving. Default: 60 s.
    pub fn upgrade_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// Write the primary's pid to this file once its workers are ready (and
    /// the new primary's pid at an upgrade), for a service manager that
    /// tracks pid files (systemd's `PIDFile=`). Written atomically. Default:
    /// none.
    pub fn pid_file(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.pid_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// The policy in force: the setting, else `CLUSTER_SCHED_POLICY`, else
    /// round-robin. An unknown name in the variable is an error.
    pub(crate) fn resolve_policy(&self) -> crate::Result<PolicyChoice> {
        if let Some(choice) = &self.scheduling {
            return Ok(choice.clone());
        }
        match std::env::var(sched_policy::ENV_VAR) {
            Ok(name) if !name.trim().is_empty() => name
                .parse::<PolicyKind>()
                .map(PolicyChoice::Kind)
                .map_err(|source| crate::Error::SchedulingPolicy {
                    name: sched_policy::ENV_VAR,
                    source,
                }),
            _ => Ok(PolicyChoice::Kind(PolicyKind::RoundRobin)),
        }
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
        if other.scheduling.is_some() {
            self.scheduling.clone_from(&other.scheduling);
        }
        if other.pid_file.is_some() {
            self.pid_file.clone_from(&other.pid_file);
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
            message_credits,
            upgrade_on_signal,
            upgrade_timeout
        );
        self
    }
}
