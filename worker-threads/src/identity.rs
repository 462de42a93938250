//! Who is running: [`is_main_thread`] and [`ThreadId`].

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

static NEXT_WORKER_ID: AtomicU64 = AtomicU64::new(1);

/// Whether the calling thread is *not* one this crate started: false inside a
/// [`Worker`](crate::Worker) and on the threads of a [`Pool`](crate::Pool),
/// true everywhere else (Node's `isMainThread`).
pub fn is_main_thread() -> bool {
    !IN_WORKER.with(Cell::get)
}

/// Marks the calling thread as one of ours.
pub(crate) fn mark_worker_thread() {
    IN_WORKER.with(|w| w.set(true));
}

/// A worker's number, unique in the process (Node's `threadId`). The main
/// thread would be 0; workers count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThreadId(u64);

impl ThreadId {
    pub(crate) fn next() -> Self {
        Self(NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The number itself.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
