//! [`Worker`]: a thread running an entry function, seen by its parent as a
//! stream of [`Event`]s (Node's `new Worker(...)` and its `online`, `message`,
//! `error` and `exit` events).
//!
//! The worker data and the entry function move to the new thread, so they
//! must be `Send`:
//!
//! ```compile_fail
//! use worker_threads::Worker;
//! let data = std::rc::Rc::new(1);
//! let _ = Worker::<(), ()>::spawn(data, |_| ()); // Rc is not Send
//! ```
//!
//! # Caveats
//! - Terminating is cooperative: Rust cannot kill a thread. `terminate` cancels
//!   the worker's [`CancelToken`] and closes its port, so a worker blocked in
//!   [`ParentPort::recv`], or in a [`MessagePort`](crate::MessagePort)'s
//!   `recv` or `post_message` (waiting for room on a full bounded channel),
//!   wakes at once; a worker busy computing must poll
//!   [`WorkerContext::is_terminated`]. `terminate` says so when the worker
//!   did not exit by its deadline.
//! - A panic in the `Drop` of the worker's data, or of a message it never
//!   read, is caught too: [`WorkerFailure::DropPanicked`], then exit code 1.
//! - A panic in a worker is caught and reported as [`Event::Error`], but the
//!   process's panic hook still runs first (by default it prints the panic on
//!   stderr). This library does not replace the global hook; do it in your
//!   program if the output is unwanted.
//! - Dropping a [`Worker`] terminates it and detaches the thread without
//!   waiting.

mod context;
mod events;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender};

use self::context::ExitRequest;
pub use self::context::{IntoExitCode, ParentPort, WorkerContext};
use self::events::{Control, EventStream, Wait};
use crate::panic_message::{drop_caught, panic_message};
use crate::{CancelToken, Error, RecvError, ThreadId, identity};

/// One thing that happened to a worker, in the order it happened: `Online`
/// first, then any `Message`s, then at most one `Error`, and `Exit` last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<Out> {
    /// The worker's thread started and is about to run the entry function.
    Online,
    /// The worker posted a message on its parent port.
    Message(Out),
    /// The worker panicked, or its entry function returned an error.
    Error(WorkerFailure),
    /// The worker's thread is done: 0 after a normal return, 1 after a panic,
    /// an error or a terminate, or the code the worker chose.
    Exit(i32),
}

/// How a worker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerFailure {
    /// The entry function panicked.
    #[error("worker panicked: {message}")]
    Panicked {
        /// The panic's message (from a `&str` or `String` payload).
        message: String,
    },
    /// The entry function returned `Err`.
    #[error("worker failed: {message}")]
    Returned {
        /// The error's `Display`.
        message: String,
    },
    /// The entry function ended well, but dropping the worker's data (or a
    /// message the parent sent that it never read) panicked; the panic was
    /// caught, and the worker exits with code 1.
    #[error("worker's data panicked when dropped: {message}")]
    DropPanicked {
        /// The panic's message.
        message: String,
    },
}

impl WorkerFailure {
    /// The message of the panic or error.
    pub fn message(&self) -> &str {
        match self {
            Self::Panicked { message }
            | Self::Returned { message }
            | Self::DropPanicked { message } => message,
        }
    }
}

/// How to start a worker; each setter says its default.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl WorkerOptions {
    /// Default options: an unnamed thread with the platform's stack size.
    pub fn new() -> Self {
        Self::default()
    }

    /// The thread's name (Node's `name`). Default: none.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The thread's stack size in bytes (Node's `resourceLimits.stackSizeMb`).
    /// Default: Rust's (2 MiB, or `RUST_MIN_STACK`).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }
}

/// The parent's handle on a worker thread: sends it `In` messages, receives
/// its [`Event`]s with `Out` messages.
#[derive(Debug)]
pub struct Worker<In, Out> {
    id: ThreadId,
    to_worker: Option<Sender<In>>,
    events: EventStream<Out>,
    /// A receiver of the worker's own port, never read: the worker's is then
    /// never the last, so crossbeam never discards a message there (see
    /// `run_worker`).
    _unread: Receiver<In>,
    done: Receiver<i32>,
    exit_code: Option<i32>,
    cancel: CancelToken,
    thread: Option<JoinHandle<()>>,
}

