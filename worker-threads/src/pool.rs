//! [`Pool`]: a fixed set of rayon threads running CPU-bound tasks, with what
//! piscina adds on top of Node: a queue cap with backpressure, cancellation,
//! per-task timeouts, panic isolation and stats.
//!
//! From async code, one await gives the task's value: [`Pool::run`] returns
//! a [`TaskHandle`] at once, and the handle is a future that waits for room
//! in the queue (if the queue is capped and full), then for the result,
//! without ever blocking the runtime's thread:
//!
//! ```
//! use worker_threads::Pool;
//!
//! fn fib(n: u32) -> u64 { if n < 2 { n.into() } else { fib(n - 1) + fib(n - 2) } }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder().threads(2).queue_cap(64).build()?;
//! # let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! // In an async handler:
//! let n = pool.run(|| fib(25)).await?;
//! assert_eq!(n, 75_025);
//! # Ok::<(), worker_threads::TaskError>(())
//! # })?;
//! # Ok(())
//! # }
//! ```
//!
//! From sync code, [`TaskHandle::join`] waits for the value, and
//! [`Pool::blocking_run`] waits for room before it returns the handle (a
//! producer then never outruns the pool). Both block their thread, so both
//! refuse to run on an async runtime's thread: like tokio's own `blocking_*`
//! methods they panic there (when tokio's runtime is in the build), rather
//! than silently stall every task of that thread.
//!
//! The queue is ours, not rayon's: every queued task sits in a `VecDeque`
//! behind a mutex, and each admitted task spawns one rayon job that pops the
//! oldest task and runs it. So a queued task can be removed (cancelled, or
//! its handle dropped) before it runs, and the queue length is exact.
//!
//! A task moves to another thread, so what it captures must be `Send`:
//!
//! ```compile_fail
//! let pool = worker_threads::Pool::new(1).expect("pool");
//! let shared = std::rc::Rc::new(1);
//! let _ = pool.run(move || *shared + 1); // Rc is not Send
//! ```
//!
//! # Caveats
//! - Cancelling a running task, and its timeout, are cooperative: a task
//!   that asked for its [`CancelToken`] ([`Pool::run_with_token`],
//!   [`Pool::run_with_timeout`]) sees it and should return; its result is
//!   then [`TaskError::Cancelled`] or [`TaskError::TimedOut`] whatever it
//!   returned. A [`MessagePort`](crate::MessagePort) used inside a task wakes
//!   on its cancellation too. A timeout counts from when the task starts
//!   running.
//! - A panicking task's panic still goes through the process's panic hook
//!   (printed on stderr by default) before it becomes
//!   [`TaskError::Panicked`]; this library leaves the global hook alone.
//!   A panic in the `Drop` of a value dropped on a pool thread (a result
//!   nobody waits for, the value of a task cancelled while it ran, a panic's
//!   payload) is caught as well and counted in
//!   [`PoolStats::panicked_drops`]: a pool thread never unwinds, so rayon
//!   never aborts the process.
//! - Dropping the pool cancels the queued tasks and lets the running ones
//!   finish in the background; [`Pool::shutdown`] and [`Pool::shutdown_now`]
//!   wait for them and join the threads. A task still waiting for room in
//!   the queue resolves to [`TaskError::ShutDown`] either way.

