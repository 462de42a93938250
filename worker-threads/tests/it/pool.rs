//! The pool: backpressure, cancellation, timeouts, panics, volume, async use.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use worker_threads::{CancelToken, Pool, TaskError, TaskHandle, TryRunError, is_main_thread};

use crate::LIMIT;

/// A task that holds its pool thread until `gate` is cancelled.
fn blocker(pool: &Pool, gate: &CancelToken) -> TaskHandle<bool> {
    let gate = gate.clone();
    pool.run(move || gate.wait_timeout(LIMIT))
}

/// Waits until `pool` runs `n` tasks (a task's start has no event to await;
/// looked at in a loop bounded by the test's limit).
fn until_running(pool: &Pool, n: usize) {
    let deadline = std::time::Instant::now() + LIMIT;
    while pool.stats().running < n {
        assert!(std::time::Instant::now() < deadline, "no task started");
        std::thread::yield_now();
    }
}

/// A current-thread tokio runtime, for the async tests.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

#[test]
fn tasks_run_on_pool_threads_and_return_their_values() {
    let pool = Pool::new(2).expect("pool");
    let handle = pool.run(|| (is_main_thread(), 6 * 7));
    assert_eq!(handle.join(), Ok((false, 42)));
    pool.shutdown();
}

#[test]
fn one_await_gives_the_value_in_async_code() {
    let pool = Pool::builder()
        .threads(1)
        .queue_cap(1)
        .build()
        .expect("pool");
    let values = runtime().block_on(async {
        let mut values = Vec::new();
        for n in 0..8_u64 {
            values.push(pool.run(move || n * n).await.expect("a value"));
        }
        let with_token = pool.run_with_token(|token| token.is_cancelled()).await;
        (values, with_token)
    });
    assert_eq!(values.0, [0, 1, 4, 9, 16, 25, 36, 49]);
    assert_eq!(values.1, Ok(false));
    pool.shutdown();
}

#[test]
fn a_full_queue_hands_the_task_back_and_the_handle_waits_for_room() {
    let pool = Pool::builder()
        .threads(1)
        .queue_cap(1)
        .build()
        .expect("pool");
    let gate = CancelToken::new();
    let running = blocker(&pool, &gate);
    until_running(&pool, 1);
    let queued = pool.try_run(|| 1).expect("room for one");
    let back = pool.try_run(|| 2).expect_err("queue full");
    assert!(matches!(back, TryRunError::Full(_)));
    assert_eq!(back.into_task()(), 2);

    // `run` on the full queue returns at once; its handle waits for room
    // when joined, and `blocking_run` waits for room before it returns.
    let waiting = pool.run(|| 3);
    std::thread::scope(|s| {
        let blocked = s.spawn(|| pool.blocking_run(|| 4).join());
        let joined = s.spawn(|| waiting.join());
        gate.cancel();
        assert_eq!(joined.join().expect("joiner"), Ok(3));
        assert_eq!(blocked.join().expect("blocked"), Ok(4));
    });
    assert_eq!(running.join(), Ok(true));
    assert_eq!(queued.join(), Ok(1));
    pool.shutdown();
}

#[test]
fn queue_cap_zero_runs_a_task_only_when_a_thread_is_free() {
    let pool = Pool::builder()
        .threads(1)
        .queue_cap(0)
        .build()
        .expect("pool");
    // An idle pool runs at once, from sync and from async code.
    assert_eq!(pool.try_run(|| 1).expect("a thread is free").join(), Ok(1));
    assert_eq!(pool.run(|| 2).join(), Ok(2));
    assert_eq!(runtime().block_on(pool.run(|| 3)), Ok(3));
    // With its only thread busy, there is no queue to wait in.
    let gate = CancelToken::new();
    let running = blocker(&pool, &gate);
    until_running(&pool, 1);
    let back = pool.try_run(|| 4).expect_err("no free thread");
    assert!(matches!(back, TryRunError::Full(_)));
    let waiting = pool.run(|| 5);
    assert_eq!(pool.stats().queued, 0, "nothing waits in the queue");
    gate.cancel();
    assert_eq!(waiting.join(), Ok(5));
    assert_eq!(running.join(), Ok(true));
    pool.shutdown();
}

#[test]
fn a_detached_task_waiting_for_room_runs_when_a_place_frees() {
    let pool = Pool::builder()
        .threads(1)
        .queue_cap(0)
        .build()
        .expect("pool");
    let gate = CancelToken::new();
    let running = blocker(&pool, &gate);
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    pool.run(move || ran_tx.send(()).expect("test listens"))
        .detach();
    gate.cancel();
    ran_rx.recv_timeout(LIMIT).expect("the detached task ran");
    assert_eq!(running.join(), Ok(true));
    pool.shutdown();
}

#[test]
fn cancelling_a_queued_task_removes_it_and_dropping_does_too() {
    let pool = Pool::new(1).expect("pool");
    let gate = CancelToken::new();
    let running = blocker(&pool, &gate);
    let cancelled = pool.run(|| 1);
    let dropped = pool.run(|| 2);
    let kept = pool.run(|| 3);
    assert_eq!(pool.stats().queued + pool.stats().running, 4);
    cancelled.cancel();
    drop(dropped);
    assert_eq!(cancelled.join(), Err(TaskError::Cancelled));
    gate.cancel();
    assert_eq!(running.join(), Ok(true));
    assert_eq!(kept.join(), Ok(3));
    let stats = pool.stats();
    assert_eq!(
        (stats.completed, stats.cancelled, stats.failed, stats.queued),
        (2, 2, 0, 0)
    );
    pool.shutdown();
}

