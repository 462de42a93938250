//! The crate's errors: one enum per kind of operation, each `#[non_exhaustive]`.
//!
//! Sending never has its own error type here: a send on a closed port returns
//! crossbeam's [`SendError<T>`](crate::SendError), which hands the value back.

use std::time::Duration;

use crate::ThreadId;

/// Starting a worker or a pool, or stopping a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OS refused to start the worker's thread.
    #[error("could not start worker thread (name {name:?})")]
    Spawn {
        /// The thread name that was asked for, if any.
        name: Option<String>,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The pool's threads could not be started.
    #[error("could not start the pool's threads")]
    PoolBuild {
        /// What rayon said.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// `terminate` waited its deadline and the worker has not exited: it does
    /// not observe its cancellation signal. The worker is still attached and
    /// `terminate` or `join` may be called again.
    #[error("worker {worker_id} still running {waited:?} after terminate")]
    StillRunning {
        /// The worker that did not exit.
        worker_id: ThreadId,
        /// How long `terminate` waited.
        waited: Duration,
    },
}

/// A blocking receive that returned without a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Every sender of the port is gone: nothing will ever arrive.
    #[error("port disconnected")]
    Disconnected,
    /// The receiving worker was terminated, or the receiving pool task
    /// cancelled (or past its timeout).
    #[error("worker terminated")]
    Terminated,
    /// The timeout passed with no message.
    #[error("receive timed out")]
    Timeout,
    /// A `try_recv` found no message.
    #[error("no message ready")]
    Empty,
}

/// Why a pool task produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the pool thread that ran it lives on.
    #[error("task panicked: {message}")]
    Panicked {
        /// The panic's message, when its payload was a `&str` or a `String`.
        message: String,
    },
    /// The task was cancelled (through its handle, or by dropping the handle)
    /// before it produced its value: while it waited for room, queued, or
    /// running.
    #[error("task cancelled")]
    Cancelled,
    /// The task ran past its timeout.
    #[error("task timed out after {timeout:?}")]
    TimedOut {
        /// The timeout the task was given.
        timeout: Duration,
    },
    /// The pool was shut down before the task ran (queued, or waiting for
    /// room in the queue).
    #[error("pool shut down")]
    ShutDown,
}

/// `try_run` could not queue the task; the task is handed back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum TryRunError<F> {
    /// The queue is at its cap.
    #[error("pool queue full")]
    Full(F),
    /// The pool is shut down.
    #[error("pool shut down")]
    ShutDown(F),
}

impl<F> TryRunError<F> {
    /// The task that was not queued.
    pub fn into_task(self) -> F {
        match self {
            Self::Full(f) | Self::ShutDown(f) => f,
        }
    }
}

impl<F> std::fmt::Debug for TryRunError<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::ShutDown(_) => f.write_str("ShutDown(..)"),
        }
    }
}
