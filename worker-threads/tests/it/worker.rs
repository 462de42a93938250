//! Workers: event order, exit codes, panics, terminate.

use std::time::Duration;

use worker_threads::{
    Event, MessageChannel, RecvError, SendError, Worker, WorkerFailure, WorkerOptions,
    is_main_thread,
};

use crate::LIMIT;

fn collect<In, Out>(worker: &Worker<In, Out>) -> Vec<Event<Out>> {
    let mut events = Vec::new();
    loop {
        let event = worker.recv_event_timeout(LIMIT).expect("an event in time");
        let exit = matches!(event, Event::Exit(_));
        events.push(event);
        if exit {
            return events;
        }
    }
}

#[test]
fn events_come_in_order_and_a_return_is_exit_code_zero() {
    let worker = Worker::<(), u32>::spawn(3_u32, |ctx| {
        for i in 0..*ctx.worker_data() {
            ctx.parent_port().post_message(i).expect("parent listens");
        }
    })
    .expect("spawn");
    assert_eq!(
        collect(&worker),
        vec![
            Event::Online,
            Event::Message(0),
            Event::Message(1),
            Event::Message(2),
            Event::Exit(0)
        ]
    );
    assert_eq!(worker.recv_event(), Err(RecvError::Disconnected));
    assert_eq!(worker.join(), 0);
}

#[test]
fn a_worker_chooses_its_exit_code() {
    let returned = Worker::<(), ()>::spawn((), |_| 7).expect("spawn");
    assert_eq!(collect(&returned), vec![Event::Online, Event::Exit(7)]);

    let exited = Worker::<(), ()>::spawn((), |ctx| -> i32 { ctx.exit(42) }).expect("spawn");
    assert_eq!(collect(&exited), vec![Event::Online, Event::Exit(42)]);
}

#[test]
fn a_panic_is_an_error_event_with_its_message_then_exit_code_one() {
    let worker = Worker::<(), ()>::spawn(5, |ctx| -> i32 {
        panic!("boom {}", ctx.worker_data());
    })
    .expect("spawn");
    assert_eq!(
        collect(&worker),
        vec![
            Event::Online,
            Event::Error(WorkerFailure::Panicked {
                message: "boom 5".to_owned()
            }),
            Event::Exit(1)
        ]
    );
}

#[test]
fn a_returned_error_is_an_error_event_then_exit_code_one() {
    let worker = Worker::<(), ()>::spawn((), |_| Err::<(), _>("no input")).expect("spawn");
    let events = collect(&worker);
    assert_eq!(events.len(), 3);
    match &events[1] {
        Event::Error(failure) => assert_eq!(failure.message(), "no input"),
        other => panic!("expected an error event, got {other:?}"),
    }
    assert_eq!(events[2], Event::Exit(1));
}

#[test]
fn the_worker_sees_its_data_id_name_and_that_it_is_not_main() {
    assert!(is_main_thread());
    let worker = Worker::<(), (bool, u64, Option<String>)>::spawn_with(
        WorkerOptions::new().name("answerer").stack_size(256 * 1024),
        (),
        |ctx| {
            let name = std::thread::current().name().map(str::to_owned);
            ctx.parent_port()
                .post_message((is_main_thread(), ctx.worker_id().get(), name))
                .expect("parent listens");
        },
    )
    .expect("spawn");
    let id = worker.worker_id().get();
    let events = collect(&worker);
    assert_eq!(
        events[1],
        Event::Message((false, id, Some("answerer".to_owned())))
    );
}

#[test]
fn messages_go_both_ways() {
    let worker = Worker::<u64, u64>::spawn((), |ctx| {
        let port = ctx.parent_port();
        while let Ok(n) = port.recv() {
            port.post_message(n * 2).expect("parent listens");
        }
    })
    .expect("spawn");
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Online));
    for n in 0..100 {
        worker.post_message(n).expect("worker listens");
        assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Message(n * 2)));
    }
    // Joining closes the worker's port, which ends its loop.
    assert_eq!(worker.join(), 0);
}

#[test]
fn terminate_wakes_a_worker_blocked_in_recv() {
    let mut worker = Worker::<u32, RecvError>::spawn((), |ctx| {
        let err = ctx
            .parent_port()
            .recv()
            .expect_err("terminated, not a message");
        ctx.parent_port().post_message(err).expect("parent listens");
    })
    .expect("spawn");
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Online));
    assert_eq!(worker.terminate(LIMIT).expect("exits in time"), 1);
    assert_eq!(worker.post_message(9), Err(SendError(9)));
    assert_eq!(
        collect(&worker),
        vec![Event::Message(RecvError::Terminated), Event::Exit(1)]
    );
}

