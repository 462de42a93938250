//! [`Pool`]: a fixed set of rayon threads running CPU-bound tasks, with what
//! piscina adds on top of Node: a queue cap with backpressure, cancellation,
//! per-task timeouts, panic isolation and stats.
//!
//! The queue is ours, not rayon's: every queued task sits in a `VecDeque`
//! behind a mutex, and each `run` spawns one rayon job that pops the oldest
//! task and runs it. So a queued task can be removed (cancelled, or its handle
//! dropped) before it runs, and the queue length is exact.
//!
//! A task moves to another thread, so what it captures must be `Send`:
//!
//! ```compile_fail
//! let pool = worker_threads::Pool::new(1).expect("pool");
//! let shared = std::rc::Rc::new(1);
//! let _ = pool.run(move |_| *shared + 1); // Rc is not Send
//! ```
//!
//! # Caveats
//! - Cancelling a running task, and its timeout, are cooperative: the task
//!   sees its [`CancelToken`] and should return; its result is then
//!   [`TaskError::Cancelled`] or [`TaskError::TimedOut`] whatever it returned.
//!   A timeout counts from when the task starts running.
//! - A panicking task's panic still goes through the process's panic hook
//!   (printed on stderr by default) before it becomes
//!   [`TaskError::Panicked`]; this library leaves the global hook alone.
//! - Dropping the pool cancels the queued tasks and lets the running ones
//!   finish in the background; [`Pool::shutdown`] and [`Pool::shutdown_now`]
//!   wait for them and join the threads.

mod handle;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};

pub use self::handle::TaskHandle;
use crate::panic_message::panic_message;
use crate::{CancelToken, Error, TaskError, TryRunError, identity};

/// How to build a [`Pool`]; each setter says its default.
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    threads: Option<usize>,
    queue_cap: Option<usize>,
    thread_name: Option<String>,
    stack_size: Option<usize>,
}

impl PoolBuilder {
    /// The number of threads. Default: `std::thread::available_parallelism()`.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// The most tasks that may wait in the queue (running ones aside); `run`
    /// then blocks and `try_run` hands the task back. Default: no cap
    /// (piscina's default).
    pub fn queue_cap(mut self, cap: usize) -> Self {
        self.queue_cap = Some(cap);
        self
    }

    /// The threads' name prefix; threads are named `<prefix>-<index>`.
    /// Default: `worker-pool`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = Some(prefix.into());
        self
    }

    /// The threads' stack size in bytes. Default: rayon's.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Starts the threads.
    pub fn build(self) -> Result<Pool, Error> {
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let prefix = self.thread_name.unwrap_or_else(|| "worker-pool".to_owned());
        let exits = Arc::new((Mutex::new(0_usize), Condvar::new()));
        let exits_in_handler = Arc::clone(&exits);
        let mut builder = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{prefix}-{i}"))
            .start_handler(|_| identity::mark_worker_thread())
            .exit_handler(move |_| {
                let (count, cv) = &*exits_in_handler;
                *lock(count) += 1;
                cv.notify_all();
            });
        if let Some(bytes) = self.stack_size {
            builder = builder.stack_size(bytes);
        }
        let rayon = builder
            .build()
            .map_err(|source| Error::PoolBuild { source })?;
        Ok(Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                idle: Condvar::new(),
                permits: self.queue_cap.map(|cap| Arc::new(Semaphore::new(cap))),
                threads,
                started: Instant::now(),
                completed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                busy_nanos: AtomicU64::new(0),
            }),
            rayon: Some(rayon),
            exits,
        })
    }
}

/// A snapshot of a pool's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The pool's threads.
    pub threads: usize,
    /// Tasks waiting to run.
    pub queued: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks that ran and produced their value.
    pub completed: u64,
    /// Tasks that ran and panicked, were cancelled while running, or timed out.
    pub failed: u64,
    /// The share of the threads' time spent running tasks since the pool
    /// started, from 0 to 1 (finished tasks only).
    pub utilisation: f64,
}

/// A pool of threads for CPU-bound tasks; see the [module docs](self).
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    rayon: Option<rayon::ThreadPool>,
    exits: Arc<(Mutex<usize>, Condvar)>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the queue is empty and nothing runs.
    idle: Condvar,
    permits: Option<Arc<Semaphore>>,
    threads: usize,
    started: Instant,
    completed: AtomicU64,
    failed: AtomicU64,
    busy_nanos: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Arc<QueuedTask>>,
    running: usize,
    closed: bool,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// One task, from `run` to its result.
