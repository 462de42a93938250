//! Process guarding: backoff and crash-loop limit, heartbeat, shutdown.

use std::time::Duration;

use cluster_core::{Backoff, Close, CrashLoopLimit, Event, RestartPolicy, WorkerId};

use crate::support::{self, Msg, brief, settings, until, until_n};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_worker_backs_off_then_is_given_up() {
    let mut s = settings("exit:1", 1);
    s.restart(RestartPolicy::OnFailure)
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_secs(1),
            min_uptime: Duration::from_secs(30),
        })
        .crash_loop_limit(CrashLoopLimit {
            max_restarts: 3,
            window: Duration::from_secs(60),
        });
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    cluster.fork().unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::GaveUp { .. })).await;
    let delays: Vec<_> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::RestartScheduled {
                slot: crate::support::SLOT_0,
                delay,
            } => Some(delay.as_millis()),
            _ => None,
        })
        .collect();
    assert_eq!(
        delays,
        [0, 20, 40],
        "{:?}",
        events.iter().map(brief).collect::<Vec<_>>()
    );
    let forks: Vec<_> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Fork { worker, .. } => Some(worker.0),
            _ => None,
        })
        .collect();
    assert_eq!(forks, [1, 2, 3, 4]);
    assert!(matches!(
        events.last(),
        Some(Event::GaveUp {
            slot: crate::support::SLOT_0,
            last_exit: Close::Exited(1)
        })
    ));
    assert!(cluster.workers().is_empty());
    // Its only slot gave up: the cluster says so, last, and ends.
    assert!(matches!(
        support::next(&mut cluster).await,
        Event::AllSlotsGaveUp
    ));
    assert!(cluster.has_given_up());
    assert!(matches!(cluster.fork(), Err(cluster_core::Error::Stopped)));
    support::shutdown_with_no_more_events(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_killed_by_the_heartbeat_and_replaced() {
    let mut s = settings("hang", 1);
    s.heartbeat(Duration::from_millis(50), Duration::from_millis(600))
        .shutdown_deadline(Duration::from_millis(200));
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    cluster.fork().unwrap();
    let events = until(&mut cluster, |ev| {
        matches!(
            ev,
            Event::Fork {
                worker: WorkerId(2),
                ..
            }
        )
    })
    .await;
    support::assert_in_order(
        &events,
        &[
            "online 1",
            "unresponsive 1",
            "exit 1 signal SIGKILL after_disconnect=false",
            "fork 2",
        ],
    );
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_a_worker_that_ignores_it_at_the_deadline() {
    let mut s = settings("echo", 0);
    s.shutdown_deadline(Duration::from_millis(500));
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    cluster.fork().unwrap();
    cluster
        .fork_with_env([("HELPER_MODE", "stubborn")])
        .unwrap();
    until_n(&mut cluster, 2, |ev| matches!(ev, Event::Online { .. })).await;
    let rest = support::shutdown(cluster).await;
    let mut exits: Vec<_> = rest
        .iter()
        .filter_map(|ev| match ev {
            Event::Exit {
                worker,
                exit,
                exited_after_disconnect,
                ..
            } => Some((worker.0, *exit, *exited_after_disconnect)),
            _ => None,
        })
        .collect();
    exits.sort_by_key(|e| e.0);
    assert_eq!(
        exits,
        [
            (1, Close::Exited(0), true),
            (2, Close::Signaled(libc::SIGKILL), true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_a_typed_error_naming_it() {
    let mut s = settings("echo", 1);
    s.program("/nonexistent/cluster-worker");
    let cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let err = cluster.fork().unwrap_err();
    let cluster_core::Error::Spawn {
        worker, program, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*worker, WorkerId(1));
    assert_eq!(program, std::path::Path::new("/nonexistent/cluster-worker"));
    assert!(cluster.workers().is_empty());
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_vanished_is_retried_with_a_floor_then_given_up() {
    // A private copy of the helper, deleted once the first worker runs.
    let dir = std::env::temp_dir().join(format!("cluster-core-vanish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("worker");
    std::fs::copy(support::HELPER, &program).unwrap();
    let mut s = settings("exit:1", 1);
    s.program(&program).crash_loop_limit(CrashLoopLimit {
        max_restarts: 2,
        window: Duration::from_secs(60),
    });
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Fork { .. })).await;
    std::fs::remove_dir_all(&dir).unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::GaveUp { .. })).await;
    let delays: Vec<_> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::RestartScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert!(events.iter().any(|ev| matches!(
        ev,
        Event::ForkError {
            error: cluster_core::Error::Spawn { .. },
            ..
        }
    )));
    // The worker's own crash restarts at once; the failed spawn waits.
    assert_eq!(
        delays.len(),
        2,
        "{:?}",
        events.iter().map(brief).collect::<Vec<_>>()
    );
    assert_eq!(delays[0], Duration::ZERO);
    assert!(delays[1] >= Duration::from_millis(100));
    assert!(matches!(
        events.last(),
        Some(Event::GaveUp {
            last_exit: Close::Exited(127),
            ..
        })
    ));
    support::shutdown(cluster).await;
}
