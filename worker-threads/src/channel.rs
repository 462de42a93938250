//! [`MessageChannel`]: a typed pair of ports, Node's `MessageChannel`.
//!
//! Each port sends one type and receives the other; the two ends can be moved
//! into different workers so that they talk without the parent. Messages move
//! by ownership — Rust's answer to Node's `transferList`: nothing is cloned or
//! serialised. Sending on a port whose peer is gone hands the value back in
//! crossbeam's [`SendError`].
//!
//! On a worker's thread or in a pool task, a port's blocking calls also
//! wake when the worker is terminated or the task cancelled (the thread's
//! current [`CancelToken`]): a receive fails with [`RecvError::Terminated`],
//! a send waiting for room on a full bounded channel hands its value back.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender, TrySendError};

use crate::wait::{recv_or_stop, send_or_stop};
use crate::{CancelToken, RecvError, cancel};

/// A typed pair of connected ports: what `port1` sends, `port2` receives, and
/// the other way round.
#[derive(Debug)]
pub struct MessageChannel<A, B = A> {
    /// Sends `A`, receives `B`.
    pub port1: MessagePort<A, B>,
    /// Sends `B`, receives `A`.
    pub port2: MessagePort<B, A>,
}

impl<A, B> MessageChannel<A, B> {
    /// A pair with unbounded queues both ways (Node's behaviour).
    pub fn new() -> Self {
        let (tx_a, rx_a) = crossbeam_channel::unbounded();
        let (tx_b, rx_b) = crossbeam_channel::unbounded();
        Self::from_parts(tx_a, rx_a, tx_b, rx_b)
    }

    /// A pair whose queues hold at most `cap` messages each way: a send on a
    /// full queue blocks until the peer receives (backpressure). `cap` 0 makes
    /// every send a rendezvous.
    pub fn bounded(cap: usize) -> Self {
        let (tx_a, rx_a) = crossbeam_channel::bounded(cap);
        let (tx_b, rx_b) = crossbeam_channel::bounded(cap);
        Self::from_parts(tx_a, rx_a, tx_b, rx_b)
    }

    fn from_parts(tx_a: Sender<A>, rx_a: Receiver<A>, tx_b: Sender<B>, rx_b: Receiver<B>) -> Self {
        Self {
            port1: MessagePort { tx: tx_a, rx: rx_b },
            port2: MessagePort { tx: tx_b, rx: rx_a },
        }
    }

    /// The two ports.
    pub fn into_ports(self) -> (MessagePort<A, B>, MessagePort<B, A>) {
        (self.port1, self.port2)
    }
}

impl<A, B> Default for MessageChannel<A, B> {
    fn default() -> Self {
        Self::new()
    }
}

/// One end of a [`MessageChannel`]: sends `S`, receives `R`. Dropping it
/// closes it (Node's `port.close()`).
#[derive(Debug)]
pub struct MessagePort<S, R = S> {
    tx: Sender<S>,
    rx: Receiver<R>,
}

impl<S, R> MessagePort<S, R> {
    /// Sends a message to the peer port; blocks only on a full bounded queue.
    /// Fails, handing the message back, once the peer is closed, or, on a
    /// worker's thread or in a pool task, when the worker is terminated or
    /// the task cancelled while the send waits for room.
    pub fn post_message(&self, msg: S) -> Result<(), SendError<S>> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(msg)) => Err(SendError(msg)),
            Err(TrySendError::Full(msg)) => send_or_stop(&self.tx, msg, cancel::current().as_ref()),
        }
    }

    /// Waits for the next message. Fails with [`RecvError::Disconnected`] once
    /// the peer is closed and the queue is drained, and, on a worker's thread
    /// or in a pool task, with [`RecvError::Terminated`] once the worker is
    /// terminated or the task cancelled.
    pub fn recv(&self) -> Result<R, RecvError> {
        recv_or_stop(&self.rx, cancel::current().as_ref(), None)
    }

    /// Waits for the next message, or until `token` is cancelled
    /// ([`RecvError::Terminated`]), from any thread.
    pub fn recv_or_cancel(&self, token: &CancelToken) -> Result<R, RecvError> {
        recv_or_stop(&self.rx, Some(token), None)
    }

    /// Waits at most `timeout` for the next message ([`RecvError::Timeout`]);
    /// wakes as [`recv`](Self::recv) does.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R, RecvError> {
        recv_or_stop(
            &self.rx,
            cancel::current().as_ref(),
            Some(Instant::now() + timeout),
        )
    }

    /// Takes a message if one is ready.
    pub fn try_recv(&self) -> Result<R, RecvError> {
        self.rx.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => RecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => RecvError::Disconnected,
        })
    }

    /// The messages until the peer is closed (or, on a worker's thread or in
    /// a pool task, until the worker is terminated or the task cancelled).
    pub fn iter(&self) -> impl Iterator<Item = R> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }
}
