//! Typed messages both ways, and broadcast.

use std::collections::BTreeSet;

use cluster_core::{Event, WorkerId};

use crate::support::{self, Msg, next, settings, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_round_trip_both_ways_and_broadcast() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("echo", 2)).unwrap();
    let workers = cluster.start().unwrap();
    let mut online = 0;
    until(&mut cluster, |ev| {
        online += usize::from(matches!(ev, Event::Online { .. }));
        online == 2
    })
    .await;

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
    assert_eq!(exits, [(cluster_core::Exit::Code(0), true); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_arrive_in_order_with_backpressure() {
    let mut s = settings("echo", 1);
    s.message_credits(4);
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
