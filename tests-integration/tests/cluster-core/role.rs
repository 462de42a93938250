//! Role detection and the worker's side of the channel: a worker written
//! with `#[tokio::main]`, programs a worker starts (primaries, without the
//! channel), the launch token, and a worker whose primary goes away (the
//! library drains it and leaves the decision to the program).

use cluster_core::{Close, Event, WORKER_ENV, WorkerId};
use cluster_ipc::{Config, ControlMsg, Handshake, Incoming};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{self, BOUND, HELPER, Msg, settings, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_main_worker_connects_and_its_children_are_primaries() {
    let mut cluster = cluster_core::Cluster::<Msg>::new(settings("tokio-main", 1)).unwrap();
    let w = cluster.fork().unwrap();
    let mut texts = Vec::new();
    until(&mut cluster, |ev| {
        if let Event::Message(m) = ev
            && let Msg::Text(t) = m.value()
        {
            texts.push(t.clone());
        }
        texts.len() == 2
    })
    .await;
    // Started before the worker asked for its role: it inherits the
    // variables (they are never removed) and the channel's descriptor (not
    // yet adopted), but its parent is the worker, not the primary.
    assert!(texts[0].starts_with("before: Primary "), "{texts:?}");
    // Started once the worker adopted the channel: close-on-exec by then.
    assert_eq!(texts[1], "after: Primary fd3=none");
    support::assert_serves(&mut cluster, w.id()).await;
    let rest = support::shutdown(cluster).await;
    assert!(
        rest.iter().any(|ev| matches!(
            ev,
            Event::Exit {
                worker: WorkerId(1),
                exit: Close::Exited(0),
                ..
            }
        )),
        "{:?}",
        rest.iter().map(support::brief).collect::<Vec<_>>()
    );
}

/// The helper started as worker 1 by this test process acting as its
/// primary by hand: our pid and `token` in its variable, the channel at
/// descriptor 3. Returns the child and our end of the channel.
fn launch_by_hand(mode: &str, token: u64) -> (spawn_core::Child, std::os::fd::OwnedFd) {
    let (ours, theirs) = cluster_ipc::channel_pair().unwrap();
    let child = spawn_core::Command::new(HELPER)
        .env("HELPER_MODE", mode)
        .env(
            WORKER_ENV,
            format!("1:0:0:{}:{token:x}", std::process::id()),
        )
        .env(cluster_ipc::CHANNEL_FD_ENV, "3")
        .stdin(spawn_core::Stdio::null())
        .stdout(spawn_core::Stdio::piped())
        .inherit_fd(3, theirs)
        .spawn()
        .unwrap();
    (child, ours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_primary_goes_away_drains_and_decides_itself() {
    const TOKEN: u64 = 0x5eed;
    let (mut child, ours) = launch_by_hand("outlive", TOKEN);
    let ours_hs = Handshake::for_this_process(1).with_token(TOKEN);
    let (tx, mut rx, theirs) = tokio::time::timeout(
        BOUND,
        cluster_ipc::handshake(ours, ours_hs, Config::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(theirs.token, TOKEN);
    assert_eq!(Some(theirs.pid), child.id());
    let online = tokio::time::timeout(BOUND, rx.recv_raw()).await.unwrap();
    assert!(
        matches!(online, Ok(Incoming::Control(ControlMsg::Online, _))),
        "{online:?}"
    );
    // The primary goes away without a word: the channel just closes.
    drop((tx, rx));
    // The library ended neither the process nor the program's say: `recv`
    // returned `Ok(None)`, `primary_gone` resolved, the program printed,
    // then returned from main.
    let mut lines = BufReader::new(child.take_stdout().unwrap()).lines();
    let line = tokio::time::timeout(BOUND, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("primary gone"));
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_channel_with_another_launch_token() {
    let (mut child, ours) = launch_by_hand("echo", 1);
    let wrong = Handshake::for_this_process(1).with_token(2);
    let (_tx, mut rx, theirs) = tokio::time::timeout(
        BOUND,
        cluster_ipc::handshake(ours, wrong, Config::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(theirs.token, 1);
    // No `Online`: the worker's `connect` failed and the helper ended.
    let first = tokio::time::timeout(BOUND, rx.recv_raw()).await.unwrap();
    assert!(
        first.as_ref().is_err_and(|e| e.is_peer_closed()),
        "{first:?}"
    );
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_refuses_a_channel_with_another_launch_token() {
    let mut s = settings("wrong-token", 1);
    s.restart(cluster_core::RestartPolicy::Never);
    let mut cluster = cluster_core::Cluster::<Msg>::new(s).unwrap();
    cluster.fork().unwrap();
    let events = until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    let briefs: Vec<_> = events.iter().map(support::brief).collect();
    assert!(
        events.iter().any(|ev| matches!(
            ev,
            Event::ChannelError {
                worker: WorkerId(1),
                error: cluster_core::Error::WrongWorker {
                    worker: WorkerId(1)
                },
                ..
            }
        )),
        "{briefs:?}"
    );
    assert!(
        !events.iter().any(|ev| matches!(ev, Event::Online { .. })),
        "{briefs:?}"
    );
    // Killed, or gone by itself once its channel closed: either way it ended.
    assert!(
        matches!(
            events.last(),
            Some(Event::Exit {
                exit: Close::Signaled(libc::SIGKILL) | Close::Exited(0),
                ..
            })
        ),
        "{briefs:?}"
    );
    support::shutdown(cluster).await;
}

/// A worker asks for every kind of listener (`listen`, `listen_unix`,
/// `bind_udp`, `listen_fd`), and its primary goes away without answering:
/// each request fails with `Error::PrimaryGone` instead of waiting for
/// ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_requests_fail_typed_when_the_primary_is_gone() {
    const TOKEN: u64 = 0x90e;
    let (mut child, ours) = launch_by_hand("listen-gone", TOKEN);
    let ours_hs = Handshake::for_this_process(1).with_token(TOKEN);
    let (tx, mut rx, _) = tokio::time::timeout(
        BOUND,
        cluster_ipc::handshake(ours, ours_hs, Config::default()),
    )
    .await
    .unwrap()
    .unwrap();
    // Online, then the four requests (in any order).
    let mut requests = Vec::new();
    while requests.len() < 4 {
        let frame = tokio::time::timeout(BOUND, rx.recv_raw())
            .await
            .expect("the worker's requests in time")
            .unwrap();
        match frame {
            Incoming::Control(ControlMsg::Online, _) => {}
            Incoming::Control(ControlMsg::Listen(_), _) => requests.push("listen"),
            Incoming::Control(ControlMsg::ListenOn(_), _) => requests.push("listen_on"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Gone without a word.
    drop((tx, rx));
    let mut lines = BufReader::new(child.take_stdout().unwrap()).lines();
    let mut got = Vec::new();
    while got.len() < 4 {
        let line = tokio::time::timeout(BOUND, lines.next_line())
            .await
            .expect("every request answered in time")
            .unwrap()
            .expect("a line per request");
        got.push(line);
    }
    got.sort();
    assert_eq!(
        got,
        [
            "bind_udp PrimaryGone",
            "listen PrimaryGone",
            "listen_fd PrimaryGone",
            "listen_unix PrimaryGone"
        ]
    );
    let close = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(close.success(), "{close:?}");
}
