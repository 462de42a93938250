//! `--metrics tcp://127.0.0.1:PORT`: the workers in Prometheus' text
//! format, one series per slot (its current worker), labelled `slot`.
//!
//! A minimal HTTP/1.1 server: it reads one request head (bounded in size
//! and time), answers `GET /metrics` (any path) with the snapshot, and
//! closes the connection.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::control::{Incoming, Reply, Request, Status, WorkerRow};

/// The states a worker row can be in, each always present in
/// `procwork_workers{state}`.
const STATES: [&str; 3] = ["starting", "ready", "stopping"];

/// The exposition of `status`.
///
/// The series stay bounded, as cluster-core's do: the per-worker series
/// are labelled by `slot` alone and describe the slot's current worker
/// (its ready one, else the one starting, else the one stopping; the
/// newest of equals), so a restart, a reload or a recycle starts no new
/// series; its pid and id are values (`procwork_worker_pid`,
/// `procwork_worker_id`), not labels. `procwork_workers{state}` counts
/// every live worker, a reload's successors and the workers still
/// stopping included.
pub fn render(status: &Status) -> String {
    let mut out = String::with_capacity(512 + status.slots * 600);
    let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "procwork_slots",
        "gauge",
        "Slots procwork keeps filled.",
        &[(String::new(), status.slots.to_string())],
    );
    let by_state: Vec<(String, String)> = STATES
        .iter()
        .map(|state| {
            let n = status.workers.iter().filter(|w| w.state == *state).count();
            (format!("{{state=\"{state}\"}}"), n.to_string())
        })
        .collect();
    family(
        "procwork_workers",
        "gauge",
        "Live worker processes by state (current, starting and stopping).",
        &by_state,
    );
    family(
        "procwork_reloading",
        "gauge",
        "1 while a rolling reload runs.",
        &[(String::new(), u8::from(status.reloading).to_string())],
    );
    if let Some(rss) = status.rss_bytes {
        family(
            "procwork_resident_memory_bytes",
            "gauge",
            "Resident memory of procwork itself.",
            &[(String::new(), rss.to_string())],
        );
    }
    let current = current_per_slot(&status.workers);
    let per = |f: &dyn Fn(&WorkerRow) -> Option<String>| -> Vec<(String, String)> {
        current
            .iter()
            .filter_map(|w| f(w).map(|v| (format!("{{slot=\"{}\"}}", w.slot), v)))
            .collect()
    };
    let up: Vec<(String, String)> = current
        .iter()
        .map(|w| {
            (
                format!("{{slot=\"{}\",state=\"{}\"}}", w.slot, w.state),
                "1".to_owned(),
            )
        })
        .collect();
    family(
        "procwork_worker_up",
        "gauge",
        "1 per slot with a live worker, labelled with its current worker's state.",
        &up,
    );
    family(
        "procwork_worker_pid",
        "gauge",
        "The pid of the slot's current worker.",
        &per(&|w| Some(w.pid.to_string())),
    );
    family(
        "procwork_worker_id",
        "gauge",
        "The id of the slot's current worker (counts up, never reused).",
        &per(&|w| Some(w.worker.to_string())),
    );
    family(
        "procwork_worker_uptime_seconds",
        "gauge",
        "Seconds since the slot's current worker started.",
        &per(&|w| Some(format!("{:.3}", w.uptime_ms as f64 / 1000.0))),
    );
    family(
        "procwork_worker_restarts",
        "gauge",
        "Workers started in the slot before its current one.",
        &per(&|w| Some(w.restarts.to_string())),
    );
    family(
        "procwork_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the slot's current worker.",
        &per(&|w| w.rss_bytes.map(|b| b.to_string())),
    );
    family(
        "procwork_worker_cpu_seconds_total",
        "counter",
        "User and system CPU time of the slot's current worker (a successor starts from zero: a counter reset).",
        &per(&|w| w.cpu_ms.map(|ms| format!("{:.3}", ms as f64 / 1000.0))),
    );
    out
}

/// Each slot's current worker, by slot: its ready one, else the one
/// starting, else the one stopping; the newest of equals.
fn current_per_slot(workers: &[WorkerRow]) -> Vec<&WorkerRow> {
    let rank = |w: &WorkerRow| match w.state.as_str() {
        "ready" => 2,
        "starting" => 1,
        _ => 0,
    };
    let mut current: std::collections::BTreeMap<u64, &WorkerRow> = Default::default();
    for w in workers {
        let entry = current.entry(w.slot).or_insert(w);
        if (rank(w), w.worker) > (rank(entry), entry.worker) {
            *entry = w;
        }
    }
    current.into_values().collect()
}

/// Serves the metrics on `listener` until the supervisor is gone.
pub async fn serve(listener: TcpListener, to_supervisor: mpsc::UnboundedSender<Incoming>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if to_supervisor.is_closed() {
            return;
        }
        tokio::spawn(answer(stream, to_supervisor.clone()));
    }
}

async fn answer(mut stream: TcpStream, to_supervisor: mpsc::UnboundedSender<Incoming>) {
    let mut head = Vec::with_capacity(1024);
    let read_head = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), read_head).await,
        Ok(true)
    ) {
        return;
    }
    let (tx, rx) = oneshot::channel();
    if to_supervisor.send((Request::Status, tx)).is_err() {
        return;
    }
    let (code, body) = match rx.await {
        Ok(Reply::Status(status)) => ("200 OK", render(&status)),
        _ => (
            "503 Service Unavailable",
            "procwork is exiting\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        stream.write_all(response.as_bytes()),
    )
    .await;
}

#[cfg(test)]
mod tests;
