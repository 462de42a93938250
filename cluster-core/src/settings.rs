//! How a primary starts and guards its workers: [`Settings`] (Node's
//! `setupPrimary`).
//!
//! Settings are a plain value with chained setters; each setter's doc states
//! the default. A running cluster accepts further changes through
//! `Cluster::setup` until its first fork: the changes merge into what is
//! already set (args and env accumulate, the rest is replaced), like Node's
//! repeated `setupPrimary` calls.
//!
//! The library reads no configuration variable behind the program's back:
//! [`Settings::from_env`] (or [`Settings::read_env`]) is the one explicit
//! call that reads the operator's variables ([`env_vars`]).

mod env;
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
    /// The worker writes straight to the primary's stdout and stderr: no
    /// forwarding, no prefix, and nothing in the primary between the worker
    /// and the reader. Lines of different workers may interleave when one
    /// write is longer than `PIPE_BUF` (4 KiB) or is made in pieces.
    Inherit,
    /// The primary reads the worker's output and forwards it line by line,
    /// each line prefixed with `[worker <id>] `, so lines of different workers
    /// never interleave mid-line.
    ///
    /// Forwarding never blocks the primary: the lines are queued for a
    /// writer thread per stream (see [`crate::output`]). If whoever reads
    /// the primary's output stalls (a slow log shipper, a full pipe), up to
    /// [`FORWARD_BUDGET`](crate::output::FORWARD_BUDGET) bytes wait in the
    /// queue; then the primary stops reading the workers' pipes, and a
    /// worker that keeps printing blocks in its own `write` once its pipe
    /// (64 KiB on Linux) is full — what the same program would see writing
    /// to the stalled output without a cluster. Workers that print little,
    /// and the primary (supervision, restarts, hand-offs, messages), carry
    /// on. When the reader resumes, every line arrives, whole and in order
    /// per worker. A line longer than 64 KiB is forwarded in pieces. Lines
    /// still queued when the primary's process exits are lost, as with any
    /// buffered output: before returning from `main`, wait for
    /// [`Output::flush`](crate::output::Output::flush), bounded with a
    /// timeout.
    #[default]
    Piped,
}

/// How forwarded worker output ([`WorkerStdio::Piped`]) is framed, line by
/// line. Whatever the format, a line is queued whole: lines of two workers
/// never interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WorkerOutput {
    /// `[worker <id>] ` + the line (the default).
    #[default]
    Prefixed,
    /// The line byte for byte, unchanged (a worker's JSON lines stay
    /// parseable by a log shipper).
    Raw,
    /// One JSON object per line: `{"worker":<id>,"stream":"stdout","line":"..."}`
    /// (the line without its newline; bytes that are not UTF-8 become
    /// U+FFFD), for a primary that logs JSON lines itself.
    Json,
}

/// When a worker is replaced before it misbehaves (Gunicorn's
/// `max_requests` and `max_requests_jitter`, PM2's `max_memory_restart`, a
/// maximum age). A worker that reaches a limit is replaced through the
/// rolling path: its successor is ready before it drains, one slot at a
/// time. Default: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recycle {
    /// Connections handed to a worker before it is recycled (`None`: no limit).
    pub max_requests: Option<u64>,
    /// Each worker's limit is `max_requests` plus a random number in
    /// `0..=jitter`, so workers started together are not all recycled at once.
    pub jitter: u64,
    /// Resident memory (bytes, from `/proc/<pid>/stat`) past which a
    /// worker is recycled.
    pub max_memory: Option<u64>,
    /// Age past which a worker is recycled.
    pub max_age: Option<Duration>,
    /// How often the limits are checked (default 1 s when zero).
    pub check_every: Duration,
}

impl Recycle {
    /// Whether any limit is set.
    pub(crate) fn any(&self) -> bool {
        self.max_requests.is_some() || self.max_memory.is_some() || self.max_age.is_some()
    }
}

