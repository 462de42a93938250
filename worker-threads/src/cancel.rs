//! [`CancelToken`]: the cooperative stop signal of a worker or a pool task.
//!
//! Rust threads cannot be killed from outside, so stopping is cooperative: the
//! owner cancels the token, and the code running on the thread sees it through
//! [`CancelToken::is_cancelled`] (a load, cheap enough for a hot loop), or
//! wakes from a blocking wait on it ([`CancelToken::wait_timeout`], or a
//! `crossbeam_channel::select!` on [`CancelToken::receiver`]).
//!
//! The token of the running worker or pool task is also the thread's
//! *current* token ([`enter`]), so that a [`MessagePort`](crate::MessagePort)
//! used on that thread wakes when the worker is terminated or the task
//! cancelled, without being given the token.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// A cooperative stop signal, shared by cloning.
///
/// A token may also carry a deadline (a pool task's timeout): once it has
/// passed, the token reads as cancelled.
#[derive(Clone, Debug)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Never {}

#[derive(Debug)]
struct Inner {
    cancelled: AtomicBool,
    deadline: OnceLock<Instant>,
    /// Dropped on cancel: the receiver then reads as disconnected, which wakes
    /// every `select!` waiting on it.
    wake_tx: Mutex<Option<Sender<Never>>>,
    wake_rx: Receiver<Never>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that is not cancelled and has no deadline.
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Self {
            inner: Arc::new(Inner {
                cancelled: AtomicBool::new(false),
                deadline: OnceLock::new(),
                wake_tx: Mutex::new(Some(tx)),
                wake_rx: rx,
            }),
        }
    }

    /// Cancels the token, waking every blocking wait on it. Idempotent.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        let tx = self
            .inner
            .wake_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(tx);
    }

    /// Whether the token was cancelled or its deadline has passed.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire) || self.is_past_deadline()
    }

    /// Whether [`cancel`](Self::cancel) was called (a passed deadline aside).
    pub(crate) fn was_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Whether the deadline, if any, has passed.
    pub(crate) fn is_past_deadline(&self) -> bool {
        self.inner
            .deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    }

    /// Sets the deadline once; later calls are ignored.
    pub(crate) fn set_deadline(&self, deadline: Instant) {
        let _ = self.inner.deadline.set(deadline);
    }

    /// The deadline, if the token has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline.get().copied()
    }

    /// A receiver that becomes ready (disconnected) when the token is
    /// cancelled; never yields a message. Use it in `crossbeam_channel::select!`
    /// to make any blocking receive cancellable. It does not observe the
    /// deadline: select on `crossbeam_channel::at(deadline)` for that.
    pub fn receiver(&self) -> &Receiver<impl Sized + use<>> {
        &self.inner.wake_rx
    }

    /// Sleeps until the token is cancelled, its deadline passes, or `timeout`
    /// elapses. Returns whether the token is cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let mut until = Instant::now() + timeout;
        if let Some(d) = self.deadline() {
            until = until.min(d);
        }
        if !self.is_cancelled() {
            let _ = self.inner.wake_rx.recv_deadline(until);
        }
        self.is_cancelled()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

/// Makes `token` the calling thread's current token until the guard drops
/// (a worker's whole life, a pool task's run).
pub(crate) fn enter(token: &CancelToken) -> CurrentGuard {
    CurrentGuard(CURRENT.with(|c| c.replace(Some(token.clone()))))
}

/// The calling thread's current token: its worker's or its pool task's.
pub(crate) fn current() -> Option<CancelToken> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Restores the previous current token on drop.
pub(crate) struct CurrentGuard(Option<CancelToken>);

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests;
