//! The old primary's hand-over at an upgrade: what it accepted before the
//! new primary took the listeners still reaches a worker of its own, also
//! when the worker it was handed to is stopped (SIGSTOP) and never
//! acknowledges it — it is taken back at its deadline and given to the
//! other worker before the old primary drains. Every kind of listener.
//!
//! The primary is `cluster-helper upgradable 2` (see `service.rs`) with a
//! hand-off deadline of [`DEADLINE_MS`] and no heartbeat, so nothing but
//! the hand-off's deadline takes the connection back from the stopped
//! worker.

use nix::sys::signal::Signal;

use crate::service::{Primaries, Scratch, ask, connect, helper, listen_on, signal};
use crate::support::{self, BOUND, KINDS, Kind};

/// The hand-off deadline of the test's primaries: long enough that the
/// upgrade is over (the old primary no longer accepts) before the stopped
/// worker's hand-off expires.
const DEADLINE_MS: u32 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_to_a_stopped_worker_at_an_upgrade_is_answered_by_the_other() {
    for kind in KINDS {
        stopped_worker_at_upgrade(kind).await;
    }
}

async fn stopped_worker_at_upgrade(kind: Kind) {
    let scratch = Scratch::new(&format!("handover-stopped-{kind:?}"));
    let version_file = scratch.path("version");
    std::fs::write(&version_file, "v1").unwrap();
    let mut cmd = helper(&version_file);
    cmd.env("CLUSTER_SCHED_POLICY", "rr")
        .env("CLUSTER_HANDOFF_DEADLINE_MS", DEADLINE_MS.to_string())
        .env("CLUSTER_HEARTBEAT_TIMEOUT_MS", "0");
    let socket = support::socket_path("handover");
    listen_on(&mut cmd, kind, &socket);
    let mut primaries = Primaries::spawn(cmd);
    let (old, _, addr) = primaries.ready(None).await;

    // Stop the worker that answers a first client.
    let mut first = connect(&addr).await.unwrap();
    let stopped: i32 = ask(&mut first).await.unwrap()[2].parse().unwrap();
    drop(first);
    signal(stopped, Signal::SIGSTOP);
    support::wait_stopped(stopped as u32).await;

    // Two clients, one per worker (round-robin): the other worker answers
    // one; the stopped one holds the other's hand-off, unacknowledged.
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..2 {
        let mut conn = connect(&addr).await.unwrap();
        let answers = answers.clone();
        tokio::spawn(async move {
            // `ask`'s own bound (10 s) leaves room for the deadline.
            let _ = answers.send((n, ask(&mut conn).await));
        });
    }
    let (_, first_answer) = tokio::time::timeout(BOUND, answered.recv())
        .await
        .expect("one client answered")
        .expect("an answer");
    let first_answer = first_answer.expect("the live worker answers");
    assert_ne!(first_answer[2], stopped.to_string(), "{first_answer:?}");

    // The upgrade: the new primary takes the listeners while the old one
    // still holds that hand-off.
    std::fs::write(&version_file, "v2").unwrap();
    signal(old, Signal::SIGUSR2);
    let new: i32 = primaries.wait(Some(old), "upgraded").await[2]
        .parse()
        .unwrap();
    primaries.ready(Some(new)).await;

    // Taken back at its deadline, it goes to the old primary's live worker.
    let (_, late) = tokio::time::timeout(BOUND, answered.recv())
        .await
        .expect("the second client answered or failed")
        .expect("an answer");
    let late = late.unwrap_or_else(|e| panic!("{kind:?}: the held connection failed: {e}"));
    assert_eq!(late[0], "v1", "{kind:?}: {late:?}");
    assert_eq!(late[2], first_answer[2], "{kind:?}: {late:?}");

    // The stopped worker goes on, finds its hand-off expired, and drains
    // with its primary.
    signal(stopped, Signal::SIGCONT);
    primaries.wait(Some(old), "done").await;
    signal(new, Signal::SIGTERM);
    primaries.wait(Some(new), "done").await;
    let _ = std::fs::remove_file(&socket);
}
