//! [`TaskHandle`]: the result of a pool task, joined from sync code or
//! awaited from async code.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::{QueuedTask, Shared};
use crate::TaskError;

/// The handle of a queued or running task.
///
/// Await it (it is a `Future`, and waiting does not block the runtime's
/// thread) or [`join`](Self::join) it from sync code. Dropping it cancels the
/// task: a queued task is removed, a running one sees its cancellation
/// signal; [`detach`](Self::detach) lets the task run on unobserved.
#[derive(Debug)]
#[must_use = "dropping a TaskHandle cancels the task; use detach() to let it run"]
pub struct TaskHandle<T> {
    slot: Option<Arc<QueuedTask>>,
    pool: Weak<Shared>,
    rx: oneshot::Receiver<Result<T, TaskError>>,
    finished: bool,
}

impl<T> TaskHandle<T> {
    pub(super) fn new(
        slot: Arc<QueuedTask>,
        rx: oneshot::Receiver<Result<T, TaskError>>,
        pool: Weak<Shared>,
    ) -> Self {
        Self {
            slot: Some(slot),
            pool,
            rx,
            finished: false,
        }
    }

    /// A handle already resolved with `result`.
    pub(super) fn resolved(result: Result<T, TaskError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Self {
            slot: None,
            pool: Weak::new(),
            rx,
            finished: false,
        }
    }

    /// Waits for the task's result, blocking the thread. From async code,
    /// await the handle instead: this would block the runtime's thread.
    pub fn join(mut self) -> Result<T, TaskError> {
        self.finished = true;
        // The job always sends before it is dropped; a missing result means
        // the pool went away with the task.
        super::block_on(&mut self.rx).unwrap_or(Err(TaskError::ShutDown))
    }

    /// Cancels the task: removed from the queue if it has not started (its
    /// result is then [`TaskError::Cancelled`]), signalled if it runs.
    pub fn cancel(&self) {
        if let (Some(slot), Some(pool)) = (&self.slot, self.pool.upgrade()) {
            pool.cancel(slot);
        } else if let Some(slot) = &self.slot {
            slot.cancel.cancel();
        }
    }

    /// Lets the task run to completion with nobody waiting for its result.
    pub fn detach(mut self) {
        self.finished = true;
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(result) => {
                self.finished = true;
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
