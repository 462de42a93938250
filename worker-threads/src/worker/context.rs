//! What a worker sees from inside: [`WorkerContext`], [`ParentPort`], and how
//! its entry function's return value becomes an exit code ([`IntoExitCode`]).

use std::fmt::Display;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender};

use crate::{CancelToken, MessagePort, RecvError, ThreadId};

/// The worker's side of its link with the parent: Node's `parentPort`.
///
/// It is only ever lent to the entry function, so every message it posts is
/// seen by the parent before the worker's `Exit` event.
#[derive(Debug)]
pub struct ParentPort<In, Out> {
    pub(super) tx: Sender<Out>,
    pub(super) rx: Receiver<In>,
    pub(super) cancel: CancelToken,
}

impl<In, Out> ParentPort<In, Out> {
    /// Sends a message to the parent, which sees it as [`Event::Message`](crate::Event::Message).
    /// Fails, handing the message back, once the parent dropped its handle.
    pub fn post_message(&self, msg: Out) -> Result<(), SendError<Out>> {
        self.tx.send(msg)
    }

    /// Waits for the parent's next message. Fails with
    /// [`RecvError::Terminated`] as soon as the parent called `terminate`
    /// (even if messages are still queued), and with
    /// [`RecvError::Disconnected`] once the parent dropped its handle.
    pub fn recv(&self) -> Result<In, RecvError> {
        if self.cancel.is_cancelled() {
            return Err(RecvError::Terminated);
        }
        // `terminate` cancels the token, then drops the parent's sender, so a
        // blocked receive wakes as disconnected and reads the token.
        crate::wait::recv(&self.rx).map_err(|_| self.closed_reason())
    }

    /// Waits at most `timeout` for the parent's next message.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<In, RecvError> {
        if self.cancel.is_cancelled() {
            return Err(RecvError::Terminated);
        }
        crate::wait::recv_deadline(&self.rx, Instant::now() + timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => self.closed_reason(),
        })
    }

    /// Takes the parent's next message if one is ready.
    pub fn try_recv(&self) -> Result<In, RecvError> {
        if self.cancel.is_cancelled() {
            return Err(RecvError::Terminated);
        }
        self.rx.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => RecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => self.closed_reason(),
        })
    }

    fn closed_reason(&self) -> RecvError {
        if self.cancel.is_cancelled() {
            RecvError::Terminated
        } else {
            RecvError::Disconnected
        }
    }
}

/// Everything a worker's entry function is given: its data, its parent port,
/// its id, and its cancellation signal.
#[derive(Debug)]
pub struct WorkerContext<D, In, Out> {
    pub(super) data: D,
    pub(super) port: ParentPort<In, Out>,
    pub(super) id: ThreadId,
}

/// The payload `WorkerContext::exit` unwinds with.
pub(super) struct ExitRequest(pub(super) i32);

impl<D, In, Out> WorkerContext<D, In, Out> {
    /// The data the worker was spawned with (Node's `workerData`).
    pub fn worker_data(&self) -> &D {
        &self.data
    }

    /// The data, mutably (e.g. to `Option::take` an owned part).
    pub fn worker_data_mut(&mut self) -> &mut D {
        &mut self.data
    }

    /// The link with the parent (Node's `parentPort`).
    pub fn parent_port(&self) -> &ParentPort<In, Out> {
        &self.port
    }

    /// This worker's id (Node's `threadId`).
    pub fn worker_id(&self) -> ThreadId {
        self.id
    }

    /// Whether the parent called `terminate` (or dropped the handle): the
    /// worker should return soon. Long computations poll this.
    pub fn is_terminated(&self) -> bool {
        self.port.cancel.is_cancelled()
    }

    /// The cancellation signal itself, e.g. to wait on it in a `select!`.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.port.cancel
    }

    /// Receives on another port (say, one end of a [`MessageChannel`](crate::MessageChannel)),
    /// waking with [`RecvError::Terminated`] when the worker is terminated;
    /// on the worker's own thread, the same as `port.recv()`.
    pub fn recv_on<S, R>(&self, port: &MessagePort<S, R>) -> Result<R, RecvError> {
        port.recv_or_cancel(&self.port.cancel)
    }

    /// Ends the worker now with `code` (Node's `process.exit(code)` inside a
    /// worker). It unwinds the worker's stack, running destructors, without
    /// calling the panic hook; code that catches unwinds between here and the
    /// entry function would swallow it.
    pub fn exit(&self, code: i32) -> ! {
        std::panic::resume_unwind(Box::new(ExitRequest(code)))
    }
}

/// What a worker's entry function may return, and the exit code it stands for.
///
/// `()` is 0; an `i32` is itself; `Ok(x)` is `x`'s code; `Err(e)` becomes an
/// [`Event::Error`](crate::Event::Error) with `e`'s message, then exit code 1.
pub trait IntoExitCode {
    /// The exit code, or the message of the error the worker ended with.
    fn into_exit_code(self) -> Result<i32, String>;
}

impl IntoExitCode for () {
    fn into_exit_code(self) -> Result<i32, String> {
        Ok(0)
    }
}

impl IntoExitCode for i32 {
    fn into_exit_code(self) -> Result<i32, String> {
        Ok(self)
    }
}

impl<T: IntoExitCode, E: Display> IntoExitCode for Result<T, E> {
    fn into_exit_code(self) -> Result<i32, String> {
        match self {
            Ok(t) => t.into_exit_code(),
            Err(e) => Err(e.to_string()),
        }
    }
}
