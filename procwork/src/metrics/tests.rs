//! Tests of the exposition: one series per slot, whatever restarts and
//! reloads do to the workers.

use super::*;

fn row(slot: u64, worker: u64, state: &str) -> WorkerRow {
    WorkerRow {
        slot,
        worker,
        pid: 4000 + u32::try_from(worker).unwrap(),
        state: state.to_owned(),
        uptime_ms: 1_500,
        restarts: worker - slot,
        rss_bytes: Some(48 << 20),
        cpu_ms: Some(250),
        status: None,
    }
}

fn status(workers: Vec<WorkerRow>) -> Status {
    Status {
        pid: 42,
        name: "api".into(),
        command: vec!["node".into(), "app.js".into()],
        listen: vec!["tcp://127.0.0.1:3000".into()],
        metrics: None,
        slots: 2,
        reloading: false,
        rss_bytes: Some(3 << 20),
        workers,
    }
}

/// The series of an exposition: each sample line's name and labels.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.rsplit_once(' ')?.0.to_owned()))
        .collect()
}

#[test]
fn a_reloading_slot_shows_its_ready_worker_and_counts_every_worker() {
    // Slot 1 is being reloaded: its worker 1 still serves, its successor
    // 3 starts. Slot 2's successor 4 is ready, its worker 2 stops.
    let text = render(&status(vec![
        row(1, 1, "ready"),
        row(1, 3, "starting"),
        row(2, 2, "stopping"),
        row(2, 4, "ready"),
    ]));
    for line in [
        "procwork_slots 2",
        "procwork_workers{state=\"starting\"} 1",
        "procwork_workers{state=\"ready\"} 2",
        "procwork_workers{state=\"stopping\"} 1",
        "procwork_worker_up{slot=\"1\",state=\"ready\"} 1",
        "procwork_worker_up{slot=\"2\",state=\"ready\"} 1",
        "procwork_worker_pid{slot=\"1\"} 4001",
        "procwork_worker_pid{slot=\"2\"} 4004",
        "procwork_worker_id{slot=\"2\"} 4",
        "procwork_worker_cpu_seconds_total{slot=\"1\"} 0.250",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    let all = series(&text);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(all.len(), unique.len(), "a series twice in\n{text}");
}

#[test]
fn restarts_and_reloads_start_no_series() {
    let before = series(&render(&status(vec![
        row(1, 1, "ready"),
        row(2, 2, "ready"),
    ])));
    // Both slots' workers replaced, one of them still starting.
    let after = series(&render(&status(vec![
        row(1, 7, "starting"),
        row(2, 9, "ready"),
        row(2, 2, "stopping"),
    ])));
    let names = |s: &[String]| -> Vec<String> {
        s.iter()
            .filter(|l| !l.starts_with("procwork_worker_up"))
            .cloned()
            .collect()
    };
    assert_eq!(names(&before), names(&after));
}