#[test]
fn terminate_reports_a_worker_that_ignores_it() {
    let release = worker_threads::CancelToken::new();
    let mut worker = {
        let release = release.clone();
        Worker::<(), ()>::spawn((), move |_| {
            release.wait_timeout(LIMIT);
        })
        .expect("spawn")
    };
    let err = worker
        .terminate(Duration::from_millis(10))
        .expect_err("the worker ignores its token");
    assert!(matches!(err, worker_threads::Error::StillRunning { .. }));
    release.cancel();
    assert_eq!(worker.terminate(LIMIT).expect("exits now"), 1);
}

#[test]
fn a_terminated_worker_polling_its_token_stops() {
    let mut worker = Worker::<(), ()>::spawn((), |ctx| {
        ctx.parent_port().post_message(()).expect("parent listens");
        let mut spins = 0_u64;
        while !ctx.is_terminated() {
            spins = spins.wrapping_add(1);
            std::hint::spin_loop();
        }
    })
    .expect("spawn");
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Online));
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Message(())));
    assert_eq!(worker.terminate(LIMIT).expect("exits in time"), 1);
}

/// Data whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("PanicsOnDrop dropped");
    }
}

#[test]
fn a_panicking_drop_of_the_worker_data_is_an_error_event_and_exit_code_one() {
    let worker = Worker::<(), ()>::spawn(PanicsOnDrop, |_| ()).expect("spawn");
    assert_eq!(
        collect(&worker),
        vec![
            Event::Online,
            Event::Error(WorkerFailure::DropPanicked {
                message: "PanicsOnDrop dropped".to_owned()
            }),
            Event::Exit(1)
        ]
    );
    // The exit code and the events agree.
    assert_eq!(worker.join(), 1);
}

#[test]
fn a_panicking_drop_of_an_unread_message_is_caught_too() {
    let (posted_tx, posted) = std::sync::mpsc::channel::<()>();
    let worker = Worker::<PanicsOnDrop, ()>::spawn(posted, |ctx| {
        // Return, the parent's message unread, once it was posted.
        ctx.worker_data()
            .recv_timeout(LIMIT)
            .expect("the parent posted");
    })
    .expect("spawn");
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Online));
    worker
        .post_message(PanicsOnDrop)
        .map_err(|_| ())
        .expect("worker alive");
    posted_tx.send(()).expect("worker listens");
    let events = collect(&worker);
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Error(WorkerFailure::DropPanicked { .. }),
                Event::Exit(1)
            ]
        ),
        "{events:?}"
    );
    assert_eq!(worker.join(), 1);
}

#[test]
fn terminate_wakes_a_worker_blocked_sending_on_a_full_bounded_port() {
    let (port, _peer) = MessageChannel::<u32, u32>::bounded(1).into_ports();
    let mut worker = Worker::<(), ()>::spawn(port, |ctx| {
        let port = ctx.worker_data();
        port.post_message(1).expect("room for one");
        ctx.parent_port().post_message(()).expect("parent listens");
        // Nobody receives: this send waits for room until terminated.
        assert_eq!(port.post_message(2), Err(SendError(2)));
    })
    .expect("spawn");
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Online));
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Message(())));
    assert_eq!(worker.terminate(LIMIT).expect("the send woke"), 1);
}

#[test]
fn terminate_wakes_a_worker_blocked_receiving_on_another_port() {
    let (port, _peer) = MessageChannel::<u32, u32>::new().into_ports();
    let mut worker = Worker::<(), RecvError>::spawn(port, |ctx| {
        ctx.parent_port()
            .post_message(RecvError::Empty)
            .expect("parent listens");
        let err = ctx.worker_data().recv().expect_err("nothing is sent");
        ctx.parent_port().post_message(err).expect("parent listens");
    })
    .expect("spawn");
    assert_eq!(worker.recv_event_timeout(LIMIT), Ok(Event::Online));
    assert_eq!(
        worker.recv_event_timeout(LIMIT),
        Ok(Event::Message(RecvError::Empty))
    );
    assert_eq!(worker.terminate(LIMIT).expect("the receive woke"), 1);
    assert_eq!(
        collect(&worker),
        vec![Event::Message(RecvError::Terminated), Event::Exit(1)]
    );
}