mod handle;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub use self::handle::TaskHandle;
use crate::panic_message::{drop_caught, panic_message};
use crate::{CancelToken, Error, TaskError, TryRunError, cancel, identity};

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

    /// The most tasks that may wait for a thread: a task is admitted while
    /// fewer than `threads + cap` tasks are queued or running. When the
    /// queue is full, [`Pool::try_run`] hands the task back,
    /// [`Pool::blocking_run`] blocks, and the handle of [`Pool::run`] waits
    /// for room when it is awaited or joined. `0` is piscina's
    /// `maxQueue: 0`: a task is admitted only when a thread is free for it.
    /// Default: no cap (piscina's default).
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
    ///
    /// # Errors
    /// [`Error::PoolBuild`] if the threads cannot be started.
    pub fn build(self) -> Result<Pool, Error> {
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let prefix = self.thread_name.unwrap_or_else(|| "worker-pool".to_owned());
        let exits = Arc::new((Mutex::new(0_usize), Condvar::new()));
        let exits_in_handler = Arc::clone(&exits);
        let panicked_drops = Arc::new(AtomicU64::new(0));
        let escaped = Arc::clone(&panicked_drops);
        let mut builder = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{prefix}-{i}"))
            .start_handler(|_| identity::mark_worker_thread())
            .exit_handler(move |_| {
                let (count, cv) = &*exits_in_handler;
                *lock(count) += 1;
                cv.notify_all();
            })
            // Nothing of ours unwinds out of a job (every user value is
            // dropped under `catch_unwind`); should anything, rayon's default
            // would abort the process. Count it instead.
            .panic_handler(move |payload| {
                drop_caught(payload);
                escaped.fetch_add(1, Ordering::Relaxed);
            });
        if let Some(bytes) = self.stack_size {
            builder = builder.stack_size(bytes);
        }
        let rayon = Arc::new(
            builder
                .build()
                .map_err(|source| Error::PoolBuild { source })?,
        );
        // Tokens in a bounded channel count the admitted tasks: tokio's
        // channel gives the fair async wait, the `try_` form and the blocking
        // form that refuses to run on a runtime's thread.
        let room = self.queue_cap.map(|cap| {
            let places = threads.saturating_add(cap).min(MAX_PLACES);
            let (tx, rx) = mpsc::channel(places);
            Room {
                tx,
                rx: Mutex::new(rx),
            }
        });
        Ok(Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                idle: Condvar::new(),
                room,
                rayon: Arc::downgrade(&rayon),
                threads,
                started: Instant::now(),
                completed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
                panicked_drops,
                busy_nanos: AtomicU64::new(0),
            }),
            rayon: Some(rayon),
            exits,
        })
    }
}

/// The most places a capped queue may have (tokio's semaphore limit).
const MAX_PLACES: usize = usize::MAX >> 4;

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
    /// Tasks that panicked.
    pub failed: u64,
    /// Tasks cancelled (through their handle, or by dropping it) before they
    /// produced their value, queued or running.
    pub cancelled: u64,
    /// Tasks that ran past their timeout.
    pub timed_out: u64,
    /// Values whose `Drop` panicked on a pool thread (caught: see the
    /// module's Caveats).
    pub panicked_drops: u64,
    /// The share of the threads' time spent running tasks since the pool
    /// started, from 0 to 1 (finished tasks only).
    pub utilisation: f64,
}

/// A pool of threads for CPU-bound tasks; see the [module docs](self).
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    rayon: Option<Arc<rayon::ThreadPool>>,
    exits: Arc<(Mutex<usize>, Condvar)>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the queue is empty and nothing runs.
    idle: Condvar,
    /// The queue cap's places; `None` without a cap.
    room: Option<Room>,
    rayon: Weak<rayon::ThreadPool>,
    threads: usize,
    started: Instant,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    panicked_drops: Arc<AtomicU64>,
    busy_nanos: AtomicU64,
}

/// The places of a capped queue: a token sent on `tx` holds one, from the
/// task's admission to its end; receiving one frees it.
#[derive(Debug)]
struct Room {
    tx: mpsc::Sender<()>,
    rx: Mutex<mpsc::Receiver<()>>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Arc<QueuedTask>>,
    /// Tasks of detached handles that wait for room: each takes the next
    /// place freed, before any awaiting handle.
    detached: VecDeque<Arc<QueuedTask>>,
    running: usize,
    closed: bool,
}

/// Not in the queue yet: its handle waits for room.
const WAITING: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// One task, from `run` to its result.
struct QueuedTask {
    phase: AtomicU8,
    cancel: CancelToken,
    timeout: Option<Duration>,
    /// Taken by whoever ends the task: a pool thread (to run it) or a
    /// canceller (to resolve it without running it).
    job: Mutex<Option<Job>>,
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
    /// Run the task; `pool.finish` counts it (and frees its place) before
    /// its result is sent.
    Run {
        token: &'a CancelToken,
        pool: &'a Arc<Shared>,
        started: Instant,
    },
    /// Resolve it; a panicking `Drop` of the task is reported on `pool`.
    Resolve(TaskError),
}

