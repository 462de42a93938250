//! `procwork status`'s table: slot, worker, pid, state, uptime, restarts,
//! resident memory and CPU, one row per live worker, as `pm2 ls` shows.

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::time::Duration;

use crate::control::Status;
use crate::units::{short_duration, short_size};

/// The table, with a header line naming the instance.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let ready = status.workers.iter().filter(|w| w.state == "ready").count();
    let _ = writeln!(
        out,
        "procwork {} (pid {}{}): {} slot(s), {} ready{}",
        status.name,
        status.pid,
        status
            .rss_bytes
            .map(|b| format!(", {}", short_size(b)))
            .unwrap_or_default(),
        status.slots,
        ready,
        if status.reloading { ", reloading" } else { "" }
    );
    let _ = writeln!(out, "command: {}", status.command.join(" "));
    if !status.listen.is_empty() {
        let _ = writeln!(out, "listen: {}", status.listen.join(", "));
    }
    let header = [
        "SLOT", "WORKER", "PID", "STATE", "UPTIME", "RESTARTS", "MEM", "CPU", "STATUS",
    ];
    let mut rows: Vec<[String; 9]> = vec![header.map(str::to_owned)];
    for w in &status.workers {
        let uptime = Duration::from_millis(w.uptime_ms);
        let cpu = w.cpu_ms.map_or_else(
            || "-".to_owned(),
            |ms| {
                // The lifetime average, as `ps` shows %CPU.
                let pct = if w.uptime_ms == 0 {
                    0.0
                } else {
                    ms as f64 * 100.0 / w.uptime_ms as f64
                };
                format!("{pct:.1}%")
            },
        );
        rows.push([
            w.slot.to_string(),
            w.worker.to_string(),
            w.pid.to_string(),
            w.state.clone(),
            short_duration(uptime),
            w.restarts.to_string(),
            w.rss_bytes.map_or_else(|| "-".to_owned(), short_size),
            cpu,
            w.status.clone().unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 8 {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
