//! The events' lines (`Display`): what an operator reads, one line each,
//! the worker named with its pid.

use std::time::Duration;

use super::{Close, Event, EventLog, SlotId, WorkerId};
use crate::{Endpoint, Error, RecycleReason};

fn line(ev: Event<()>) -> String {
    ev.to_string()
}

#[test]
fn each_event_is_one_line_naming_the_worker_and_its_pid() {
    let w = WorkerId(3);
    let slot = SlotId::new(1);
    let cases: Vec<(Event<()>, &str)> = vec![
        (
            Event::Fork {
                worker: w,
                slot,
                pid: 42,
            },
            "worker 3 (pid 42) forked in slot 1",
        ),
        (
            Event::Online { worker: w, pid: 42 },
            "worker 3 (pid 42) online",
        ),
        (
            Event::Listening {
                worker: w,
                pid: 42,
                addr: "127.0.0.1:3000".parse().unwrap(),
            },
            "worker 3 (pid 42) listening on 127.0.0.1:3000",
        ),
        (
            Event::ListeningOn {
                worker: w,
                pid: 42,
                endpoint: Endpoint::Unix("/tmp/app.sock".into()),
            },
            "worker 3 (pid 42) listening on unix:/tmp/app.sock",
        ),
        (
            Event::Disconnect { worker: w, pid: 42 },
            "worker 3 (pid 42) disconnected",
        ),
        (
            Event::Exit {
                worker: w,
                pid: 42,
                slot,
                exit: Close::Signaled(9),
                exited_after_disconnect: false,
            },
            "worker 3 (pid 42) killed by signal 9",
        ),
        (
            Event::Exit {
                worker: w,
                pid: 42,
                slot,
                exit: Close::Exited(0),
                exited_after_disconnect: true,
            },
            "worker 3 (pid 42) exited with code 0 after disconnecting",
        ),
        (
            Event::RestartScheduled {
                slot,
                delay: Duration::from_millis(100),
            },
            "slot 1: restart in 100 ms",
        ),
        (Event::ReloadStarted, "rolling reload started"),
        (Event::ReloadFinished { error: None }, "reload done"),
        (
            Event::ReloadFinished {
                error: Some(Error::Stopped),
            },
            "reload failed: the cluster has stopped",
        ),
        (
            Event::ReloadFinished {
                error: Some(Error::Reload {
                    reason: "could not spawn: no such file".to_owned(),
                }),
            },
            "reload failed: could not spawn: no such file",
        ),
        (Event::AllSlotsGaveUp, "every slot gave up: stopping"),
        (
            Event::Recycling {
                worker: w,
                pid: 42,
                slot,
                reason: RecycleReason::Age {
                    age: Duration::from_millis(1500),
                    limit: Duration::from_secs(1),
                },
            },
            "worker 3 (pid 42) recycling: age 1500 ms (limit 1000 ms)",
        ),
        (
            Event::SlotRemoved {
                slot,
                worker: Some(w),
            },
            "slot 1: removed (scaled down), worker 3 draining",
        ),
        (
            Event::UnusedSocket {
                addr: "127.0.0.1:3402".into(),
                name: Some("web".into()),
            },
            "inherited socket 127.0.0.1:3402 (web) is not listened on by any worker: not ready",
        ),
    ];
    for (ev, want) in cases {
        let got = line(ev);
        assert_eq!(got, want);
        assert!(!got.contains('\n'), "{got:?}");
    }
}

#[test]
fn an_error_is_written_with_its_causes() {
    let error = Error::Signals(std::io::Error::other("no runtime"));
    let ev: Event<()> = Event::ForkError {
        slot: SlotId::new(0),
        error,
    };
    assert_eq!(
        line(ev),
        "slot 0: fork failed: could not install the signal handlers: no runtime"
    );
}

#[test]
fn the_http_log_writes_tcp_addresses_as_urls_and_skips_messages() {
    let listening = || Event::<()>::Listening {
        worker: WorkerId(1),
        pid: 7,
        addr: "127.0.0.1:3000".parse().unwrap(),
    };
    assert_eq!(
        EventLog::http().line(&listening()).as_deref(),
        Some("worker 1 (pid 7) listening on http://127.0.0.1:3000/")
    );
    assert_eq!(
        EventLog::new().line(&listening()).as_deref(),
        Some("worker 1 (pid 7) listening on 127.0.0.1:3000")
    );
    let message = Event::Message(crate::Message::new(
        WorkerId(1),
        (),
        cluster_ipc::Credit::none(),
    ));
    assert_eq!(EventLog::http().line(&message), None);
    assert_eq!(listening().pid(), Some(7));
    assert_eq!(listening().worker(), Some(WorkerId(1)));
}

#[test]
fn the_first_line_says_where_the_workers_serve_as_the_listening_lines_do() {
    use crate::{ListenTarget, UnixAddr};
    let tcp = ListenTarget::Tcp("127.0.0.1:3000".parse().unwrap());
    let unix = ListenTarget::Unix(UnixAddr::from("/run/app.sock"));
    assert_eq!(EventLog::http().serving(), None);
    assert_eq!(
        EventLog::http().on(tcp.clone()).serving().as_deref(),
        Some("http://127.0.0.1:3000/")
    );
    assert_eq!(
        EventLog::new().on(tcp).serving().as_deref(),
        Some("127.0.0.1:3000")
    );
    assert_eq!(
        EventLog::http().on(unix).serving().as_deref(),
        Some("unix:/run/app.sock")
    );
}