impl<In, Out> Worker<In, Out>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    /// Starts a worker running `entry` with `data` (Node's `workerData`).
    pub fn spawn<D, F, R>(data: D, entry: F) -> Result<Self, Error>
    where
        D: Send + 'static,
        F: FnOnce(&mut WorkerContext<D, In, Out>) -> R + Send + 'static,
        R: IntoExitCode,
    {
        Self::spawn_with(WorkerOptions::default(), data, entry)
    }

    /// Starts a worker with `options`.
    pub fn spawn_with<D, F, R>(options: WorkerOptions, data: D, entry: F) -> Result<Self, Error>
    where
        D: Send + 'static,
        F: FnOnce(&mut WorkerContext<D, In, Out>) -> R + Send + 'static,
        R: IntoExitCode,
    {
        let id = ThreadId::next();
        let (to_worker, from_parent) = crossbeam_channel::unbounded();
        let unread = from_parent.clone();
        let (control_tx, control) = crossbeam_channel::unbounded();
        let (message_tx, messages) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let cancel = CancelToken::new();
        let ctx = WorkerContext {
            data,
            port: ParentPort {
                tx: message_tx,
                rx: from_parent,
                cancel: cancel.clone(),
            },
            id,
        };
        let mut builder = std::thread::Builder::new();
        if let Some(name) = &options.name {
            builder = builder.name(name.clone());
        }
        if let Some(bytes) = options.stack_size {
            builder = builder.stack_size(bytes);
        }
        let thread = builder
            .spawn(move || run_worker(ctx, entry, &control_tx, &done_tx))
            .map_err(|source| Error::Spawn {
                name: options.name,
                source,
            })?;
        Ok(Self {
            id,
            to_worker: Some(to_worker),
            events: EventStream::new(control, messages),
            _unread: unread,
            done,
            exit_code: None,
            cancel,
            thread: Some(thread),
        })
    }
}

fn run_worker<D, In, Out, F, R>(
    mut ctx: WorkerContext<D, In, Out>,
    entry: F,
    control: &Sender<Control>,
    done: &Sender<i32>,
) where
    F: FnOnce(&mut WorkerContext<D, In, Out>) -> R,
    R: IntoExitCode,
{
    identity::mark_worker_thread();
    let cancel = ctx.port.cancel.clone();
    let _current = crate::cancel::enter(&cancel);
    let _ = control.send(Control::Online);
    let outcome = catch_unwind(AssertUnwindSafe(|| entry(&mut ctx).into_exit_code()));
    let (mut failure, mut code) = match outcome {
        Ok(Ok(code)) => (None, code),
        Ok(Err(message)) => (Some(WorkerFailure::Returned { message }), 1),
        Err(payload) => match payload.downcast_ref::<ExitRequest>() {
            Some(ExitRequest(code)) => {
                let code = *code;
                drop_caught(payload);
                (None, code)
            }
            None => {
                let message = panic_message(&*payload);
                drop_caught(payload);
                (Some(WorkerFailure::Panicked { message }), 1)
            }
        },
    };
    // The user's values are dropped here, a panic of their `Drop` caught, so
    // that the events tell how the worker ended: its data, and the messages
    // the parent sent that it never read (they go with the receiver).
    let WorkerContext { data, port, .. } = ctx;
    let ParentPort { tx, rx, .. } = port;
    // One at a time: a second panic while the first unwinds would abort. The
    // unread messages are taken out and dropped here, never by crossbeam
    // (whose channel must not see a panic while it discards them); the
    // parent keeps a receiver, so dropping ours discards nothing, and any
    // message posted meanwhile is dropped with the parent's handle.
    let mut dropped = vec![catch_unwind(AssertUnwindSafe(move || drop(data)))];
    for _ in 0..rx.len() {
        match rx.try_recv() {
            Ok(msg) => dropped.push(catch_unwind(AssertUnwindSafe(move || drop(msg)))),
            Err(_) => break,
        }
    }
    drop(rx);
    for payload in dropped.into_iter().filter_map(Result::err) {
        let message = panic_message(&*payload);
        drop_caught(payload);
        if failure.is_none() {
            failure = Some(WorkerFailure::DropPanicked { message });
            code = 1;
        }
    }
    let code = if cancel.is_cancelled() { 1 } else { code };
    if let Some(failure) = failure {
        let _ = control.send(Control::Error(failure));
    }
    let _ = control.send(Control::Exit(code));
    // Dropping the message sender only now disconnects the parent's message
    // channel, after the control events above.
    drop(tx);
    let _ = done.send(code);
}

