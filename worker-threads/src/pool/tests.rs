//! Unit tests of the pool's queue.

use std::time::Duration;

use super::{Pool, block_on};
use crate::TaskError;

#[test]
fn block_on_runs_a_ready_future() {
    assert_eq!(block_on(async { 7 }), 7);
}

#[test]
fn a_cancelled_queued_task_leaves_the_queue_at_once() {
    let pool = Pool::new(1).expect("pool");
    let gate = crate::CancelToken::new();
    let blocker = {
        let gate = gate.clone();
        pool.run(move |_| gate.wait_timeout(Duration::from_secs(30)))
    };
    while pool.stats().running == 0 {
        std::thread::yield_now();
    }
    let queued = pool.run(|_| 1);
    assert_eq!(pool.stats().queued, 1);
    queued.cancel();
    assert_eq!(pool.stats().queued, 0);
    assert_eq!(queued.join(), Err(TaskError::Cancelled));
    gate.cancel();
    assert_eq!(blocker.join(), Ok(true));
    pool.shutdown();
}
