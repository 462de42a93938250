//! Typed messages both ways, and broadcast.

use std::collections::BTreeSet;

use cluster_core::{Event, WorkerId, WorkerState};

use crate::support::{self, Msg, next, settings, until, until_n};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_round_trip_both_ways_and_broadcast() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("echo", 2)).unwrap();
    let workers = cluster.start().unwrap();
    until_n(&mut cluster, 2, |ev| matches!(ev, Event::Online { .. })).await;

    // One worker: primary → worker → primary, typed.
    workers[0].send(&Msg::Ping(7)).await.unwrap();
    let reply = loop {
        if let Event::Message(m) = next(&mut cluster).await {
            break m;
        }
    };
    assert_eq!(reply.worker(), WorkerId(1));
    assert_eq!(reply.into_value(), Msg::Pong { worker: 1, n: 7 });

    // Every worker, one call.
    let text = Msg::Text("hello worker".into());
    assert_eq!(cluster.broadcast(&text).await, 2);
    let mut from = BTreeSet::new();
    while from.len() < 2 {
        if let Event::Message(m) = next(&mut cluster).await {
            assert_eq!(m.value(), &text);
            from.insert(m.worker());
        }
    }
    assert_eq!(from, BTreeSet::from([WorkerId(1), WorkerId(2)]));

    // A disconnected worker finishes (exit 0) and counts as intended.
    let rest = support::shutdown(cluster).await;
    let exits: Vec<_> = rest
        .iter()
        .filter_map(|ev| match ev {
            Event::Exit {
                exit,
                exited_after_disconnect,
                ..
            } => Some((*exit, *exited_after_disconnect)),
            _ => None,
        })
        .collect();
    assert_eq!(exits, [(cluster_core::Close::Exited(0), true); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_arrive_in_order_with_backpressure() {
    // A window of about a dozen small messages each way.
    let mut s = settings("echo", 1);
    s.message_window(1024);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    const N: u64 = 2_000;
    let sender = tokio::spawn(async move {
        for n in 0..N {
            w.send(&Msg::Ping(n)).await.unwrap();
        }
    });
    let mut expected = 0;
    while expected < N {
        if let Event::Message(m) = next(&mut cluster).await {
            assert_eq!(
                m.into_value(),
                Msg::Pong {
                    worker: 1,
                    n: expected
                }
            );
            expected += 1;
        }
    }
    sender.await.unwrap();
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_to_a_worker_is_an_error_there_and_the_channel_goes_on() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("echo", 1)).unwrap();
    let w = cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    // The helper's variant 3 holds a u64: this one does not decode there.
    w.send(&Msg::TestOnly).await.unwrap();
    w.send(&Msg::Ping(5)).await.unwrap();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        if let Event::Message(m) = next(&mut cluster).await {
            replies.push(m.into_value());
        }
    }
    // The worker's `recv` returned the error (answered), then the next
    // message, on the same channel.
    assert_eq!(
        replies,
        [
            Msg::Text("undecodable".into()),
            Msg::Pong { worker: 1, n: 5 }
        ]
    );
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_comes_after_the_last_message_however_late_events_are_read() {
    // Every message is sent before the program reads one event: the worker
    // exits with them all unread (within the default window).
    const N: u64 = 500;
    let s = settings(&format!("burst:{N}"), 1);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    // Read no event until the cluster is done with the worker: reaped, and
    // its `Exit` queued (the handle turns `Dead` just before). Polling a
    // state, not sleeping for a guess: there is no event to await without
    // reading events.
    let deadline = tokio::time::Instant::now() + support::BOUND;
    while w.state() != WorkerState::Dead {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let values: Vec<_> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Message(m) => Some(m.value().clone()),
            _ => None,
        })
        .collect();
    let want: Vec<_> = (0..N).map(|n| Msg::Pong { worker: 1, n }).collect();
    assert_eq!(values.len(), want.len(), "messages before Exit");
    assert_eq!(values, want);
    let tail: Vec<_> = events.iter().rev().take(2).map(support::brief).collect();
    assert_eq!(
        tail,
        ["exit 1 exit code 0 after_disconnect=false", "disconnect 1"]
    );
    drop(events);
    support::shutdown(cluster).await;
}