/// How a task that ran ended, for the stats.
#[derive(Clone, Copy)]
enum Outcome {
    Completed,
    Panicked,
    Cancelled,
    TimedOut,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks; a poisoned one is still sound.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    /// A pool of `threads` threads with no queue cap.
    ///
    /// # Errors
    /// [`Error::PoolBuild`] if the threads cannot be started.
    pub fn new(threads: usize) -> Result<Self, Error> {
        Self::builder().threads(threads).build()
    }

    /// A builder, to set the queue cap and the threads.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Runs `task` on the pool. Never blocks: the task is queued now if
    /// there is room, and otherwise the returned handle waits for room when
    /// it is awaited (without blocking the runtime) or joined. Await the
    /// handle for the value (one await), or [`join`](TaskHandle::join) it
    /// from sync code. On a shut-down pool the handle resolves to
    /// [`TaskError::ShutDown`].
    ///
    /// The task is given nothing; one that should stop when cancelled asks
    /// for its token with [`run_with_token`](Self::run_with_token).
    pub fn run<T, F>(&self, task: F) -> TaskHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit(None, move |_: &CancelToken| task())
    }

    /// [`run`](Self::run) for a task that watches its [`CancelToken`]:
    /// cancelled when its handle is cancelled or dropped.
    pub fn run_with_token<T, F>(&self, task: F) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit(None, task)
    }

    /// [`run_with_token`](Self::run_with_token) with a timeout counted from
    /// when the task starts: past it the token reads as cancelled, and the
    /// result is [`TaskError::TimedOut`].
    pub fn run_with_timeout<T, F>(&self, timeout: Duration, task: F) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Some(timeout), task)
    }

    /// Runs `task`, first blocking this thread while the queue is at its cap
    /// (backpressure for a sync producer: it never gets ahead of the pool).
    /// Without a cap it never blocks, like [`run`](Self::run).
    ///
    /// # Panics
    /// On a pool with a queue cap, when called on a thread that drives an
    /// async runtime (tokio's check, as in its `blocking_send`): blocking
    /// there would stall every task of that thread. Use [`run`](Self::run)
    /// and await the handle instead.
    pub fn blocking_run<T, F>(&self, task: F) -> TaskHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (slot, rx) = new_task(None, move |_: &CancelToken| task());
        let handle = TaskHandle::new(Arc::clone(&slot), rx, Arc::downgrade(&self.shared));
        match &self.shared.room {
            None => self.shared.admit(&slot, false),
            Some(room) => match room.tx.blocking_send(()) {
                Ok(()) => self.shared.admit(&slot, true),
                Err(_closed) => self.shared.resolve_waiting(&slot, TaskError::ShutDown),
            },
        }
        handle
    }

    /// Runs `task` if the queue has room now; otherwise hands it back
    /// ([`TryRunError::Full`]).
    ///
    /// # Errors
    /// [`TryRunError::Full`] or [`TryRunError::ShutDown`], with the task.
    pub fn try_run<T, F>(&self, task: F) -> Result<TaskHandle<T>, TryRunError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if lock(&self.shared.state).closed {
            return Err(TryRunError::ShutDown(task));
        }
        let holds_place = match &self.shared.room {
            None => false,
            Some(room) => match room.tx.try_send(()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(())) => return Err(TryRunError::Full(task)),
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return Err(TryRunError::ShutDown(task));
                }
            },
        };
        let (slot, rx) = new_task(None, move |_: &CancelToken| task());
        let handle = TaskHandle::new(Arc::clone(&slot), rx, Arc::downgrade(&self.shared));
        self.shared.admit(&slot, holds_place);
        Ok(handle)
    }

    fn submit<T, F>(&self, timeout: Option<Duration>, task: F) -> TaskHandle<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (slot, rx) = new_task(timeout, task);
        let handle = TaskHandle::new(Arc::clone(&slot), rx, Arc::downgrade(&self.shared));
        let Some(room) = &self.shared.room else {
            self.shared.admit(&slot, false);
            return handle;
        };
        match room.tx.try_send(()) {
            Ok(()) => {
                self.shared.admit(&slot, true);
                handle
            }
            Err(mpsc::error::TrySendError::Full(())) => handle.waiting_for(room.tx.clone()),
            Err(mpsc::error::TrySendError::Closed(())) => {
                self.shared.resolve_waiting(&slot, TaskError::ShutDown);
                handle
            }
        }
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
            cancelled: shared.cancelled.load(Ordering::Relaxed),
            timed_out: shared.timed_out.load(Ordering::Relaxed),
            panicked_drops: shared.panicked_drops.load(Ordering::Relaxed),
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
    /// the threads. Tasks still waiting for room resolve to
    /// [`TaskError::ShutDown`].
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
        let (dropped, detached) = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            let dropped: Vec<_> = if drop_queued {
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            (dropped, std::mem::take(&mut state.detached))
        };
        for slot in &dropped {
            slot.phase.store(DONE, Ordering::Release);
            self.shared.resolve(slot, TaskError::ShutDown);
        }
        for slot in &detached {
            self.shared.resolve_waiting(slot, TaskError::ShutDown);
        }
        if let Some(room) = &self.shared.room {
            // Wakes every handle and `blocking_run` waiting for room.
            lock(&room.rx).close();
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

/// A task and the receiver of its result; the task is not admitted yet.
fn new_task<T, F>(
    timeout: Option<Duration>,
    task: F,
) -> (Arc<QueuedTask>, oneshot::Receiver<Result<T, TaskError>>)
where
    F: FnOnce(&CancelToken) -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |action| match action {
        Action::Run {
            token,
            pool,
            started,
        } => {
            let result = match catch_unwind(AssertUnwindSafe(|| task(token))) {
                Ok(value) => match verdict(token, timeout) {
                    None => Ok(value),
                    Some(err) => {
                        pool.drop_caught(value);
                        Err(err)
                    }
                },
                Err(payload) => {
                    let message = panic_message(&*payload);
                    pool.drop_caught(payload);
                    Err(TaskError::Panicked { message })
                }
            };
            // The stats count the task, and its place is free, before its
            // result can be seen.
            pool.finish(outcome(&result), started);
            if let Err(unsent) = tx.send(result) {
                // Nobody waits for it: its `Drop` runs here, on our thread.
                pool.drop_caught(unsent);
            }
        }
        Action::Resolve(err) => {
            let _ = tx.send(Err(err));
        }
    });
    let slot = Arc::new(QueuedTask {
        phase: AtomicU8::new(WAITING),
        cancel: CancelToken::new(),
        timeout,
        job: Mutex::new(Some(job)),
    });
    (slot, rx)
}