#[test]
fn a_running_task_sees_its_cancellation_and_counts_as_cancelled_not_failed() {
    let pool = Pool::new(1).expect("pool");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let task = pool.run_with_token(move |token| {
        started_tx.send(()).expect("test listens");
        token.wait_timeout(LIMIT)
    });
    started_rx.recv_timeout(LIMIT).expect("task started");
    task.cancel();
    assert_eq!(task.join(), Err(TaskError::Cancelled));
    let timeout = Duration::from_millis(20);
    let timed = pool.run_with_timeout(timeout, |token| token.wait_timeout(LIMIT));
    assert_eq!(timed.join(), Err(TaskError::TimedOut { timeout }));
    let stats = pool.stats();
    assert_eq!(
        (
            stats.cancelled,
            stats.timed_out,
            stats.failed,
            stats.completed
        ),
        (1, 1, 0, 0)
    );
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
        let failed = pool.run(move || -> u32 { panic!("task {i} failed") });
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
            pool.run(move || barrier.wait().is_leader())
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

/// A value whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("PanicsOnDrop dropped");
    }
}

#[test]
fn a_panicking_drop_on_a_pool_thread_is_caught_not_an_abort() {
    // One thread: a task's result arrives only after the job before it
    // ended, drops included.
    let pool = Pool::new(1).expect("pool");
    // A result nobody waits for is dropped on the pool thread.
    pool.run(|| PanicsOnDrop).detach();
    // The value of a task cancelled while it ran is dropped there too.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let cancelled = pool.run_with_token(move |token| {
        started_tx.send(()).expect("test listens");
        token.wait_timeout(LIMIT);
        PanicsOnDrop
    });
    started_rx.recv_timeout(LIMIT).expect("task started");
    cancelled.cancel();
    assert!(matches!(cancelled.join(), Err(TaskError::Cancelled)));
    // And a panic whose payload panics when dropped.
    let payload = pool.run(|| -> u32 { std::panic::panic_any(PanicsOnDrop) });
    assert!(matches!(payload.join(), Err(TaskError::Panicked { .. })));
    // The thread lives on, and the stats say what happened.
    assert_eq!(pool.run(|| 7).join(), Ok(7));
    let stats = pool.stats();
    assert_eq!(stats.panicked_drops, 3);
    assert_eq!((stats.completed, stats.cancelled, stats.failed), (2, 1, 1));
    pool.shutdown();
}

#[test]
fn ten_thousand_tiny_tasks_all_complete() {
    let pool = Pool::builder()
        .threads(2)
        .queue_cap(256)
        .build()
        .expect("pool");
    let handles: Vec<_> = (0..10_000_u64)
        .map(|i| pool.blocking_run(move || i * 2))
        .collect();
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
    until_running(&pool, 1);
    let queued = pool.run(|| 1);
    let shutdown = std::thread::spawn(move || pool.shutdown_now());
    // The only thread is busy: the queued task can only be resolved by
    // shutdown_now.
    assert_eq!(queued.join(), Err(TaskError::ShutDown));
    gate.cancel();
    shutdown.join().expect("shutdown");
    assert_eq!(running.join(), Ok(true));
}

#[test]
fn shutdown_runs_queued_tasks_first_and_refuses_those_waiting_for_room() {
    let pool = Pool::new(1).expect("pool");
    let handles: Vec<_> = (0..20).map(|i| pool.run(move || i)).collect();
    pool.shutdown();
    let values: Vec<_> = handles.into_iter().map(TaskHandle::join).collect();
    assert_eq!(values, (0..20).map(Ok).collect::<Vec<_>>());

    let capped = Pool::builder()
        .threads(1)
        .queue_cap(0)
        .build()
        .expect("pool");
    let gate = CancelToken::new();
    let running = blocker(&capped, &gate);
    let waiting = capped.run(|| 1);
    let shutdown = std::thread::spawn(move || capped.shutdown());
    assert_eq!(waiting.join(), Err(TaskError::ShutDown));
    gate.cancel();
    shutdown.join().expect("shutdown");
    assert_eq!(running.join(), Ok(true));
}

#[test]
fn a_full_queue_does_not_block_a_tokio_runtime() {
    runtime().block_on(async {
        let pool = Pool::builder()
            .threads(1)
            .queue_cap(0)
            .build()
            .expect("pool");
        let gate = CancelToken::new();
        let slow = blocker(&pool, &gate);
        // The queue is full: this handle waits for room, asynchronously...
        let quick = pool.run(|| 9);
        // ...so the single runtime thread keeps running other tasks: this
        // one releases the pool.
        let releaser = tokio::spawn({
            let gate = gate.clone();
            async move {
                tokio::task::yield_now().await;
                gate.cancel();
            }
        });
        let results = tokio::time::timeout(LIMIT, async { (quick.await, slow.await) })
            .await
            .expect("in time");
        assert_eq!(results, (Ok(9), Ok(true)));
        releaser.await.expect("releaser");
        pool.shutdown();
    });
}

#[test]
fn blocking_on_a_runtime_thread_is_refused_not_a_silent_stall() {
    let pool = Pool::builder()
        .threads(1)
        .queue_cap(4)
        .build()
        .expect("pool");
    runtime().block_on(async {
        let joined =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(|| 1).join()));
        assert!(joined.is_err(), "join blocked a runtime thread");
        let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.blocking_run(|| 2).detach();
        }));
        assert!(queued.is_err(), "blocking_run blocked a runtime thread");
        // The async path works there.
        assert_eq!(pool.run(|| 3).await, Ok(3));
    });
    pool.shutdown();
}
