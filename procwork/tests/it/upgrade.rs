//! procwork's own upgrade: SIGUSR2 starts the program now on disk, which
//! takes over every socket (TCP, Unix-domain, the control socket) and
//! starts its workers; the old procwork stops its own and exits, with no
//! failed request under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{App, Instance, UnixSocket, join, load, processes_in_groups, signal};

#[test]
fn sigusr2_hands_every_socket_to_a_new_procwork_with_no_failed_request() {
    let socket = UnixSocket::new("up");
    let sock = &socket.path;
    let listen_unix = socket.listen();
    let mut pw = Instance::start(
        &[
            "-w",
            "2",
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            &listen_unix,
        ],
        &App::Node.command(),
        &[],
    );
    pw.wait_line("all 2 worker(s) ready", Duration::from_secs(30));
    let addr = pw.tcp_addr();
    let old_pid = pw.child.id();
    let old_workers: Vec<u32> = pw.workers("ready").iter().map(|w| w.1).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let keep_alive = load(addr, 4, false, Arc::clone(&stop));
    let per_request = load(addr, 2, true, Arc::clone(&stop));

    signal(old_pid, libc::SIGUSR2);
    pw.wait_line("handed over to the new procwork", Duration::from_secs(30));
    // The old procwork stops its workers and exits 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = pw.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old procwork did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        processes_in_groups(&old_workers).is_empty(),
        "old workers left"
    );
    // The new one answers on the same control socket, serves, reloads.
    let status = pw.status();
    let new_pid = status["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, old_pid);
    assert_eq!(pw.tcp_addr(), addr, "the same socket");
    assert_eq!(pw.workers("ready").len(), 2);
    let reload = pw.ctl(&["reload"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    let keep_alive = join(keep_alive);
    let per_request = join(per_request);
    assert_eq!(keep_alive.failed, 0, "keep-alive: {:?}", keep_alive.errors);
    assert_eq!(
        per_request.failed, 0,
        "per request: {:?}",
        per_request.errors
    );
    assert!(keep_alive.ok > 0 && per_request.ok > 0);
    assert!(sock.exists(), "the Unix-domain socket file stays");
    let pid_file = std::fs::read_to_string(
        pw.runtime_dir
            .join("procwork")
            .join(
                std::fs::read_dir(pw.runtime_dir.join("procwork"))
                    .unwrap()
                    .flatten()
                    .next()
                    .unwrap()
                    .file_name(),
            )
            .join("procwork.pid"),
    )
    .unwrap();
    assert_eq!(pid_file.trim(), new_pid.to_string());
    // Stopping the new one cleans everything up.
    let groups: Vec<u32> = pw.workers("ready").iter().map(|w| w.1).collect();
    let stopped = pw.ctl(&["stop"]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(processes_in_groups(&groups).is_empty(), "new workers left");
    // The new procwork removes the file as it exits, after its answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the socket file is removed by the new procwork"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
