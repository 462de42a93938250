//! A typed snapshot of a cluster ([`Cluster::stats`](crate::Cluster::stats)):
//! per worker its pid, slot, state, uptime, the restarts of its slot, its
//! connections and messages, and its resident memory and CPU time read from
//! `/proc/<pid>/stat` and `/proc/<pid>/statm`. Cheap enough to take every
//! second (two small reads per worker; see `docs/operations.md` for its
//! measured cost). With the `prometheus` feature,
//! [`ClusterStats::render_prometheus`] renders it in Prometheus' text format.

#[cfg(test)]
mod tests;

use std::sync::OnceLock;
use std::time::Duration;

use crate::ConnectionStats;
use crate::event::{SlotId, WorkerId};
use crate::state::WorkerState;

/// The cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClusterStats {
    /// The live workers (not yet reaped), by id.
    pub workers: Vec<WorkerStats>,
    /// How many slots the cluster keeps filled.
    pub slots: usize,
}

/// One worker at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Its id.
    pub id: WorkerId,
    /// Its slot.
    pub slot: SlotId,
    /// Its process id.
    pub pid: u32,
    /// Its state.
    pub state: WorkerState,
    /// Time since it was started.
    pub uptime: Duration,
    /// Workers started in its slot before this one (restarts, reload and
    /// recycling replacements).
    pub restarts: u64,
    /// Connections handed to it and still open (distributed policies).
    pub connections: ConnectionStats,
    /// User messages received from it.
    pub messages: u64,
    /// Resident memory, bytes (`None`: the process is gone or `/proc` is
    /// not readable).
    pub rss_bytes: Option<u64>,
    /// User plus system CPU time (`None` like `rss_bytes`).
    pub cpu_time: Option<Duration>,
}

/// What `/proc` says of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStats {
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// User plus system CPU time.
    pub cpu_time: Option<Duration>,
}

/// [`read_proc`] for each of `pids`, in order, off the runtime's threads
/// (one task on tokio's blocking pool for them all); a runtime shutting
/// down gives `None`s.
pub(crate) async fn read_procs(pids: Vec<u32>) -> Vec<ProcStats> {
    let n = pids.len();
    if n == 0 {
        return Vec::new();
    }
    tokio::task::spawn_blocking(move || pids.into_iter().map(read_proc).collect())
        .await
        .unwrap_or_else(|_| vec![ProcStats::default(); n])
}

/// Read `/proc/<pid>/statm` and `/proc/<pid>/stat` (blocking file reads:
/// from async code, call it on the blocking pool, as `Cluster::stats` does):
/// a process that is gone (or a field that does not parse) gives `None`s,
/// never an error.
pub fn read_proc(pid: u32) -> ProcStats {
    let rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| parse_statm_rss_pages(&s))
        .map(|pages| pages.saturating_mul(page_size()));
    let cpu_time = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat_cpu_ticks(&s))
        .map(|ticks| {
            let hz = clock_ticks();
            Duration::from_secs(ticks / hz)
                + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
        });
    ProcStats {
        rss_bytes,
        cpu_time,
    }
}

/// The resident pages: `statm`'s second field.
pub(crate) fn parse_statm_rss_pages(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of a `stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses: fields are
/// counted from the last `)`.
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (the state): utime is the 12th from there.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(4096)
    })
}

fn clock_ticks() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(100)
    })
}

/// A state's name in the exposition (`none`, `online`, `listening`,
/// `disconnected`, `dead`).
pub fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::None => "none",
        WorkerState::Online => "online",
        WorkerState::Listening => "listening",
        WorkerState::Disconnected => "disconnected",
        WorkerState::Dead => "dead",
    }
}

#[cfg(feature = "prometheus")]
impl ClusterStats {
    /// The snapshot in Prometheus' text exposition format (version 0.0.4),
    /// every per-worker series labelled `worker`, `slot` and `pid`:
    /// `cluster_slots`, `cluster_workers`, `cluster_worker_up` (with a
    /// `state` label), `cluster_worker_uptime_seconds`,
    /// `cluster_worker_restarts`, `cluster_worker_connections_handed_total`,
    /// `cluster_worker_connections_open`, `cluster_worker_messages_total`,
    /// `cluster_worker_resident_memory_bytes`,
    /// `cluster_worker_cpu_seconds_total` (the last two only when `/proc`
    /// had them).
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(256 + self.workers.len() * 900);
        let mut family =
            |name: &str,
             kind: &str,
             help: &str,
             rows: &mut dyn Iterator<Item = (String, String)>| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                for (labels, value) in rows {
                    let _ = writeln!(out, "{name}{labels} {value}");
                }
            };
        family(
            "cluster_slots",
            "gauge",
            "Slots the cluster keeps filled.",
            &mut std::iter::once((String::new(), self.slots.to_string())),
        );
        family(
            "cluster_workers",
            "gauge",
            "Live workers.",
            &mut std::iter::once((String::new(), self.workers.len().to_string())),
        );
        let labels = |w: &WorkerStats| {
            format!(
                "{{worker=\"{}\",slot=\"{}\",pid=\"{}\"",
                w.id, w.slot, w.pid
            )
        };
        let per = |f: &dyn Fn(&WorkerStats) -> Option<String>| -> Vec<(String, String)> {
            self.workers
                .iter()
                .filter_map(|w| f(w).map(|v| (format!("{}}}", labels(w)), v)))
                .collect()
        };
        family(
            "cluster_worker_up",
            "gauge",
            "1 per live worker, labelled with its state.",
            &mut self.workers.iter().map(|w| {
                (
                    format!("{},state=\"{}\"}}", labels(w), state_name(w.state)),
                    "1".to_owned(),
                )
            }),
        );
        family(
            "cluster_worker_uptime_seconds",
            "gauge",
            "Seconds since the worker was started.",
            &mut per(&|w| Some(format!("{:.3}", w.uptime.as_secs_f64()))).into_iter(),
        );
        family(
            "cluster_worker_restarts",
            "gauge",
            "Workers started in this worker's slot before it.",
            &mut per(&|w| Some(w.restarts.to_string())).into_iter(),
        );
        family(
            "cluster_worker_connections_handed_total",
            "counter",
            "Connections handed to the worker and acknowledged.",
            &mut per(&|w| Some(w.connections.handed.to_string())).into_iter(),
        );
        family(
            "cluster_worker_connections_open",
            "gauge",
            "Connections handed to the worker and still open.",
            &mut per(&|w| Some(w.connections.open.to_string())).into_iter(),
        );
        family(
            "cluster_worker_messages_total",
            "counter",
            "User messages received from the worker.",
            &mut per(&|w| Some(w.messages.to_string())).into_iter(),
        );
        family(
            "cluster_worker_resident_memory_bytes",
            "gauge",
            "Resident memory of the worker process.",
            &mut per(&|w| w.rss_bytes.map(|b| b.to_string())).into_iter(),
        );
        family(
            "cluster_worker_cpu_seconds_total",
            "counter",
            "User and system CPU time of the worker process.",
            &mut per(&|w| w.cpu_time.map(|t| format!("{:.3}", t.as_secs_f64()))).into_iter(),
        );
        out
    }
}
