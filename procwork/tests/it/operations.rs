//! What an operator does to a running instance: scale it (`procwork
//! scale`, SIGTTIN, SIGTTOU), read its metrics, and let it replace workers
//! that are too old or stop feeding their watchdog.

use std::io::{Read, Write};
use std::time::Duration;

use crate::support::{App, Instance, signal, workers_in};

#[test]
fn scale_by_command_and_by_signal() {
    let mut pw = Instance::start(
        &["-w", "1", "--listen", "tcp://127.0.0.1:0"],
        &App::Node.command(),
        &[],
    );
    pw.wait_line("all 1 worker(s) ready", Duration::from_secs(30));
    let out = pw.ctl(&["scale", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pw.wait_status("3 ready workers", |s| {
        s["slots"] == 3 && workers_in(s, "ready").len() == 3
    });
    signal(pw.child.id(), libc::SIGTTIN);
    pw.wait_status("4 ready workers", |s| {
        s["slots"] == 4 && workers_in(s, "ready").len() == 4
    });
    signal(pw.child.id(), libc::SIGTTOU);
    let status = pw.wait_status("3 workers left", |s| {
        s["slots"] == 3 && s["workers"].as_array().unwrap().len() == 3
    });
    let slots: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(slots, [1, 2, 3], "the newest slot is the one removed");
    let zero = pw.ctl(&["scale", "0"]);
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("at least 1 worker"));
    assert!(pw.terminate().success());
}

#[test]
fn metrics_are_labelled_by_slot() {
    let mut pw = Instance::start(
        &[
            "-w",
            "2",
            "--listen",
            "tcp://127.0.0.1:0",
            "--metrics",
            "tcp://127.0.0.1:0",
        ],
        &App::Python.command(),
        &[],
    );
    pw.wait_line("all 2 worker(s) ready", Duration::from_secs(30));
    let metrics: std::net::SocketAddr = pw.status()["metrics"]
        .as_str()
        .expect("the metrics address")
        .parse()
        .unwrap();
    let mut s = std::net::TcpStream::connect(metrics).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("procwork_slots 2"), "{body}");
    for (slot, pid) in pw.workers("ready") {
        for line in [
            format!("procwork_worker_up{{slot=\"{slot}\",state=\"ready\"}} 1"),
            format!("procwork_worker_pid{{slot=\"{slot}\"}} {pid}"),
        ] {
            assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
        }
        assert!(
            body.contains(&format!(
                "procwork_worker_resident_memory_bytes{{slot=\"{slot}\"}}"
            )),
            "{body}"
        );
    }
    assert!(pw.terminate().success());
}

#[test]
fn a_worker_past_max_age_is_replaced_by_a_ready_one() {
    let mut pw = Instance::start(
        &[
            "-w",
            "1",
            "--listen",
            "tcp://127.0.0.1:0",
            "--max-age",
            "1s",
        ],
        &App::Node.command(),
        &[],
    );
    pw.wait_line("all 1 worker(s) ready", Duration::from_secs(30));
    let old = pw.workers("ready")[0].1;
    pw.wait_line("over --max-age: replacing it", Duration::from_secs(10));
    let line = pw.wait_line(&format!("pid {old}) exited"), Duration::from_secs(10));
    assert!(line.contains("exit code 0"), "stopped, not killed: {line}");
    // The successor was ready before the old worker was stopped.
    let ready_at = pw.seen.iter().rposition(|l| {
        l.contains("(slot 1") && l.contains("ready") && !l.contains(&format!("pid {old})"))
    });
    let exit_at = pw
        .seen
        .iter()
        .rposition(|l| l.contains(&format!("pid {old}) exited")));
    assert!(ready_at < exit_at, "{:#?}", pw.seen);
    assert!(pw.terminate().success());
}

#[test]
fn a_worker_that_stops_feeding_its_watchdog_is_killed_and_replaced() {
    let mut pw = Instance::start(
        &[
            "-w",
            "1",
            "--listen",
            "tcp://127.0.0.1:0",
            "--watchdog",
            "500ms",
        ],
        &App::Python.command(),
        // Feeds the watchdog once, then never again.
        &[("APP_WATCHDOG_ONCE", "1")],
    );
    pw.wait_line("all 1 worker(s) ready", Duration::from_secs(30));
    let old = pw.workers("ready")[0].1;
    pw.wait_line("missed its watchdog: killed", Duration::from_secs(10));
    pw.wait_line(
        &format!("pid {old}) exited: killed by SIGKILL"),
        Duration::from_secs(10),
    );
    pw.wait_line("(slot 1, pid", Duration::from_secs(10));
    assert!(pw.terminate().success());
}
