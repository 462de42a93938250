//! Rolling reload: every worker replaced; a failing replacement keeps the old;
//! a reload dropped half way leaves every slot with one worker.

use std::collections::BTreeSet;

use cluster_core::{Error, Event, WorkerId, WorkerState};

use crate::support::{self, BOUND, Msg, brief, settings, until, until_n};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_every_worker() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("echo", 2)).unwrap();
    let old = cluster.start().unwrap();
    until_n(&mut cluster, 2, |ev| matches!(ev, Event::Online { .. })).await;
    tokio::time::timeout(BOUND, cluster.reload())
        .await
        .unwrap()
        .unwrap();
    let ids: BTreeSet<_> = cluster.workers().keys().map(|w| w.0).collect();
    assert!(ids.is_superset(&BTreeSet::from([3, 4])), "{ids:?}");
    // Both old workers end as intended, and are not restarted.
    let mut exits = BTreeSet::new();
    let events = until(&mut cluster, |ev| {
        if let Event::Exit {
            worker,
            exited_after_disconnect: true,
            ..
        } = ev
        {
            exits.insert(worker.0);
        }
        exits.len() == 2
    })
    .await;
    assert_eq!(
        exits,
        BTreeSet::from([1, 2]),
        "{:?}",
        events.iter().map(brief).collect::<Vec<_>>()
    );
    assert!(old.iter().all(|w| w.state() == WorkerState::Dead));
    let ids: BTreeSet<_> = cluster.workers().keys().map(|w| w.0).collect();
    assert_eq!(ids, BTreeSet::from([3, 4]));
    // The replacements serve.
    support::assert_serves(&mut cluster, WorkerId(4)).await;
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_old_workers_when_a_replacement_cannot_start() {
    let dir = std::env::temp_dir().join(format!("cluster-core-reload-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let mode = format!("fail-if:{}", dir.display());
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings(&mode, 2)).unwrap();
    let old = cluster.start().unwrap();
    until_n(&mut cluster, 2, |ev| matches!(ev, Event::Online { .. })).await;
    // The next deploy is broken: new workers exit before they come online.
    std::fs::write(&dir, b"broken").unwrap();
    let err = tokio::time::timeout(BOUND, cluster.reload())
        .await
        .unwrap()
        .unwrap_err();
    let _ = std::fs::remove_file(&dir);
    assert!(
        matches!(
            err,
            Error::ReloadFailed {
                slot: crate::support::SLOT_0,
                replacement: WorkerId(3)
            }
        ),
        "{err:?}"
    );
    let events = until(&mut cluster, |ev| {
        matches!(
            ev,
            Event::Exit {
                worker: WorkerId(3),
                ..
            }
        )
    })
    .await;
    assert!(
        !events.iter().any(|ev| matches!(
            ev,
            Event::Fork {
                worker: WorkerId(4),
                ..
            }
        )),
        "the reload went on: {:?}",
        events.iter().map(brief).collect::<Vec<_>>()
    );
    assert!(old.iter().all(|w| w.state() == WorkerState::Online));
    let ids: BTreeSet<_> = cluster.workers().keys().map(|w| w.0).collect();
    assert_eq!(ids, BTreeSet::from([1, 2]));
    // The old workers still serve.
    support::assert_serves(&mut cluster, WorkerId(1)).await;
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_listening_workers_waits_for_the_replacement_to_listen() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("listen", 1)).unwrap();
    cluster.start().unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::Listening { .. })).await;
    let Some(Event::Listening {
        worker: WorkerId(1),
        addr,
        ..
    }) = events.last()
    else {
        panic!("{:?}", events.iter().map(brief).collect::<Vec<_>>())
    };
    assert!(addr.ip().is_loopback());
    assert_eq!(
        cluster.worker(WorkerId(1)).unwrap().state(),
        WorkerState::Listening
    );
    tokio::time::timeout(BOUND, cluster.reload())
        .await
        .unwrap()
        .unwrap();
    // By the time reload returns, the replacement listens.
    assert_eq!(
        cluster.worker(WorkerId(2)).unwrap().state(),
        WorkerState::Listening
    );
    let events = until(&mut cluster, |ev| {
        matches!(
            ev,
            Event::Exit {
                worker: WorkerId(1),
                ..
            }
        )
    })
    .await;
    support::assert_in_order(
        &events,
        &[
            "fork 2",
            "listening 2",
            "exit 1 exit code 0 after_disconnect=true",
        ],
    );
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_dropped_half_way_kills_its_pending_replacement() {
    let dir = std::env::temp_dir().join(format!("cluster-core-reload-drop-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let mode = format!("hang-if:{}", dir.display());
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings(&mode, 1)).unwrap();
    let old = cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    // The next deploy never comes online; the reload waits for it (the
    // ready timeout is far away) until the caller gives up on it.
    std::fs::write(&dir, b"stuck").unwrap();
    tokio::select! {
        res = cluster.reload() => panic!("the reload ended: {res:?}"),
        () = async {
            // The replacement is forked: drop the reload now.
            while cluster.workers().len() < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        } => {}
    }
    let _ = std::fs::remove_file(&dir);
    // The replacement is killed, the old worker keeps its slot and serves.
    let events = until(&mut cluster, |ev| {
        matches!(
            ev,
            Event::Exit {
                worker: WorkerId(2),
                ..
            }
        )
    })
    .await;
    assert!(
        matches!(
            events.last(),
            Some(Event::Exit {
                exit: cluster_core::Close::Signaled(libc::SIGKILL),
                ..
            })
        ),
        "{:?}",
        events.iter().map(support::brief).collect::<Vec<_>>()
    );
    support::assert_serves(&mut cluster, old.id()).await;
    assert_eq!(cluster.workers().len(), 1);
    support::shutdown(cluster).await;
}