/// Liveness checking: a worker sends a heartbeat every `interval` from its own
/// runtime; one silent for longer than `timeout` is reported
/// `Event::Unresponsive`, killed (and restarted by the guard, like
/// Gunicorn's worker timeout). The clock starts when the worker is online;
/// before that, a worker gets [`Settings::ready_timeout`] to come online.
/// Default: on, every 1 s, 5 s of silence tolerated (see `docs/cluster.md`,
/// "Bounds and rules").
///
/// A worker blocked writing to a stalled output (see
/// [`WorkerStdio::Piped`]) keeps its heartbeat as long as its runtime has a
/// thread free: on a multi-thread runtime, or with the printing done on a
/// thread of its own, the blocked write holds one thread and the heartbeat
/// task runs on another, so the worker stays in service. On a
/// current-thread runtime, a blocking `println!` in a task blocks the whole
/// runtime: the heartbeat stops, the worker is declared unresponsive,
/// SIGKILLed and replaced; each replacement lives until its own heartbeat
/// times out, so a stalled log never makes the primary spin, and since the
/// workers came up, the crash-loop limit does not give the slot up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often the worker reports. Default: 1 s.
    pub interval: Duration,
    /// How long the primary tolerates silence. Default: 5 s.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// How many connections a worker may have handed over and not yet
/// acknowledged, per listener, by default.
pub const DEFAULT_HANDOFF_WINDOW: u32 = 16;

/// How long a worker has to acknowledge a connection handed to it, by
/// default.
pub const DEFAULT_HANDOFF_DEADLINE: Duration = Duration::from_secs(1);

/// The variables [`Settings::from_env`] and [`Settings::read_env`] read:
/// the operator's settings of a cluster. Nothing reads them otherwise
/// (`Cluster::new` does not). A variable unset or empty leaves its setting
/// as it is; a malformed value is an error naming the variable and its
/// value ([`Error::EnvVar`](crate::Error::EnvVar)). Durations in `_MS`
/// variables are milliseconds.
pub mod env_vars {
    /// [`Settings::n_workers`](super::Settings::n_workers), at least 1.
    pub const WORKERS: &str = "WORKERS";
    /// [`Settings::scheduling_policy`](super::Settings::scheduling_policy):
    /// `rr`, `none`, `sticky`, `least-conn`, `p2c` (sched-policy's
    /// `ENV_VAR`).
    pub const SCHED_POLICY: &str = sched_policy::ENV_VAR;
    /// [`Settings::max_requests`](super::Settings::max_requests).
    pub const MAX_REQUESTS: &str = "MAX_REQUESTS";
    /// The jitter of [`Settings::max_requests`](super::Settings::max_requests).
    pub const MAX_REQUESTS_JITTER: &str = "MAX_REQUESTS_JITTER";
    /// [`Settings::max_memory`](super::Settings::max_memory), in MiB.
    pub const MAX_MEMORY_MB: &str = "MAX_MEMORY_MB";
    /// [`Settings::max_age`](super::Settings::max_age), in seconds (at least 1).
    pub const MAX_AGE_SECS: &str = "MAX_AGE_SECS";
    /// [`Settings::pid_file`](super::Settings::pid_file).
    pub const PID_FILE: &str = "PID_FILE";
    /// [`Settings::metrics`](super::Settings::metrics) on 127.0.0.1 at this
    /// port (0: any free port, printed by the event log). Needs the
    /// `prometheus` feature.
    pub const METRICS_PORT: &str = "METRICS_PORT";
    /// [`Settings::logs`](super::Settings::logs)' format: `plain`, `json`,
    /// or `off`. Needs the `logs` feature.
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    /// [`Settings::logs`](super::Settings::logs)' filter (`tracing`'s
    /// `EnvFilter` syntax: `info`, `cluster_core=debug,warn`); set, it turns
    /// the logs on (plain, unless `LOG_FORMAT` says otherwise). Read only
    /// with the `logs` feature.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// [`Settings::handoff_window`](super::Settings::handoff_window).
    pub const HANDOFF_WINDOW: &str = "CLUSTER_HANDOFF_WINDOW";
    /// [`Settings::handoff_deadline`](super::Settings::handoff_deadline), ms.
    pub const HANDOFF_DEADLINE_MS: &str = "CLUSTER_HANDOFF_DEADLINE_MS";
    /// The heartbeat interval, ms ([`Settings::heartbeat`](super::Settings::heartbeat)).
    pub const HEARTBEAT_INTERVAL_MS: &str = "CLUSTER_HEARTBEAT_INTERVAL_MS";
    /// The heartbeat timeout, ms; `0` turns the heartbeat off.
    pub const HEARTBEAT_TIMEOUT_MS: &str = "CLUSTER_HEARTBEAT_TIMEOUT_MS";
    /// [`CrashLoopLimit::max_restarts`](crate::CrashLoopLimit::max_restarts).
    pub const CRASH_LOOP_LIMIT: &str = "CLUSTER_CRASH_LOOP_LIMIT";
    /// [`CrashLoopLimit::window`](crate::CrashLoopLimit::window), ms.
    pub const CRASH_LOOP_WINDOW_MS: &str = "CLUSTER_CRASH_LOOP_WINDOW_MS";