impl<In, Out> Worker<In, Out> {
    /// This worker's id (Node's `worker.threadId`).
    pub fn worker_id(&self) -> ThreadId {
        self.id
    }

    /// Sends a message to the worker (Node's `worker.postMessage`). Fails,
    /// handing the message back, once the worker was terminated or has
    /// returned.
    pub fn post_message(&self, msg: In) -> Result<(), SendError<In>> {
        if self.exit_code.is_some() || !self.done.is_empty() {
            return Err(SendError(msg));
        }
        match &self.to_worker {
            Some(tx) => tx.send(msg),
            None => Err(SendError(msg)),
        }
    }

    /// Waits for the worker's next event. Fails with
    /// [`RecvError::Disconnected`] after the `Exit` event was received.
    pub fn recv_event(&self) -> Result<Event<Out>, RecvError> {
        self.events.next(Wait::Block)
    }

    /// Waits at most `timeout` for the worker's next event.
    pub fn recv_event_timeout(&self, timeout: Duration) -> Result<Event<Out>, RecvError> {
        self.events.next(Wait::Until(Instant::now() + timeout))
    }

    /// Takes the worker's next event if one is ready.
    pub fn try_recv_event(&self) -> Result<Event<Out>, RecvError> {
        self.events.next(Wait::Try)
    }

    /// The worker's events, blocking for each, up to and including `Exit`.
    pub fn events(&self) -> impl Iterator<Item = Event<Out>> + '_ {
        let mut exited = false;
        std::iter::from_fn(move || {
            if exited {
                return None;
            }
            let event = self.events.next(Wait::Block).ok()?;
            exited = matches!(event, Event::Exit(_));
            Some(event)
        })
    }

    /// Asks the worker to stop and waits at most `wait` for its thread to
    /// exit. Returns the exit code (1, unless the worker had already exited
    /// with another), or [`Error::StillRunning`] if the worker ignores its
    /// cancellation signal; the handle then stays usable.
    pub fn terminate(&mut self, wait: Duration) -> Result<i32, Error> {
        self.cancel.cancel();
        self.to_worker = None;
        self.wait_exit(Some(wait))
    }

    /// Waits, without a deadline, for the worker to exit on its own, and
    /// returns its exit code.
    ///
    /// The worker's port is closed first, so a worker that reads its parent
    /// port until it closes finishes.
    pub fn join(mut self) -> i32 {
        self.to_worker = None;
        // Without a deadline, the wait ends only when the thread exits.
        self.wait_exit(None).unwrap_or(1)
    }

    fn wait_exit(&mut self, wait: Option<Duration>) -> Result<i32, Error> {
        if let Some(code) = self.exit_code {
            return Ok(code);
        }
        let started = Instant::now();
        let got = match wait {
            Some(wait) => self.done.recv_timeout(wait).map_err(|e| e.is_timeout()),
            None => self.done.recv().map_err(|_| false),
        };
        let code = match got {
            Ok(code) => code,
            Err(true) => {
                return Err(Error::StillRunning {
                    worker_id: self.id,
                    waited: started.elapsed(),
                });
            }
            // The thread ended without reporting: it can only have been
            // unwound past our catch, which counts as a failure.
            Err(false) => 1,
        };
        if let Some(thread) = self.thread.take() {
            // The entry function has returned: this waits only for the
            // thread's own teardown.
            let _ = thread.join();
        }
        self.exit_code = Some(code);
        Ok(code)
    }
}

impl<In, Out> Drop for Worker<In, Out> {
    fn drop(&mut self) {
        if self.exit_code.is_none() {
            self.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests;