fn outcome<T>(result: &Result<T, TaskError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Completed,
        Err(TaskError::Cancelled | TaskError::ShutDown) => Outcome::Cancelled,
        Err(TaskError::TimedOut { .. }) => Outcome::TimedOut,
        Err(TaskError::Panicked { .. }) => Outcome::Panicked,
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

impl Shared {
    /// Puts a waiting task in the queue and gives the pool a job for it.
    /// `holds_place`: the task took a place of the capped queue, given back
    /// if it is not queued after all (cancelled meanwhile, pool closed).
    fn admit(self: &Arc<Self>, slot: &Arc<QueuedTask>, holds_place: bool) {
        {
            let mut state = lock(&self.state);
            let queued = !state.closed
                && slot
                    .phase
                    .compare_exchange(WAITING, QUEUED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            if queued {
                state.queue.push_back(Arc::clone(slot));
            } else {
                let closed = state.closed;
                drop(state);
                if closed {
                    self.resolve_waiting(slot, TaskError::ShutDown);
                }
                if holds_place {
                    self.release_place();
                }
                return;
            }
        }
        // The pool cannot be gone while the task is queued: closing drains
        // or runs the queue before the threads go.
        if let Some(rayon) = self.rayon.upgrade() {
            let shared = Arc::clone(self);
            rayon.spawn(move || shared.run_next());
        }
    }

    /// Resolves a task that was never queued (unless something else ended
    /// it first).
    fn resolve_waiting(&self, slot: &QueuedTask, err: TaskError) {
        if slot
            .phase
            .compare_exchange(WAITING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.resolve(slot, err);
        }
    }

    /// Sends `err` as the result of a task taken out of the queue (or never
    /// queued) without running it; the task is dropped here, a panic of its
    /// `Drop` caught.
    fn resolve(&self, slot: &QueuedTask, err: TaskError) {
        if let Some(job) = lock(&slot.job).take() {
            let resolved = catch_unwind(AssertUnwindSafe(move || job(Action::Resolve(err))));
            if let Err(payload) = resolved {
                self.drop_caught(payload);
                self.panicked_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops a user's value on our thread, counting a panic of its `Drop`.
    fn drop_caught<T>(&self, value: T) {
        if drop_caught(value) {
            self.panicked_drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives a place of the capped queue back: to the oldest detached task
    /// waiting for one, or to whoever waits next.
    fn release_place(self: &Arc<Self>) {
        let Some(room) = &self.room else {
            return;
        };
        let next = {
            let mut state = lock(&self.state);
            let next = state.detached.pop_front();
            if next.is_none() {
                let _ = lock(&room.rx).try_recv();
            }
            next
        };
        if let Some(slot) = next {
            self.admit(&slot, true);
        }
    }

    /// Hands a detached handle's task to the pool: it takes a place now if
    /// there is one, else the next one freed.
    fn detach_waiting(self: &Arc<Self>, slot: &Arc<QueuedTask>) {
        let Some(room) = &self.room else {
            return self.admit(slot, false);
        };
        let admitted = {
            let mut state = lock(&self.state);
            match room.tx.try_send(()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(())) if !state.closed => {
                    state.detached.push_back(Arc::clone(slot));
                    return;
                }
                Err(_) => false,
            }
        };
        if admitted {
            self.admit(slot, true);
        } else {
            self.resolve_waiting(slot, TaskError::ShutDown);
        }
    }

    /// The body of every rayon job: runs the oldest queued task, if any is
    /// left (a cancelled task leaves its job nothing to do).
    fn run_next(self: &Arc<Self>) {
        let slot = {
            let mut state = lock(&self.state);
            let Some(slot) = state.queue.pop_front() else {
                return;
            };
            state.running += 1;
            slot.phase.store(RUNNING, Ordering::Release);
            slot
        };
        let started = Instant::now();
        if let Some(timeout) = slot.timeout {
            slot.cancel.set_deadline(started + timeout);
        }
        let job = lock(&slot.job).take();
        {
            let _current = cancel::enter(&slot.cancel);
            match job {
                Some(job) => job(Action::Run {
                    token: &slot.cancel,
                    pool: self,
                    started,
                }),
                // Unreachable: only the thread that popped the slot takes its job.
                None => self.finish(Outcome::Cancelled, started),
            }
        }
        slot.phase.store(DONE, Ordering::Release);
    }

    /// Counts a task that ran and frees its place, before its result is
    /// sent.
    fn finish(self: &Arc<Self>, outcome: Outcome, started: Instant) {
        let busy = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(busy, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Completed => &self.completed,
            Outcome::Panicked => &self.failed,
            Outcome::Cancelled => &self.cancelled,
            Outcome::TimedOut => &self.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = lock(&self.state);
            state.running -= 1;
            if state.queue.is_empty() && state.running == 0 {
                self.idle.notify_all();
            }
        }
        self.release_place();
    }

    /// Cancels a task: resolves it if it waits for room, removes it if
    /// queued, signals it if running.
    fn cancel(self: &Arc<Self>, slot: &Arc<QueuedTask>) {
        slot.cancel.cancel();
        if slot
            .phase
            .compare_exchange(WAITING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // A detached task waiting for room leaves that line too.
            lock(&self.state)
                .detached
                .retain(|waiting| !Arc::ptr_eq(waiting, slot));
            self.cancelled.fetch_add(1, Ordering::Relaxed);
            self.resolve(slot, TaskError::Cancelled);
            return;
        }
        let removed = {
            let mut state = lock(&self.state);
            if slot.phase.load(Ordering::Acquire) != QUEUED {
                return;
            }
            let pos = state.queue.iter().position(|s| Arc::ptr_eq(s, slot));
            let removed = pos.and_then(|pos| state.queue.remove(pos));
            if removed.is_some() {
                slot.phase.store(DONE, Ordering::Release);
                if state.queue.is_empty() && state.running == 0 {
                    self.idle.notify_all();
                }
            }
            removed
        };
        if let Some(slot) = removed {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
            self.resolve(&slot, TaskError::Cancelled);
            self.release_place();
        }
    }
}

#[cfg(test)]
mod tests;
