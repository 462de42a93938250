//! The pool: backpressure, cancellation, timeouts, panics, volume, async use.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use worker_threads::{CancelToken, Pool, TaskError, TryRunError, is_main_thread};

use crate::LIMIT;

/// A task that holds its pool thread until `gate` is cancelled.
fn blocker(pool: &Pool, gate: &CancelToken) -> worker_threads::TaskHandle<bool> {
    let gate = gate.clone();
    pool.run(move |_| gate.wait_timeout(LIMIT))
}

#[test]
fn tasks_run_on_pool_threads_and_return_their_values() {
    let pool = Pool::new(2).expect("pool");
    let handle = pool.run(|_| (is_main_thread(), 6 * 7));
    assert_eq!(handle.join(), Ok((false, 42)));
    pool.shutdown();
}

#[test]
fn a_full_queue_hands_the_task_back_and_run_waits_for_room() {
    let pool = Pool::builder()
        .threads(1)
        .queue_cap(1)
        .build()
        .expect("pool");
    let gate = CancelToken::new();
    let running = blocker(&pool, &gate);
    // The blocker may still be queued; wait until it runs so the queue is empty.
    while pool.stats().running == 0 {
        std::thread::yield_now();
    }
    let queued = pool.try_run(|_| 1).expect("room for one");
    let back = pool.try_run(|_| 2).expect_err("queue full");
    assert!(matches!(back, TryRunError::Full(_)));
    assert_eq!(back.into_task()(&CancelToken::new()), 2);

    // A `run` on the full queue waits for room rather than failing: it
    // completes once the blocker is released.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.run(|_| 3).join());
        gate.cancel();
        assert_eq!(waiter.join().expect("waiter"), Ok(3));
    });
    assert_eq!(running.join(), Ok(true));
    assert_eq!(queued.join(), Ok(1));
    pool.shutdown();
}

#[test]
fn cancelling_a_queued_task_removes_it_and_dropping_does_too() {
    let pool = Pool::new(1).expect("pool");
    let gate = CancelToken::new();
    let running = blocker(&pool, &gate);
    let cancelled = pool.run(|_| 1);
    let dropped = pool.run(|_| 2);
    let kept = pool.run(|_| 3);
    assert_eq!(pool.stats().queued + pool.stats().running, 4);
    cancelled.cancel();
    drop(dropped);
    assert_eq!(cancelled.join(), Err(TaskError::Cancelled));
    gate.cancel();
    assert_eq!(running.join(), Ok(true));
    assert_eq!(kept.join(), Ok(3));
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.queued, stats.running), (2, 0, 0));
    pool.shutdown();
}

#[test]
fn a_running_task_sees_its_cancellation() {
    let pool = Pool::new(1).expect("pool");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let task = pool.run(move |token| {
        started_tx.send(()).expect("test listens");
        token.wait_timeout(LIMIT)
    });
    started_rx.recv_timeout(LIMIT).expect("task started");
    task.cancel();
    assert_eq!(task.join(), Err(TaskError::Cancelled));
    pool.shutdown();
}

#[test]
fn a_task_past_its_timeout_is_timed_out() {
    let pool = Pool::new(1).expect("pool");
    let timeout = Duration::from_millis(20);
    let task = pool.run_with_timeout(timeout, |token| token.wait_timeout(LIMIT));
    assert_eq!(task.join(), Err(TaskError::TimedOut { timeout }));
    let quick = pool.run_with_timeout(LIMIT, |_| 5);
    assert_eq!(quick.join(), Ok(5));
    pool.shutdown();
}

#[test]
fn a_panicking_task_fails_alone_and_the_pool_keeps_its_threads() {
    let pool = Pool::new(2).expect("pool");
    for i in 0..4 {
        let failed = pool.run(move |_| -> u32 { panic!("task {i} failed") });
        assert_eq!(
            failed.join(),
            Err(TaskError::Panicked {
                message: format!("task {i} failed")
            })
        );
    }
    // Two tasks that can only finish together need both threads alive.
    let barrier = Arc::new(Barrier::new(2));
    let both: Vec<_> = (0..2)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            pool.run(move |_| barrier.wait().is_leader())
        })
        .collect();
    let leaders = both
        .into_iter()
        .map(|h| h.join().expect("both threads run"))
        .filter(|&leader| leader)
        .count();
    assert_eq!(leaders, 1);
    assert_eq!(pool.stats().failed, 4);
    pool.shutdown();
}

#[test]
fn ten_thousand_tiny_tasks_all_complete() {
    let pool = Pool::builder()
        .threads(2)
        .queue_cap(256)
        .build()
        .expect("pool");
    let handles: Vec<_> = (0..10_000_u64).map(|i| pool.run(move |_| i * 2)).collect();
    let sum: u64 = handles.into_iter().map(|h| h.join().expect("task")).sum();
    assert_eq!(sum, 10_000 * 9_999);
    let stats = pool.stats();
    assert_eq!(stats.completed, 10_000);
    assert!(stats.utilisation > 0.0 && stats.utilisation <= 1.0);
    pool.shutdown();
}

#[test]
fn shutdown_now_resolves_queued_tasks_and_waits_for_running_ones() {
    let pool = Pool::new(1).expect("pool");
    let gate = CancelToken::new();
    let running = blocker(&pool, &gate);
    while pool.stats().running == 0 {
        std::thread::yield_now();
    }
    let queued = pool.run(|_| 1);
    let shutdown = std::thread::spawn(move || pool.shutdown_now());
    // The only thread is busy: the queued task can only be resolved by
    // shutdown_now.
    assert_eq!(queued.join(), Err(TaskError::ShutDown));
    gate.cancel();
    shutdown.join().expect("shutdown");
    assert_eq!(running.join(), Ok(true));
}

#[test]
fn shutdown_runs_queued_tasks_first() {
    let pool = Pool::new(1).expect("pool");
    let handles: Vec<_> = (0..20).map(|i| pool.run(move |_| i)).collect();
    pool.shutdown();
    let values: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert_eq!(values, (0..20).map(Ok).collect::<Vec<_>>());
}

#[test]
fn the_pool_does_not_block_a_tokio_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = Pool::builder()
            .threads(1)
            .queue_cap(1)
            .build()
            .expect("pool");
        let gate = CancelToken::new();
        let slow = {
            let gate = gate.clone();
            pool.run_async(move |_| gate.wait_timeout(LIMIT)).await
        };
        // While the pool is busy, the single runtime thread keeps running
        // other tasks: this one releases the pool.
        let releaser = tokio::spawn({
            let gate = gate.clone();
            async move {
                tokio::task::yield_now().await;
                gate.cancel();
            }
        });
        let results = tokio::time::timeout(LIMIT, async {
            let quick = pool.run_async(|_| 9).await;
            (slow.await, quick.await)
        })
        .await
        .expect("in time");
        assert_eq!(results, (Ok(true), Ok(9)));
        releaser.await.expect("releaser");
        pool.shutdown();
    });
}