struct QueuedTask {
    phase: AtomicU8,
    cancel: CancelToken,
    timeout: Option<Duration>,
    /// Taken by whoever removes the slot from the queue: a pool thread (to
    /// run it) or a canceller (to resolve it as cancelled).
    job: Mutex<Option<Job>>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl std::fmt::Debug for QueuedTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedTask")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

type Job = Box<dyn FnOnce(Action<'_>) + Send>;

/// What to do with a job: run it, or resolve it with an error without
/// running it.
enum Action<'a> {
    /// Run the task; call `finish` with whether it produced its value before
    /// sending the result.
    Run {
        token: &'a CancelToken,
        finish: &'a dyn Fn(bool),
    },
    Resolve(TaskError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks; a poisoned one is still sound.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    /// A pool of `threads` threads with no queue cap.
    pub fn new(threads: usize) -> Result<Self, Error> {
        Self::builder().threads(threads).build()
    }

    /// A builder, to set the queue cap and the threads.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Queues `task`, blocking while the queue is at its cap (backpressure).
    /// From async code use [`run_async`](Self::run_async), which waits without
    /// blocking the runtime. On a shut-down pool the handle resolves to
    /// [`TaskError::ShutDown`].
    pub fn run<T, F>(&self, task: F) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_inner(None, task)
    }

    /// [`run`](Self::run) with a timeout counted from when the task starts.
    pub fn run_with_timeout<T, F>(&self, timeout: Duration, task: F) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_inner(Some(timeout), task)
    }

