//! The instance as an operator sees it: `procwork status` lists every
//! worker; a second `run` of the same instance is refused; SIGTERM stops
//! everything and leaves no process (checked by process group) and no
//! file behind.

use std::time::Duration;

use crate::support::{App, Instance, UnixSocket, processes_in_groups};

#[test]
fn status_lists_every_worker() {
    let mut pw = Instance::start(
        &["-w", "3", "--listen", "tcp://127.0.0.1:0"],
        &App::Python.command(),
        &[],
    );
    pw.wait_line("all 3 worker(s) ready", Duration::from_secs(30));
    let ready = pw.workers("ready");
    assert_eq!(ready.iter().map(|w| w.0).collect::<Vec<_>>(), [1, 2, 3]);
    let table = pw.ctl(&["status"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("SLOT  WORKER  PID"), "{table}");
    for (slot, pid) in &ready {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for pid {pid}:\n{table}"));
        assert!(row.starts_with(&slot.to_string()), "{row}");
        assert!(row.contains("ready") && row.contains("mb"), "{row}");
    }
    // One instance per name: a second run is refused, the first serves on.
    let second = pw.ctl(&["run", "-w", "1", "--", "true"]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
    assert_eq!(pw.workers("ready").len(), 3);
    assert!(pw.terminate().success());
}

#[test]
fn sigterm_stops_everything_and_leaves_no_process_nor_file() {
    let socket = UnixSocket::new("sock");
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
            "--grace",
            "1s",
        ],
        &App::Python.command(),
        // Each worker starts a child that ignores SIGTERM, in its group.
        &[("APP_CHILD", "1")],
    );
    pw.wait_line("all 2 worker(s) ready", Duration::from_secs(30));
    let groups: Vec<u32> = pw.workers("ready").iter().map(|w| w.1).collect();
    let before = processes_in_groups(&groups);
    assert!(before.len() >= 4, "workers and their children: {before:?}");
    assert!(sock.exists());
    let control = pw.runtime_dir.join("procwork");
    assert!(control.exists());
    let status = pw.terminate();
    assert!(status.success(), "{status:?}");
    let left = processes_in_groups(&groups);
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(!sock.exists(), "the socket file is removed");
    let leftovers: Vec<_> = std::fs::read_dir(&control)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "files left: {leftovers:?}");
}

#[test]
fn sockets_from_socket_activation_are_passed_to_the_workers() {
    let activate = crate::support::require("systemd-socket-activate");
    let node = crate::support::require("node").display().to_string();
    // The port may be taken again before `systemd-socket-activate` binds it
    // (tests run in parallel): then another one.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let launcher = [
            activate.display().to_string(),
            "-l".into(),
            addr.to_string(),
        ];
        let listen = format!("tcp://{addr}");
        // The same address as the inherited socket: procwork takes that
        // one (binding it again would fail).
        let mut pw = Instance::start_under(
            Some(&launcher),
            &["-w", "2", "--listen", &listen],
            &[node.clone(), "app.js".into()],
            &[],
        );
        let first = pw.wait_line("", Duration::from_secs(10));
        if !first.starts_with("Listening on") {
            continue;
        }
        // It starts procwork at the first connection, which waits in the
        // backlog until a worker accepts it.
        let body = crate::support::get(addr).expect("served");
        assert!(body.starts_with("hello from pid"), "{body}");
        pw.wait_line("all 2 worker(s) ready", Duration::from_secs(30));
        let status = pw.status();
        assert_eq!(
            status["pid"].as_u64().unwrap(),
            u64::from(pw.child.id()),
            "exec'd, same pid"
        );
        assert_eq!(status["listen"][0], listen.as_str(), "{status:#}");
        assert_eq!(status["listen"].as_array().unwrap().len(), 1, "{status:#}");
        assert!(pw.terminate().success());
        return;
    }
    panic!("systemd-socket-activate never listened");
}
