//! Message channels: ports moved into workers, closed ports.

use worker_threads::{Event, MessageChannel, RecvError, SendError, Worker};

use crate::LIMIT;

#[test]
fn two_workers_talk_through_a_port_pair_without_the_parent() {
    let (ping_port, pong_port) = MessageChannel::<u32, u32>::new().into_ports();
    let pinger = Worker::<(), u32>::spawn(ping_port, |ctx| {
        let port = ctx.worker_data();
        let mut last = 0;
        for n in 1..=50 {
            port.post_message(n).expect("ponger listens");
            last = ctx.recv_on(port).expect("a reply");
            assert_eq!(last, n + 1000);
        }
        ctx.parent_port()
            .post_message(last)
            .expect("parent listens");
    })
    .expect("spawn");
    let ponger = Worker::<(), ()>::spawn(pong_port, |ctx| {
        let port = ctx.worker_data();
        while let Ok(n) = ctx.recv_on(port) {
            if port.post_message(n + 1000).is_err() {
                break;
            }
        }
    })
    .expect("spawn");
    assert_eq!(pinger.recv_event_timeout(LIMIT), Ok(Event::Online));
    assert_eq!(pinger.recv_event_timeout(LIMIT), Ok(Event::Message(1050)));
    assert_eq!(pinger.join(), 0);
    // The pinger's port is gone with it: the ponger's receive disconnects.
    assert_eq!(ponger.join(), 0);
}

#[test]
fn send_on_a_closed_port_returns_the_value() {
    let (a, b) = MessageChannel::<String>::new().into_ports();
    drop(b);
    let err = a.post_message("kept".to_owned()).expect_err("peer closed");
    assert_eq!(err, SendError("kept".to_owned()));
    assert_eq!(err.into_inner(), "kept");
    assert_eq!(a.recv(), Err(RecvError::Disconnected));
}

#[test]
fn terminate_wakes_a_worker_blocked_on_another_port() {
    let (keep, into_worker) = MessageChannel::<(), ()>::new().into_ports();
    let mut worker = Worker::<(), RecvError>::spawn(into_worker, |ctx| {
        let err = ctx.recv_on(ctx.worker_data()).expect_err("terminated");
        ctx.parent_port().post_message(err).expect("parent listens");
    })
    .expect("spawn");
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Online));
    assert_eq!(worker.terminate(LIMIT).expect("exits in time"), 1);
    assert_eq!(
        worker.recv_event_timeout(LIMIT),
        Ok(Event::Message(RecvError::Terminated))
    );
    drop(keep);
}
