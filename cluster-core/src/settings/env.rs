//! The operator's variables, read on request: [`Settings::from_env`],
//! [`Settings::read_env`] and [`Settings::read_vars`] (the same from any
//! list of pairs: a test's, a configuration file's).
//!
//! Each variable of [`env_vars`](super::env_vars) that is set and not empty
//! replaces its setting; one that does not parse is an
//! [`Error::EnvVar`] naming the variable, its value and what was expected
//! (or [`Error::SchedulingPolicy`] for `CLUSTER_SCHED_POLICY`). Nothing
//! here changes the environment.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sched_policy::PolicyKind;

#[cfg(feature = "logs")]
use super::{LogFormat, Logs};
use super::{Settings, env_vars as var};
use crate::error::{Error, Result};

/// The filter of logs turned on by `LOG_FORMAT` alone.
#[cfg(feature = "logs")]
const DEFAULT_LOG_FILTER: &str = "info";

impl Settings {
    /// The defaults, then the operator's variables ([`env_vars`]) read from
    /// this process's environment: the one call that configures a cluster
    /// from its environment (`Cluster::new` reads none of them).
    ///
    /// ```no_run
    /// use cluster_core::{Cluster, Settings};
    ///
    /// # async fn f() -> cluster_core::Result<()> {
    /// // WORKERS=4 CLUSTER_SCHED_POLICY=least-conn MAX_AGE_SECS=3600 METRICS_PORT=9100 …
    /// let mut settings = Settings::from_env()?;
    /// settings.handle_signals().reload_on_hangup().scale_on_signals();
    /// Cluster::<()>::new(settings)?.run().await
    /// # }
    /// ```
    ///
    /// [`env_vars`]: crate::env_vars
    pub fn from_env() -> Result<Self> {
        let mut settings = Settings::new();
        settings.read_env()?;
        Ok(settings)
    }

    /// Read the operator's variables ([`env_vars`](crate::env_vars)) from
    /// this process's environment on top of what is set: a program sets its
    /// own defaults first, the operator's variables replace them, and what
    /// the program sets after wins.
    pub fn read_env(&mut self) -> Result<&mut Self> {
        self.read_vars(std::env::vars_os())
    }

