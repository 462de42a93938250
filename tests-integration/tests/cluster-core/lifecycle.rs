//! Lifecycle: event order, exit codes, signals, disconnect, settings.

use cluster_core::{Close, Error, Event, RestartPolicy, Signal, WorkerId, WorkerState};

use crate::support::{self, Msg, brief, settings, until, until_n};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_run_fork_online_exit_with_ids_from_one() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("exit:0", 2)).unwrap();
    cluster.start().unwrap();
    let events = until_n(&mut cluster, 2, |ev| matches!(ev, Event::Exit { .. })).await;
    for id in [1, 2] {
        let mine: Vec<String> = events
            .iter()
            .map(brief)
            .filter(|b| b.split(' ').nth(1) == Some(&id.to_string()))
            .collect();
        assert_eq!(
            mine,
            [
                format!("fork {id}"),
                format!("online {id}"),
                format!("disconnect {id}"),
                format!("exit {id} exit code 0 after_disconnect=false"),
            ],
            "all events: {:?}",
            events.iter().map(brief).collect::<Vec<_>>()
        );
    }
    // A clean exit is not restarted.
    support::shutdown_with_no_more_events(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_42_reports_the_code_and_no_signal() {
    let mut s = settings("exit:42", 1);
    s.restart(RestartPolicy::Never);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let Some(Event::Exit {
        worker,
        exit,
        exited_after_disconnect,
        ..
    }) = events.last()
    else {
        unreachable!()
    };
    assert_eq!(*worker, WorkerId(1));
    assert_eq!(*exit, Close::Exited(42));
    assert_eq!((exit.code(), exit.signal()), (Some(42), None));
    assert!(!exited_after_disconnect);
    assert_eq!(w.state(), WorkerState::Dead);
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_reports_the_signal_and_no_disconnect() {
    let mut s = settings("echo", 1);
    s.restart(RestartPolicy::Never);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    assert_eq!(w.state(), WorkerState::Online);
    w.kill(Signal::SIGKILL).unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let Some(Event::Exit {
        exit,
        exited_after_disconnect,
        ..
    }) = events.last()
    else {
        unreachable!()
    };
    assert_eq!(*exit, Close::Signaled(libc::SIGKILL));
    assert_eq!(exit.code(), None);
    assert!(!exited_after_disconnect);
    assert!(!w.exited_after_disconnect());
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_sets_the_flag_and_prevents_a_restart() {
    let mut s = settings("echo", 1);
    s.restart(RestartPolicy::Always);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    w.disconnect().await.unwrap();
    assert!(w.exited_after_disconnect());
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let briefs: Vec<_> = events.iter().map(brief).collect();
    assert_eq!(
        briefs,
        ["disconnect 1", "exit 1 exit code 0 after_disconnect=true"]
    );
    assert!(cluster.workers().is_empty());
    // Under `Always`, a restart would have been scheduled on the exit itself.
    support::shutdown_with_no_more_events(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_dead_worker_is_a_typed_error() {
    let mut s = settings("echo", 1);
    s.restart(RestartPolicy::Never);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    w.kill(Signal::SIGKILL).unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let err = w.send(&Msg::Ping(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WorkerGone {
                worker: WorkerId(1)
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        w.kill(Signal::SIGTERM),
        Err(Error::WorkerGone { .. })
    ));
    assert!(matches!(
        w.disconnect().await,
        Err(Error::WorkerGone { .. })
    ));
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_merge_until_the_first_fork_then_freeze() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("exit:7", 1)).unwrap();
    cluster
        .setup(|s| {
            s.restart(RestartPolicy::Never).env("HELPER_MODE", "exit:9");
        })
        .unwrap();
    cluster.fork().unwrap();
    assert!(matches!(
        cluster.setup(|s| {
            s.n_workers(5);
        }),
        Err(Error::SettingsFrozen)
    ));
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    assert!(matches!(
        events.last(),
        Some(Event::Exit {
            exit: Close::Exited(9),
            ..
        })
    ));
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_disconnects_itself_is_not_restarted() {
    let mut s = settings("leave", 1);
    s.restart(RestartPolicy::Always);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let briefs: Vec<_> = events.iter().map(brief).collect();
    assert_eq!(
        briefs,
        [
            "fork 1",
            "online 1",
            "disconnect 1",
            "exit 1 exit code 0 after_disconnect=true"
        ]
    );
    assert!(w.exited_after_disconnect());
    support::shutdown_with_no_more_events(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_from_a_worker_is_an_event_and_the_worker_goes_on() {
    let mut s = settings("garbage", 1);
    s.restart(RestartPolicy::Never);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    let w = cluster.fork().unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::MessageError { .. })).await;
    let Some(Event::MessageError { worker, error, .. }) = events.last() else {
        unreachable!("until returns the matching event last");
    };
    assert_eq!(*worker, WorkerId(1));
    assert!(
        matches!(
            error,
            Error::Ipc(cluster_ipc::Error::MalformedPayload { .. })
        ),
        "{error:?}"
    );
    // Neither killed nor cut off: it still answers, over the same channel.
    support::assert_serves(&mut cluster, w.id()).await;
    assert_eq!(w.state(), WorkerState::Online);
    let rest = support::shutdown(cluster).await;
    let briefs: Vec<_> = rest.iter().map(brief).collect();
    assert_eq!(
        briefs,
        ["disconnect 1", "exit 1 exit code 0 after_disconnect=true"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_after_disconnect_is_a_closed_channel_error() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("echo", 1)).unwrap();
    let w = cluster.fork().unwrap();
    until(&mut cluster, |ev| matches!(ev, Event::Online { .. })).await;
    w.send(&Msg::Ping(1)).await.unwrap();
    w.disconnect().await.unwrap();
    // Node: ERR_IPC_CHANNEL_CLOSED; whether the worker has exited yet or not.
    let err = w.send(&Msg::Ping(2)).await.unwrap_err();
    assert!(
        matches!(err, Error::ChannelClosed { worker } if worker == w.id()),
        "{err:?}"
    );
    // What was sent before the disconnect was answered.
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let replies: Vec<_> = events
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Message(m) => Some(m.into_value()),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [Msg::Pong { worker: 1, n: 1 }]);
    assert_eq!(cluster.broadcast(&Msg::Ping(3)).await, 0);
    support::shutdown_with_no_more_events(cluster).await;
}