    fn run_inner<T, F>(&self, timeout: Option<Duration>, task: F) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        match &self.shared.permits {
            None => self.enqueue(None, timeout, task),
            Some(permits) => match block_on(Arc::clone(permits).acquire_owned()) {
                Ok(permit) => self.enqueue(Some(permit), timeout, task),
                Err(_closed) => TaskHandle::resolved(Err(TaskError::ShutDown)),
            },
        }
    }

    /// Queues `task`, waiting asynchronously while the queue is at its cap.
    pub async fn run_async<T, F>(&self, task: F) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        match &self.shared.permits {
            None => self.enqueue(None, None, task),
            Some(permits) => match Arc::clone(permits).acquire_owned().await {
                Ok(permit) => self.enqueue(Some(permit), None, task),
                Err(_closed) => TaskHandle::resolved(Err(TaskError::ShutDown)),
            },
        }
    }

    /// Queues `task` if there is room; otherwise hands it back.
    pub fn try_run<T, F>(&self, task: F) -> Result<TaskHandle<T>, TryRunError<F>>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        if lock(&self.shared.state).closed {
            return Err(TryRunError::ShutDown(task));
        }
        let permit = match &self.shared.permits {
            None => None,
            Some(permits) => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(TryAcquireError::NoPermits) => return Err(TryRunError::Full(task)),
                Err(TryAcquireError::Closed) => return Err(TryRunError::ShutDown(task)),
            },
        };
        Ok(self.enqueue(permit, None, task))
    }

    fn enqueue<T, F>(
        &self,
        permit: Option<OwnedSemaphorePermit>,
        timeout: Option<Duration>,
        task: F,
    ) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |action| match action {
            Action::Run { token, finish } => {
                let result = match catch_unwind(AssertUnwindSafe(|| task(token))) {
                    Ok(value) => verdict(token, timeout).map_or(Ok(value), Err),
                    Err(payload) => Err(TaskError::Panicked {
                        message: panic_message(&*payload),
                    }),
                };
                // The stats count the task before its result can be seen.
                finish(result.is_ok());
                let _ = tx.send(result);
            }
            Action::Resolve(err) => {
                let _ = tx.send(Err(err));
            }
        });
        let slot = Arc::new(QueuedTask {
            phase: AtomicU8::new(QUEUED),
            cancel: CancelToken::new(),
            timeout,
            job: Mutex::new(Some(job)),
            permit: Mutex::new(permit),
        });
        {
            let mut state = lock(&self.shared.state);
            if state.closed {
                drop(state);
                resolve(&slot, TaskError::ShutDown);
                return TaskHandle::new(slot, rx, Arc::downgrade(&self.shared));
            }
            state.queue.push_back(Arc::clone(&slot));
        }
        let shared = Arc::clone(&self.shared);
        if let Some(rayon) = &self.rayon {
            rayon.spawn(move || shared.run_next());
        }
        TaskHandle::new(slot, rx, Arc::downgrade(&self.shared))
    }

    /// The pool's counters now.
    pub fn stats(&self) -> PoolStats {
        let shared = &self.shared;
        let (queued, running) = {
            let state = lock(&shared.state);
            (state.queue.len(), state.running)
        };
        let busy = Duration::from_nanos(shared.busy_nanos.load(Ordering::Relaxed));
        let capacity = shared.started.elapsed().as_secs_f64() * shared.threads as f64;
        PoolStats {
            threads: shared.threads,
            queued,
            running,
            completed: shared.completed.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
            utilisation: if capacity > 0.0 {
                (busy.as_secs_f64() / capacity).min(1.0)
            } else {
                0.0
            },
        }
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Refuses new tasks, runs every queued one, waits for them, and joins
    /// the threads.
    pub fn shutdown(mut self) {
        self.close(false);
        self.join_threads();
    }

    /// Refuses new tasks, resolves every queued one as
    /// [`TaskError::ShutDown`] without running it, waits for the running ones,
    /// and joins the threads.
    pub fn shutdown_now(mut self) {
        self.close(true);
        self.join_threads();
    }

    fn close(&mut self, drop_queued: bool) {
        let dropped: Vec<Arc<QueuedTask>> = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            if drop_queued {
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for slot in &dropped {
            resolve(slot, TaskError::ShutDown);
        }
        if let Some(permits) = &self.shared.permits {
            // Wakes every `run` blocked on a full queue.
            permits.close();
        }
    }

    fn join_threads(&mut self) {
        {
            let mut state = lock(&self.shared.state);
            while !(state.queue.is_empty() && state.running == 0) {
                state = self
                    .shared
                    .idle
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        drop(self.rayon.take());
        let (count, cv) = &*self.exits;
        let mut exited = lock(count);
        while *exited < self.shared.threads {
            exited = cv
                .wait(exited)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.rayon.is_some() {
            self.close(true);
        }
    }
}

/// Why a task that returned a value yields an error instead.
fn verdict(token: &CancelToken, timeout: Option<Duration>) -> Option<TaskError> {
    if token.was_cancelled() {
        Some(TaskError::Cancelled)
    } else if token.is_past_deadline() {
        timeout.map(|timeout| TaskError::TimedOut { timeout })
    } else {
        None
    }
}

/// Resolves a slot that was taken out of the queue without running it.
fn resolve(slot: &QueuedTask, err: TaskError) {
    slot.phase.store(DONE, Ordering::Release);
    drop(lock(&slot.permit).take());
    if let Some(job) = lock(&slot.job).take() {
        job(Action::Resolve(err));
    }
}

impl Shared {
    /// The body of every rayon job: runs the oldest queued task, if any is
    /// left (a cancelled task leaves its job nothing to do).
    fn run_next(&self) {
        let slot = {
            let mut state = lock(&self.state);
            let Some(slot) = state.queue.pop_front() else {
                return;
            };
            state.running += 1;
            slot.phase.store(RUNNING, Ordering::Release);
            // Room in the queue shows at the same time as the task running.
            drop(lock(&slot.permit).take());
            slot
        };
        let started = Instant::now();
        if let Some(timeout) = slot.timeout {
            slot.cancel.set_deadline(started + timeout);
        }
        let finish = |ok: bool| {
            let busy = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.busy_nanos.fetch_add(busy, Ordering::Relaxed);
            if ok {
                self.completed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            let mut state = lock(&self.state);
            state.running -= 1;
            if state.queue.is_empty() && state.running == 0 {
                self.idle.notify_all();
            }
        };
        let job = lock(&slot.job).take();
        match job {
            Some(job) => job(Action::Run {
                token: &slot.cancel,
                finish: &finish,
            }),
            // Unreachable: only the thread that popped the slot takes its job.
            None => finish(false),
        }
        slot.phase.store(DONE, Ordering::Release);
    }

    /// Cancels a task: removes it if queued, signals it if running.
    fn cancel(&self, slot: &Arc<QueuedTask>) {
        slot.cancel.cancel();
        if slot.phase.load(Ordering::Acquire) != QUEUED {
            return;
        }
        let removed = {
            let mut state = lock(&self.state);
            let pos = state.queue.iter().position(|s| Arc::ptr_eq(s, slot));
            let removed = pos.and_then(|pos| state.queue.remove(pos));
            if removed.is_some() && state.queue.is_empty() && state.running == 0 {
                self.idle.notify_all();
            }
            removed
        };
        if let Some(slot) = removed {
            resolve(&slot, TaskError::Cancelled);
        }
    }
}

/// Runs a future to completion on this thread, parking between polls.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unparker(std::thread::Thread);
    impl std::task::Wake for Unparker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests;
