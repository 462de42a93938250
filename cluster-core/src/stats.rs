//! A typed snapshot of a cluster ([`Cluster::stats`](crate::Cluster::stats)):
//! per worker its pid, slot, state, uptime, the restarts of its slot, its
//! connections and messages, and its resident memory and CPU time read from
//! `/proc/<pid>/stat`. Cheap enough to take every second (one small read
//! per worker; see `docs/operations.md` for its measured cost). With the `prometheus` feature,
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
    /// Whether it is its slot's current worker (not a reload's or a
    /// recycle's predecessor draining, nor a replacement not yet ready).
    pub current: bool,
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

/// Read `/proc/<pid>/stat`, one read for both figures (a blocking file
/// read: from async code, call it on the blocking pool, as `Cluster::stats`
/// does): a process that is gone (or a field that does not parse) gives
/// `None`s, never an error.
pub fn read_proc(pid: u32) -> ProcStats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let rss_bytes = stat
        .as_deref()
        .and_then(parse_stat_rss_pages)
        .map(|pages| pages.saturating_mul(page_size()));
    let cpu_time = stat.as_deref().and_then(parse_stat_cpu_ticks).map(|ticks| {
        let hz = clock_ticks();
        Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
    });
    ProcStats {
        rss_bytes,
        cpu_time,
    }
}

/// The resident pages: field 24 (`rss`) of a `stat` line, what `statm`'s
/// second field says, counted from the last `)` as for the CPU time.
pub(crate) fn parse_stat_rss_pages(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3: field 24 is the 22nd from there.
    rest.split_ascii_whitespace().nth(21)?.parse().ok()
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
    /// The snapshot in Prometheus' text exposition format (version 0.0.4).
    ///
    /// The series stay bounded: the per-worker series are labelled by
    /// `slot` alone, and describe each slot's current worker (a reload's,
    /// recycle's or restart's successor takes over its predecessor's series;
    /// a counter then starts again from zero, which Prometheus reads as a
    /// reset), never by pid or worker id, which change at every restart. A
    /// slot's number changes only when scaling adds one. The families:
    /// `cluster_slots`; `cluster_workers{state}` (every live worker,
    /// draining predecessors included, by state: `none`, `online`,
    /// `listening`, `disconnected`, `dead`; each state always present);
    /// and per slot `cluster_worker_up` (1, with the worker's `state`),
    /// `cluster_worker_pid`, `cluster_worker_uptime_seconds`,
    /// `cluster_worker_restarts`, `cluster_worker_connections_handed_total`,
    /// `cluster_worker_connections_open`, `cluster_worker_messages_total`,
    /// `cluster_worker_resident_memory_bytes` and
    /// `cluster_worker_cpu_seconds_total` (the last two when `/proc` had
    /// them).
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(1024 + self.workers.len() * 600);
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
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
            &[(String::new(), self.slots.to_string())],
        );
        let states = [
            WorkerState::None,
            WorkerState::Online,
            WorkerState::Listening,
            WorkerState::Disconnected,
            WorkerState::Dead,
        ];
        let by_state: Vec<_> = states
            .iter()
            .map(|s| {
                let n = self.workers.iter().filter(|w| w.state == *s).count();
                (format!("{{state=\"{}\"}}", state_name(*s)), n.to_string())
            })
            .collect();
        family(
            "cluster_workers",
            "gauge",
            "Live worker processes, by state (draining predecessors included).",
            &by_state,
        );
        let mut current: Vec<&WorkerStats> = self.workers.iter().filter(|w| w.current).collect();
        current.sort_by_key(|w| w.slot);
        let per = |f: &dyn Fn(&WorkerStats) -> Option<String>| -> Vec<(String, String)> {
            current
                .iter()
                .filter_map(|w| Some((format!("{{slot=\"{}\"}}", w.slot), f(w)?)))
                .collect()
        };
        let up: Vec<_> = current
            .iter()
            .map(|w| {
                (
                    format!("{{slot=\"{}\",state=\"{}\"}}", w.slot, state_name(w.state)),
                    "1".to_owned(),
                )
            })
            .collect();
        family(
            "cluster_worker_up",
            "gauge",
            "1 per slot with a current worker, labelled with its state.",
            &up,
        );
        family(
            "cluster_worker_pid",
            "gauge",
            "The process id of the slot's current worker.",
            &per(&|w| Some(w.pid.to_string())),
        );
        family(
            "cluster_worker_uptime_seconds",
            "gauge",
            "Seconds since the slot's current worker was started.",
            &per(&|w| Some(format!("{:.3}", w.uptime.as_secs_f64()))),
        );
        family(
            "cluster_worker_restarts",
            "gauge",
            "Workers started in the slot before its current one.",
            &per(&|w| Some(w.restarts.to_string())),
        );
        family(
            "cluster_worker_connections_handed_total",
            "counter",
            "Connections handed to the slot's current worker and acknowledged.",
            &per(&|w| Some(w.connections.handed.to_string())),
        );
        family(
            "cluster_worker_connections_open",
            "gauge",
            "Connections handed to the slot's current worker and still open.",
            &per(&|w| Some(w.connections.open.to_string())),
        );
        family(
            "cluster_worker_messages_total",
            "counter",
            "User messages received from the slot's current worker.",
            &per(&|w| Some(w.messages.to_string())),
        );
        family(
            "cluster_worker_resident_memory_bytes",
            "gauge",
            "Resident memory of the slot's current worker.",
            &per(&|w| w.rss_bytes.map(|b| b.to_string())),
        );
        family(
            "cluster_worker_cpu_seconds_total",
            "counter",
            "User and system CPU time of the slot's current worker.",
            &per(&|w| w.cpu_time.map(|t| format!("{:.3}", t.as_secs_f64()))),
        );
        out
    }
}
