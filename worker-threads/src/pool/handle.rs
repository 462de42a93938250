//! [`TaskHandle`]: the result of a pool task, awaited from async code (one
//! await: the handle is the future) or joined from sync code.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use super::{DONE, QueuedTask, Shared};
use crate::TaskError;

/// The handle of a task: waiting for room in the queue, queued, running or
/// done.
///
/// Await it (it is a `Future`: it waits for room if the queue was full when
/// the task was submitted, then for the result, and never blocks the
/// runtime's thread) or [`join`](Self::join) it from sync code. Dropping it
/// cancels the task: a task not yet running is removed, a running one sees
/// its cancellation signal; [`detach`](Self::detach) lets the task run on
/// unobserved.
#[derive(Debug)]
#[must_use = "dropping a TaskHandle cancels the task; await it, join it, or detach() it"]
pub struct TaskHandle<T> {
    slot: Arc<QueuedTask>,
    pool: Weak<Shared>,
    rx: oneshot::Receiver<Result<T, TaskError>>,
    /// Set while the task waits for room in a full queue.
    pub(super) waiting: Option<Waiting>,
    finished: bool,
}

/// A task not admitted yet: the sender whose token is its place in the
/// queue, and the wait for that place once the handle is polled.
pub(super) struct Waiting {
    tx: mpsc::Sender<()>,
    /// In a mutex only so that the handle stays `Sync`; polled through
    /// `get_mut`, never locked.
    place: Mutex<Option<Pin<Box<dyn Future<Output = bool> + Send>>>>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiting")
    }
}

impl<T> TaskHandle<T> {
    pub(super) fn new(
        slot: Arc<QueuedTask>,
        rx: oneshot::Receiver<Result<T, TaskError>>,
        pool: Weak<Shared>,
    ) -> Self {
        Self {
            slot,
            pool,
            rx,
            waiting: None,
            finished: false,
        }
    }

    /// The same handle, for a task that waits for a place through `tx`.
    pub(super) fn waiting_for(mut self, tx: mpsc::Sender<()>) -> Self {
        self.waiting = Some(Waiting {
            tx,
            place: Mutex::new(None),
        });
        self
    }

    /// Waits for the task's result, blocking the thread (first for room in
    /// the queue, if the task still waits for it).
    ///
    /// # Errors
    /// The task's [`TaskError`].
    ///
    /// # Panics
    /// When called on a thread that drives an async runtime (tokio's check,
    /// as in its `blocking_recv`): await the handle there instead.
    pub fn join(mut self) -> Result<T, TaskError> {
        if let Some(waiting) = self.waiting.take()
            && self.slot.phase.load(std::sync::atomic::Ordering::Acquire) != DONE
        {
            let got_place = waiting.tx.blocking_send(()).is_ok();
            self.enter(got_place);
        }
        // The job always sends before it is dropped; a missing result means
        // the pool went away with the task.
        let (_, closed) = oneshot::channel();
        let rx = std::mem::replace(&mut self.rx, closed);
        let result = rx.blocking_recv().unwrap_or(Err(TaskError::ShutDown));
        self.finished = true;
        result
    }

    /// Cancels the task: removed if it has not started (its result is then
    /// [`TaskError::Cancelled`]), signalled if it runs.
    pub fn cancel(&self) {
        match self.pool.upgrade() {
            Some(pool) => pool.cancel(&self.slot),
            None => self.slot.cancel.cancel(),
        }
    }

    /// Lets the task run to completion with nobody waiting for its result.
    /// A task that still waits for room in the queue takes the next place
    /// freed.
    pub fn detach(mut self) {
        self.finished = true;
        if self.waiting.take().is_some()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.detach_waiting(&self.slot);
        }
    }

    /// Queues the task once it has a place (`got_place`), or resolves it as
    /// shut down (the pool closed while it waited).
    fn enter(&mut self, got_place: bool) {
        match self.pool.upgrade() {
            Some(pool) if got_place => pool.admit(&self.slot, true),
            Some(pool) => pool.resolve_waiting(&self.slot, TaskError::ShutDown),
            // The pool is gone: its closing resolved the task, or nothing
            // ever will; either way there is nothing to queue.
            None => {}
        }
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(waiting) = &mut this.waiting {
            let got_place = if this.slot.phase.load(std::sync::atomic::Ordering::Acquire) == DONE {
                // Cancelled while it waited: its result is already sent.
                None
            } else {
                let Waiting { tx, place } = waiting;
                let place = place
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(|| {
                        let tx = tx.clone();
                        Box::pin(async move { tx.send(()).await.is_ok() })
                    });
                match place.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(got_place) => Some(got_place),
                }
            };
            this.waiting = None;
            if let Some(got_place) = got_place {
                this.enter(got_place);
            }
        }
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Ready(result) => {
                this.finished = true;
                Poll::Ready(result.unwrap_or(Err(TaskError::ShutDown)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.cancel();
        }
    }
}
