//! Faults: a worker killed with SIGKILL is replaced and serves; a program
//! that never says READY=1 fails its start at the timeout, and a reload
//! onto it leaves the old workers serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{App, Instance, get, join, load, signal};

#[test]
fn a_worker_killed_with_sigkill_is_replaced_and_serves() {
    let mut pw = Instance::start(
        &["-w", "2", "--listen", "tcp://127.0.0.1:0"],
        &App::Node.command(),
        &[],
    );
    pw.wait_line("all 2 worker(s) ready", Duration::from_secs(30));
    let addr = pw.tcp_addr();
    let before = pw.workers("ready");
    let (slot, victim) = before[0];
    signal(victim, libc::SIGKILL);
    pw.wait_line(
        &format!("pid {victim}) exited: killed by SIGKILL"),
        Duration::from_secs(10),
    );
    let status = pw.wait_status("a new ready worker in the slot", |s| {
        s["workers"].as_array().unwrap().iter().any(|w| {
            w["slot"] == slot && w["state"] == "ready" && w["pid"] != victim && w["restarts"] == 1
        })
    });
    let new_pid = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slot"] == slot)
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    // The new worker answers (the two share the socket: ask until it does).
    let mut answered = false;
    for _ in 0..200 {
        let body = get(addr).expect("served");
        if body.contains(&format!("pid {new_pid}")) {
            answered = true;
            break;
        }
    }
    assert!(answered, "the replacement (pid {new_pid}) never answered");
    assert!(pw.terminate().success());
}

#[test]
fn a_program_never_ready_fails_at_the_timeout_and_the_old_workers_keep_serving() {
    let flag = std::env::temp_dir().join(format!("procwork-never-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let flag_env = flag.display().to_string();
    let mut pw = Instance::start(
        &[
            "-w",
            "2",
            "--listen",
            "tcp://127.0.0.1:0",
            "--ready-timeout",
            "3s",
            "--grace",
            "2s",
        ],
        &App::Python.command(),
        &[("APP_NEVER_READY", &flag_env)],
    );
    pw.wait_line("all 2 worker(s) ready", Duration::from_secs(30));
    let addr = pw.tcp_addr();
    let old = pw.workers("ready");
    // The next release never says READY=1.
    std::fs::write(&flag, "").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(addr, 2, false, Arc::clone(&stop));
    let out = pw.ctl(&["reload"]);
    stop.store(true, Ordering::Relaxed);
    let report = join(clients);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the reload must fail");
    assert!(stderr.contains("not ready after 3s"), "{stderr}");
    pw.wait_line("not ready after 3s: a failed start", Duration::from_secs(5));
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(report.ok > 0);
    // The failed successor is stopped; the old workers serve on.
    let status = pw.wait_status("only the old workers", |s| {
        s["workers"].as_array().unwrap().len() == 2
    });
    assert_eq!(pw.workers("ready"), old, "{status:#}");
    assert!(get(addr).unwrap().starts_with("hello from pid"));
    std::fs::remove_file(&flag).unwrap();
    assert!(pw.terminate().success());
}