    /// [`read_env`](Self::read_env) from `vars` instead of the environment.
    ///
    /// ```
    /// use cluster_core::{Error, Settings};
    ///
    /// let mut settings = Settings::new();
    /// settings.read_vars([("WORKERS", "3"), ("MAX_REQUESTS", "10000")])?;
    /// let err = Settings::new().read_vars([("MAX_AGE_SECS", "soon")]).unwrap_err();
    /// assert!(matches!(err, Error::EnvVar { name: "MAX_AGE_SECS", .. }));
    /// assert_eq!(err.to_string(), r#"MAX_AGE_SECS="soon": expected a number of seconds, at least 1"#);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn read_vars<I, K, V>(&mut self, vars: I) -> Result<&mut Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let vars = Vars(
            vars.into_iter()
                .filter(|(k, _)| var::ALL.iter().any(|name| OsStr::new(name) == k.as_ref()))
                .map(|(k, v)| (k.as_ref().to_os_string(), v.as_ref().to_os_string()))
                .collect(),
        );
        self.apply(&vars)?;
        Ok(self)
    }

    fn apply(&mut self, vars: &Vars) -> Result<()> {
        if let Some(n) = vars.number::<usize>(var::WORKERS, "a number of workers, at least 1")? {
            if n == 0 {
                return Err(vars.error(var::WORKERS, "a number of workers, at least 1"));
            }
            self.n_workers(n);
        }
        if let Some(name) = vars.text(var::SCHED_POLICY)? {
            let kind = name
                .parse::<PolicyKind>()
                .map_err(|source| Error::SchedulingPolicy {
                    name: var::SCHED_POLICY,
                    source,
                })?;
            self.scheduling_policy(kind);
        }
        if let Some(n) = vars.number(var::MAX_REQUESTS, "a number of connections")? {
            self.recycle.max_requests = Some(n);
        }
        if let Some(n) = vars.number(var::MAX_REQUESTS_JITTER, "a number of connections")? {
            self.recycle.jitter = n;
        }
        if let Some(mb) = vars.number::<u64>(var::MAX_MEMORY_MB, "a number of MiB")? {
            self.max_memory(mb.saturating_mul(1024 * 1024));
        }
        if let Some(secs) =
            vars.number::<u64>(var::MAX_AGE_SECS, "a number of seconds, at least 1")?
        {
            if secs == 0 {
                return Err(vars.error(var::MAX_AGE_SECS, "a number of seconds, at least 1"));
            }
            self.max_age(Duration::from_secs(secs));
        }
        if let Some(path) = vars.os(var::PID_FILE) {
            self.pid_file(PathBuf::from(path));
        }
        if let Some(port) = vars.number::<u16>(var::METRICS_PORT, "a port number")? {
            if cfg!(not(feature = "prometheus")) {
                return Err(vars.error(
                    var::METRICS_PORT,
                    "unset: cluster-core was built without its `prometheus` feature",
                ));
            }
            self.metrics((Ipv4Addr::LOCALHOST, port));
        }
        self.apply_logs(vars)?;
        if let Some(n) = vars.number::<u32>(var::HANDOFF_WINDOW, "a number of connections")? {
            self.handoff_window(n);
        }
        if let Some(ms) = vars.number(var::HANDOFF_DEADLINE_MS, "a number of milliseconds")? {
            self.handoff_deadline(Duration::from_millis(ms));
        }
        let interval: Option<u64> =
            vars.number(var::HEARTBEAT_INTERVAL_MS, "a number of milliseconds")?;
        let timeout: Option<u64> =
            vars.number(var::HEARTBEAT_TIMEOUT_MS, "a number of milliseconds")?;
        match timeout {
            Some(0) => {
                self.no_heartbeat();
            }
            _ if interval.is_none() && timeout.is_none() => {}
            _ => {
                let hb = self.heartbeat.unwrap_or_default();
                self.heartbeat(
                    interval.map_or(hb.interval, |ms| Duration::from_millis(ms.max(1))),
                    timeout.map_or(hb.timeout, Duration::from_millis),
                );
            }
        }
        if let Some(n) = vars.number(var::CRASH_LOOP_LIMIT, "a number of failed starts")? {
            self.crash_loop.max_restarts = n;
        }
        if let Some(ms) = vars.number(var::CRASH_LOOP_WINDOW_MS, "a number of milliseconds")? {
            self.crash_loop.window = Duration::from_millis(ms);
        }
        Ok(())
    }

    /// `LOG_FORMAT` and `RUST_LOG`: without the `logs` feature, a
    /// `LOG_FORMAT` is an error and `RUST_LOG` is left to whatever else
    /// reads it.
    #[cfg(not(feature = "logs"))]
    fn apply_logs(&mut self, vars: &Vars) -> Result<()> {
        match vars.text(var::LOG_FORMAT)? {
            None => Ok(()),
            Some(_) => Err(vars.error(
                var::LOG_FORMAT,
                "unset: cluster-core was built without its `logs` feature",
            )),
        }
    }

    /// `LOG_FORMAT` and `RUST_LOG`.
    #[cfg(feature = "logs")]
    fn apply_logs(&mut self, vars: &Vars) -> Result<()> {
        let format = match vars.text(var::LOG_FORMAT)? {
            None => None,
            Some(f) => match f.to_ascii_lowercase().as_str() {
                "plain" | "text" => Some(Some(LogFormat::Plain)),
                "json" => Some(Some(LogFormat::Json)),
                "off" | "none" => Some(None),
                _ => return Err(vars.error(var::LOG_FORMAT, "plain, json or off")),
            },
        };
        let filter = vars.text(var::RUST_LOG)?;
        if let Some(filter) = filter
            && !crate::logs::is_filter(filter)
        {
            return Err(vars.error(
                var::RUST_LOG,
                "a tracing filter (`info`, `warn,cluster_core=debug`)",
            ));
        }
        match format {
            Some(None) => {
                self.no_logs();
            }
            Some(Some(format)) => {
                let filter = filter
                    .map(str::to_owned)
                    .or_else(|| self.logs.as_ref().map(|l| l.filter.clone()));
                self.logs = Some(Logs {
                    format,
                    filter: filter.unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned()),
                });
            }
            None => {
                if let Some(filter) = filter {
                    let format = self.logs.as_ref().map_or(LogFormat::Plain, |l| l.format);
                    self.logs = Some(Logs {
                        format,
                        filter: filter.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The variables of [`env_vars`](super::env_vars) that were given.
struct Vars(HashMap<OsString, OsString>);

impl Vars {
    /// The value of `name`, unless unset or blank.
    fn os(&self, name: &str) -> Option<&OsStr> {
        self.0
            .get(OsStr::new(name))
            .map(OsString::as_os_str)
            .filter(|v| !v.to_string_lossy().trim().is_empty())
    }

    /// The value of `name` as text, trimmed; an error if it is not UTF-8.
    fn text(&self, name: &'static str) -> Result<Option<&str>> {
        match self.os(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|v| Some(v.trim()))
                .ok_or_else(|| self.error(name, "UTF-8 text")),
        }
    }

    /// The value of `name` parsed as a `T`.
    fn number<T: FromStr>(&self, name: &'static str, expected: &'static str) -> Result<Option<T>> {
        match self.text(name)? {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| self.error(name, expected)),
        }
    }

    /// The error for `name`'s value.
    fn error(&self, name: &'static str, expected: &'static str) -> Error {
        Error::EnvVar {
            name,
            value: self
                .0
                .get(OsStr::new(name))
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default(),
            expected,
        }
    }
}
