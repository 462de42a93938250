//! `--metrics tcp://127.0.0.1:PORT`: the workers in Prometheus' text
//! format, one series per worker labelled `slot`, `worker` and `pid`.
//!
//! A minimal HTTP/1.1 server: it reads one request head (bounded in size
//! and time), answers `GET /metrics` (any path) with the snapshot, and
//! closes the connection.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::control::{Incoming, Reply, Request, Status};

/// The exposition of `status`.
pub fn render(status: &Status) -> String {
    let mut out = String::with_capacity(512 + status.workers.len() * 600);
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
    family(
        "procwork_workers",
        "gauge",
        "Live worker processes (current, starting and stopping).",
        &[(String::new(), status.workers.len().to_string())],
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
    let labels = |w: &crate::control::WorkerRow, extra: &str| {
        format!(
            "{{slot=\"{}\",worker=\"{}\",pid=\"{}\"{extra}}}",
            w.slot, w.worker, w.pid
        )
    };
    let per = |f: &dyn Fn(&crate::control::WorkerRow) -> Option<String>| -> Vec<(String, String)> {
        status
            .workers
            .iter()
            .filter_map(|w| f(w).map(|v| (labels(w, ""), v)))
            .collect()
    };
    let up: Vec<(String, String)> = status
        .workers
        .iter()
        .map(|w| {
            (
                labels(w, &format!(",state=\"{}\"", w.state)),
                "1".to_owned(),
            )
        })
        .collect();
    family(
        "procwork_worker_up",
        "gauge",
        "1 per live worker, labelled with its state.",
        &up,
    );
    family(
        "procwork_worker_uptime_seconds",
        "gauge",
        "Seconds since the worker started.",
        &per(&|w| Some(format!("{:.3}", w.uptime_ms as f64 / 1000.0))),
    );
    family(
        "procwork_worker_restarts",
        "gauge",
        "Workers started in this worker's slot before it.",
        &per(&|w| Some(w.restarts.to_string())),
    );
    family(
        "procwork_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the worker process.",
        &per(&|w| w.rss_bytes.map(|b| b.to_string())),
    );
    family(
        "procwork_worker_cpu_seconds_total",
        "counter",
        "User and system CPU time of the worker process.",
        &per(&|w| w.cpu_ms.map(|ms| format!("{:.3}", ms as f64 / 1000.0))),
    );
    out
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