    /// Every variable read, in the order they are applied.
    pub const ALL: &[&str] = &[
        WORKERS,
        SCHED_POLICY,
        MAX_REQUESTS,
        MAX_REQUESTS_JITTER,
        MAX_MEMORY_MB,
        MAX_AGE_SECS,
        PID_FILE,
        METRICS_PORT,
        LOG_FORMAT,
        RUST_LOG,
        HANDOFF_WINDOW,
        HANDOFF_DEADLINE_MS,
        HEARTBEAT_INTERVAL_MS,
        HEARTBEAT_TIMEOUT_MS,
        CRASH_LOOP_LIMIT,
        CRASH_LOOP_WINDOW_MS,
    ];
}

/// How the primary's `tracing` output is written ([`Settings::logs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// One readable line per record (`tracing-subscriber`'s `fmt`, no
    /// colours).
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// The primary's logs: a format and a filter ([`Settings::logs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logs {
    pub(crate) format: LogFormat,
    pub(crate) filter: String,
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
    pub(crate) handoff_window: u32,
    pub(crate) handoff_deadline: Duration,
    pub(crate) shutdown_deadline: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) handle_signals: bool,
    pub(crate) reload_on_hangup: bool,
    pub(crate) message_window: u32,
    pub(crate) scheduling: Option<PolicyChoice>,
    pub(crate) upgrade_on_signal: bool,
    pub(crate) upgrade_timeout: Duration,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) worker_output: WorkerOutput,
    pub(crate) recycle: Recycle,
    pub(crate) metrics: Option<std::net::SocketAddr>,
    pub(crate) logs: Option<Logs>,
    pub(crate) scale_on_signals: bool,
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
            heartbeat: Some(Heartbeat::default()),
            handoff_window: DEFAULT_HANDOFF_WINDOW,
            handoff_deadline: DEFAULT_HANDOFF_DEADLINE,
            shutdown_deadline: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
            handle_signals: false,
            reload_on_hangup: false,
            message_window: cluster_ipc::DEFAULT_RECEIVE_WINDOW,
            scheduling: None,
            upgrade_on_signal: false,
            upgrade_timeout: Duration::from_secs(60),
            pid_file: None,
            worker_output: WorkerOutput::default(),
            recycle: Recycle::default(),
            metrics: None,
            logs: None,
            scale_on_signals: false,
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
    /// parallelism (number of CPUs; [`Settings::from_env`]: `WORKERS`).
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

    /// The crash-loop limit: how many runs that ended before the worker
    /// was ready (see [`CrashLoopLimit`]) a slot tolerates within a window
    /// before it gives up. Default: 10 per 60 s ([`Settings::from_env`]:
    /// `CLUSTER_CRASH_LOOP_LIMIT` and `CLUSTER_CRASH_LOOP_WINDOW_MS`).
    pub fn crash_loop_limit(&mut self, limit: CrashLoopLimit) -> &mut Self {
        self.crash_loop = limit;
        self
    }

    /// Heartbeats every `interval`, a worker silent for `timeout` killed.
    /// Default: on, 1 s and 5 s ([`Settings::from_env`]:
    /// `CLUSTER_HEARTBEAT_INTERVAL_MS` and `CLUSTER_HEARTBEAT_TIMEOUT_MS`);
    /// see [`Heartbeat`].
    pub fn heartbeat(&mut self, interval: Duration, timeout: Duration) -> &mut Self {
        self.heartbeat = Some(Heartbeat { interval, timeout });
        self
    }

    /// Turn the heartbeat off: a hung worker is then never detected (its
    /// connections still go elsewhere after the hand-off deadline).
    /// Default: on.
    pub fn no_heartbeat(&mut self) -> &mut Self {
        self.heartbeat = None;
        self
    }

    /// How many connections the primary may have handed to one worker, on
    /// one listener, that the worker has not acknowledged yet; a worker at
    /// its window gets no new connection until it acknowledges one (at
    /// least 1). Bounds what a hung worker can hold up, and with it the
    /// primary's descriptors. Default: 16 ([`Settings::from_env`]:
    /// `CLUSTER_HANDOFF_WINDOW`).
    pub fn handoff_window(&mut self, window: u32) -> &mut Self {
        self.handoff_window = window.max(1);
        self
    }

    /// How long a worker has to acknowledge a connection handed to it
    /// before the primary takes it back and gives it to another (the worker
    /// refuses it if it comes to it later), and the worker gets no new
    /// connection until it acknowledges something. Default: 1 s
    /// ([`Settings::from_env`]: `CLUSTER_HANDOFF_DEADLINE_MS`).
    pub fn handoff_deadline(&mut self, deadline: Duration) -> &mut Self {
        self.handoff_deadline = deadline.max(Duration::from_millis(1));
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

    /// Shut down gracefully on SIGTERM and SIGINT (as [`Cluster::shutdown`]
    /// does). Default: off (the signals keep their usual effect on the
    /// primary; its workers die with it). Applies when set, through
    /// `Cluster::new` or `Cluster::setup`: the handlers are installed then.
    ///
    /// [`Cluster::shutdown`]: crate::Cluster::shutdown
    pub fn handle_signals(&mut self) -> &mut Self {
        self.handle_signals = true;
        self
    }

    /// Reload every worker, one by one, on SIGHUP (as [`Cluster::reload`]
    /// does; the usual meaning of SIGHUP for a server, as for nginx or
    /// Gunicorn): the primary reports it with [`Event::ReloadStarted`] and
    /// [`Event::ReloadFinished`]. A SIGHUP during a reload starts another
    /// one after it; one during a shutdown is ignored. Default: off (SIGHUP
    /// keeps its usual effect: it ends the primary). Applies when set,
    /// through `Cluster::new` or `Cluster::setup`.
    ///
    /// [`Cluster::reload`]: crate::Cluster::reload
    /// [`Event::ReloadStarted`]: crate::Event::ReloadStarted
    /// [`Event::ReloadFinished`]: crate::Event::ReloadFinished
    pub fn reload_on_hangup(&mut self) -> &mut Self {
        self.reload_on_hangup = true;
        self
    }

    /// How many bytes of one worker's messages the primary holds undelivered
    /// before that worker's sends wait: the receive window of the primary's
    /// end of the channel (a message counts its encoded size plus 56 bytes;
    /// see `docs/ipc.md`, "Flow control"). A message stops counting once
    /// the program takes it ([`Message::into_value`](crate::Message::into_value)
    /// or dropping it). The worker's end has the default window, and its
    /// messages count until `Worker::recv` returns them. Only messages wait: connection hand-offs, their
    /// acknowledgements, heartbeats and disconnects never do, however many
    /// messages are unread. Default: 1 MiB
    /// ([`cluster_ipc::DEFAULT_RECEIVE_WINDOW`]).
    pub fn message_window(&mut self, bytes: u32) -> &mut Self {
        self.message_window = bytes.max(1);
        self
    }

    /// How connections to the workers' listening addresses are scheduled
    /// (Node's `cluster.schedulingPolicy`): [`PolicyKind::RoundRobin`] (the
    /// primary accepts and hands each connection over in turn),
    /// [`PolicyKind::None`] (the workers accept on a shared socket),
    /// [`PolicyKind::Sticky`], [`PolicyKind::LeastConnections`] or
    /// [`PolicyKind::PowerOfTwoChoices`]. Default: round-robin
    /// ([`Settings::from_env`]: `CLUSTER_SCHED_POLICY`, one of `rr`, `none`,
    /// `sticky`, `least-conn`, `p2c`).
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
    /// per distinct listening address (each gets its own instance).
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
    /// none ([`Settings::from_env`]: `PID_FILE`).
    pub fn pid_file(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.pid_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// The policy in force: the setting, else round-robin.
    pub(crate) fn resolve_policy(&self) -> PolicyChoice {
        self.scheduling
            .clone()
            .unwrap_or(PolicyChoice::Kind(PolicyKind::RoundRobin))
    }

    /// How forwarded worker lines are framed (with [`WorkerStdio::Piped`]).
    /// Default: [`WorkerOutput::Prefixed`].
    pub fn worker_output(&mut self, format: WorkerOutput) -> &mut Self {
        self.worker_output = format;
        self
    }

    /// Recycle a worker after `n` connections handed to it, plus a random
    /// `0..=jitter` per worker (Gunicorn's `max_requests`,
    /// `max_requests_jitter`; distributed policies only). Default: never
    /// ([`Settings::from_env`]: `MAX_REQUESTS`, `MAX_REQUESTS_JITTER`).
    pub fn max_requests(&mut self, n: u64, jitter: u64) -> &mut Self {
        self.recycle.max_requests = Some(n);
        self.recycle.jitter = jitter;
        self
    }

    /// Recycle a worker whose resident memory exceeds `bytes` (PM2's
    /// `max_memory_restart`). Default: never ([`Settings::from_env`]:
    /// `MAX_MEMORY_MB`).
    pub fn max_memory(&mut self, bytes: u64) -> &mut Self {
        self.recycle.max_memory = Some(bytes);
        self
    }

    /// Recycle a worker older than `age`. Default: never
    /// ([`Settings::from_env`]: `MAX_AGE_SECS`).
    pub fn max_age(&mut self, age: Duration) -> &mut Self {
        self.recycle.max_age = Some(age);
        self
    }

    /// How often the recycling limits are checked. Default: 1 s.
    pub fn recycle_check_interval(&mut self, every: Duration) -> &mut Self {
        self.recycle.check_every = every;
        self
    }

    /// Serve the cluster's [stats](crate::Cluster::stats) in Prometheus'
    /// text format at `http://<addr>/metrics` (feature `prometheus`;
    /// `Cluster::new` fails with [`Error::FeatureDisabled`] without it).
    /// The primary binds `addr` in `Cluster::new` ([`Error::Metrics`] if it
    /// cannot) and answers scrapes on a thread of its own, never on the
    /// runtime that supervises the workers nor on the network thread that
    /// hands connections over. The series are labelled by slot, so a
    /// reload, a recycle or a restart starts no new series. Default: off
    /// ([`Settings::from_env`]: `METRICS_PORT`, on 127.0.0.1).
    ///
    /// [`Error::FeatureDisabled`]: crate::Error::FeatureDisabled
    /// [`Error::Metrics`]: crate::Error::Metrics
    pub fn metrics(&mut self, addr: impl Into<std::net::SocketAddr>) -> &mut Self {
        self.metrics = Some(addr.into());
        self
    }

    /// Write the primary's `tracing` records (the cluster's lifecycle,
    /// `docs/operations.md`, and the program's own) to its stderr, in
    /// `format`, filtered by `filter` (`tracing`'s `EnvFilter` syntax:
    /// `warn`, `info,cluster_core=debug`), through cluster-core's output
    /// queue: a stalled reader of stderr never blocks the primary (a record
    /// is dropped and counted instead; see [`crate::output`]). Installed as
    /// the global subscriber by `Cluster::new` (feature `logs`; without it,
    /// [`Error::FeatureDisabled`]); a subscriber the program installed
    /// before is kept, and this setting then does nothing. Default: off
    /// ([`Settings::from_env`]: `LOG_FORMAT` and `RUST_LOG`).
    ///
    /// [`Error::FeatureDisabled`]: crate::Error::FeatureDisabled
    pub fn logs(&mut self, format: LogFormat, filter: impl Into<String>) -> &mut Self {
        self.logs = Some(Logs {
            format,
            filter: filter.into(),
        });
        self
    }

    /// Turn the logs of [`logs`](Self::logs) off.
    pub fn no_logs(&mut self) -> &mut Self {
        self.logs = None;
        self
    }

    /// Scale on SIGTTIN and SIGTTOU, like Gunicorn: SIGTTIN adds a worker
    /// (a new slot, [`Cluster::scale_to`] the count plus one), SIGTTOU
    /// removes the newest one (it drains; never below one worker). Default:
    /// off, and then the signals keep their default action, which *stops*
    /// the primary (state `T`: it supervises nothing and hands no
    /// connection over until SIGCONT). Installed by `Cluster::new`.
    ///
    /// [`Cluster::scale_to`]: crate::Cluster::scale_to
    pub fn scale_on_signals(&mut self) -> &mut Self {
        self.scale_on_signals = true;
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
        if other.scheduling.is_some() {
            self.scheduling.clone_from(&other.scheduling);
        }
        if other.pid_file.is_some() {
            self.pid_file.clone_from(&other.pid_file);
        }
        if other.logs.is_some() {
            self.logs.clone_from(&other.logs);
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
            handoff_window,
            handoff_deadline,
            shutdown_deadline,
            ready_timeout,
            handle_signals,
            reload_on_hangup,
            message_window,
            upgrade_on_signal,
            upgrade_timeout,
            worker_output,
            recycle,
            metrics,
            scale_on_signals
        );
        self
    }
}
