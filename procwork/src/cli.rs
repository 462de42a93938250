//! The command line, as `clap` derive types: `procwork run [options] --
//! PROGRAM [ARGS...]`, `procwork status`, `reload`, `scale N`, `stop`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spawn_core::Signal;

use crate::error::ValueError;
use crate::listen::{ListenAddr, ListenSpec};
use crate::units::{parse_duration, parse_size};

/// Cluster any program: N copies sharing listening sockets, restarted,
/// reloaded one by one with no failed request.
#[derive(Debug, Parser)]
#[command(name = "procwork", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run N copies of PROGRAM, each given the listening sockets (fds 3..,
    /// LISTEN_FDS) and a NOTIFY_SOCKET, and supervise them.
    Run(Box<RunArgs>),
    /// Show the workers of a running procwork: slot, pid, state, uptime,
    /// restarts, memory, CPU.
    Status(StatusArgs),
    /// Replace every worker, one slot at a time (SIGHUP does the same).
    Reload(Target),
    /// Keep N workers (SIGTTIN adds one, SIGTTOU removes one).
    Scale(ScaleArgs),
    /// Stop every worker and exit (SIGTERM does the same).
    Stop(Target),
}

/// Which running procwork a subcommand talks to.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The instance name given to `run --name` (default: the working
    /// directory's instance).
    #[arg(long, value_parser = crate::paths::parse_name)]
    pub name: Option<String>,
    /// The control socket (default: in $XDG_RUNTIME_DIR/procwork or
    /// /tmp/procwork-UID, per instance).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

/// `procwork status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The instance.
    #[command(flatten)]
    pub target: Target,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `procwork scale N`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The number of workers to keep.
    #[arg(value_name = "N")]
    pub workers: usize,
    /// The instance.
    #[command(flatten)]
    pub target: Target,
}

/// How procwork writes its own lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// Readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// How the workers' output lines are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkerOutputArg {
    /// `[worker N] ` before each line.
    Prefixed,
    /// The lines unchanged.
    Raw,
    /// `{"worker":N,"stream":"stdout","line":"..."}`.
    Json,
}

/// `procwork run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Number of workers (default: the number of CPUs).
    #[arg(short = 'w', long = "workers", value_name = "N")]
    pub workers: Option<usize>,
    /// A socket to open and pass to every worker: tcp://HOST:PORT or
    /// unix:PATH, optionally NAME= first (its LISTEN_FDNAMES name).
    /// Repeatable; sockets procwork was given by systemd are passed too.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<ListenSpec>,
    /// The mode of the Unix-domain socket files procwork creates, in octal.
    #[arg(long, value_name = "MODE", default_value = "0666", value_parser = parse_mode)]
    pub socket_mode: u32,
    /// Count a worker ready this long after its start, for programs that
    /// do not send READY=1 (without it, READY=1 is required).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ready_after: Option<Duration>,
    /// A worker not ready this long after its start is a failed start.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// A worker that sent WATCHDOG=1 and then none for this long is killed
    /// and replaced (its WATCHDOG_USEC).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub watchdog: Option<Duration>,
    /// The signal that asks a worker to stop (to its process).
    #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = parse_signal)]
    pub stop_signal: Signal,
    /// How long a stopping worker may take before its process group is
    /// SIGKILLed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Slots replaced at once by a rolling reload.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub reload_parallel: usize,
    /// Replace a worker whose resident memory exceeds this (512M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Replace a worker older than this.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Serve Prometheus metrics at tcp://HOST:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics)]
    pub metrics: Option<std::net::SocketAddr>,
    /// procwork's own lines.
    #[arg(long, value_enum, default_value = "plain")]
    pub log_format: LogFormatArg,
    /// How the workers' output is forwarded.
    #[arg(long, value_enum, default_value = "prefixed")]
    pub worker_output: WorkerOutputArg,
    /// The instance name (default: one per working directory).
    #[arg(long, value_parser = crate::paths::parse_name)]
    pub name: Option<String>,
    /// The control socket (default: per instance).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// The pid file (default: beside the control socket).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM [ARGS]")]
    pub command: Vec<OsString>,
}

/// Parses an octal mode (`0660`, `660`).
///
/// # Errors
/// [`ValueError::Mode`].
pub fn parse_mode(text: &str) -> Result<u32, ValueError> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| ValueError::Mode {
            text: text.to_owned(),
        })
}

/// Parses a signal: `SIGTERM`, `TERM`, `term` or its number.
///
/// # Errors
/// [`ValueError::Signal`].
pub fn parse_signal(text: &str) -> Result<Signal, ValueError> {
    let bad = || ValueError::Signal {
        text: text.to_owned(),
    };
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    (1..=64)
        .filter_map(Signal::from_raw)
        .find(|s| s.as_str() == name)
        .ok_or_else(bad)
}

fn parse_metrics(text: &str) -> Result<std::net::SocketAddr, ValueError> {
    match text.parse::<ListenSpec>()?.addr {
        ListenAddr::Tcp(addr) => Ok(addr),
        ListenAddr::Unix(_) => Err(ValueError::Listen {
            text: text.to_owned(),
            why: "metrics are served on tcp://HOST:PORT",
        }),
    }
}
