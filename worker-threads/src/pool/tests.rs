//! Unit tests of the pool's queue.

use std::time::Duration;

use super::Pool;
use crate::TaskError;

#[test]
fn a_cancelled_queued_task_leaves_the_queue_at_once() {
    let pool = Pool::new(1).expect("pool");
    let gate = crate::CancelToken::new();
    let blocker = {
        let gate = gate.clone();
        pool.run(move || gate.wait_timeout(Duration::from_secs(30)))
    };
    while pool.stats().running == 0 {
        std::thread::yield_now();
    }
    let queued = pool.run(|| 1);
    assert_eq!(pool.stats().queued, 1);
    queued.cancel();
    assert_eq!(pool.stats().queued, 0);
    assert_eq!(queued.join(), Err(TaskError::Cancelled));
    gate.cancel();
    assert_eq!(blocker.join(), Ok(true));
    pool.shutdown();
}

#[test]
fn a_task_cancelled_while_it_waits_for_room_gives_its_place_to_no_one() {
    let pool = Pool::builder()
        .threads(1)
        .queue_cap(0)
        .build()
        .expect("pool");
    let gate = crate::CancelToken::new();
    let blocker = {
        let gate = gate.clone();
        pool.run(move || gate.wait_timeout(Duration::from_secs(30)))
    };
    let waiting = pool.run(|| 1);
    assert!(waiting.waiting.is_some(), "the queue was full");
    waiting.cancel();
    assert_eq!(waiting.join(), Err(TaskError::Cancelled));
    gate.cancel();
    assert_eq!(blocker.join(), Ok(true));
    // The place the blocker held is free again: one task runs at once.
    assert_eq!(pool.try_run(|| 2).expect("a free thread").join(), Ok(2));
    assert_eq!(pool.stats().cancelled, 1);
    pool.shutdown();
}
