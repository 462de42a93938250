//! Rolling reloads under load: 5 reloads of 2 workers while keep-alive
//! and connection-per-request clients run, with no failed request, for
//! the Node.js and the Python example.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{App, Instance, join, load};

fn five_reloads_under_load_fail_no_request(app: App) {
    let mut pw = Instance::start(
        &["-w", "2", "--listen", "tcp://127.0.0.1:0", "--grace", "5s"],
        &app.command(),
        &[],
    );
    pw.wait_line("all 2 worker(s) ready", Duration::from_secs(30));
    let addr = pw.tcp_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let keep_alive = load(addr, 4, false, Arc::clone(&stop));
    let per_request = load(addr, 2, true, Arc::clone(&stop));
    let mut before = pw.workers("ready");
    assert_eq!(before.len(), 2, "{before:?}");
    for round in 1..=5 {
        let out = pw.ctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = pw.workers("ready");
        assert_eq!(after.len(), 2, "reload {round}: {after:?}");
        for (slot, pid) in &after {
            assert!(
                !before.iter().any(|(_, old)| old == pid),
                "reload {round}: slot {slot} kept pid {pid}"
            );
        }
        before = after;
    }
    stop.store(true, Ordering::Relaxed);
    let keep_alive = join(keep_alive);
    let per_request = join(per_request);
    eprintln!("keep-alive: {keep_alive:?}\nper request: {per_request:?}");
    assert_eq!(keep_alive.failed, 0, "keep-alive: {:?}", keep_alive.errors);
    assert_eq!(
        per_request.failed, 0,
        "per request: {:?}",
        per_request.errors
    );
    assert!(keep_alive.ok > 50 && per_request.ok > 50, "the load ran");
    assert!(pw.terminate().success());
}

#[test]
fn node_five_reloads_under_load_fail_no_request() {
    five_reloads_under_load_fail_no_request(App::Node);
}

#[test]
fn python_five_reloads_under_load_fail_no_request() {
    five_reloads_under_load_fail_no_request(App::Python);
}
