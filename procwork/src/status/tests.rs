//! Tests of the status table.

use super::*;
use crate::control::WorkerRow;

#[test]
fn every_worker_is_a_row_under_the_header() {
    let row = |slot, worker, state: &str| WorkerRow {
        slot,
        worker,
        pid: 4000 + u32::try_from(worker).unwrap(),
        state: state.to_owned(),
        uptime_ms: 125_000,
        restarts: worker - slot,
        rss_bytes: Some(48 << 20),
        cpu_ms: Some(1_250),
        status: (state == "ready").then(|| "serving".to_owned()),
    };
    let status = Status {
        pid: 42,
        name: "api".into(),
        command: vec!["node".into(), "app.js".into()],
        listen: vec!["tcp://127.0.0.1:3000".into()],
        metrics: None,
        slots: 2,
        reloading: true,
        rss_bytes: Some(3 << 20),
        workers: vec![
            row(1, 3, "ready"),
            row(2, 2, "stopping"),
            row(2, 4, "starting"),
        ],
    };
    let table = render(&status);
    let expected = "\
procwork api (pid 42, 3.0mb): 2 slot(s), 1 ready, reloading
command: node app.js
listen: tcp://127.0.0.1:3000
SLOT  WORKER  PID   STATE     UPTIME  RESTARTS  MEM     CPU   STATUS
1     3       4003  ready     2m      2         48.0mb  1.0%  serving
2     2       4002  stopping  2m      0         48.0mb  1.0%
2     4       4004  starting  2m      2         48.0mb  1.0%
";
    assert_eq!(table, expected);
}
