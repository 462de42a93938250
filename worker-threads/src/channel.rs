//! [`MessageChannel`]: a typed pair of ports, Node's `MessageChannel`.
//!
//! Each port sends one type and receives the other; the two ends can be moved
//! into different workers so that they talk without the parent. Messages move
//! by ownership — Rust's answer to Node's `transferList`: nothing is cloned or
//! serialised. Sending on a port whose peer is gone hands the value back in
//! crossbeam's [`SendError`].

use std::time::Duration;

use crossbeam_channel::{Receiver, SendError, Sender};

use crate::{CancelToken, RecvError};

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
    /// Fails, handing the message back, once the peer is closed.
    pub fn post_message(&self, msg: S) -> Result<(), SendError<S>> {
        self.tx.send(msg)
    }

    /// Waits for the next message. Fails with [`RecvError::Disconnected`] once
    /// the peer is closed and the queue is drained.
    pub fn recv(&self) -> Result<R, RecvError> {
        crate::wait::recv(&self.rx).map_err(|_| RecvError::Disconnected)
    }

    /// Waits for the next message, or until `token` is cancelled
    /// ([`RecvError::Terminated`]). A worker uses it with its context's token
    /// so that `terminate` wakes it.
    pub fn recv_or_cancel(&self, token: &CancelToken) -> Result<R, RecvError> {
        if token.is_cancelled() {
            return Err(RecvError::Terminated);
        }
        if let Some(got) = crate::wait::try_yielding(&self.rx) {
            return got.map_err(|_| RecvError::Disconnected);
        }
        crossbeam_channel::select! {
            recv(self.rx) -> msg => msg.map_err(|_| RecvError::Disconnected),
            recv(token.receiver()) -> _ => Err(RecvError::Terminated),
        }
    }

    /// Waits at most `timeout` for the next message.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R, RecvError> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Disconnected,
        })
    }

    /// Takes a message if one is ready.
    pub fn try_recv(&self) -> Result<R, RecvError> {
        self.rx.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => RecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => RecvError::Disconnected,
        })
    }

    /// The messages until the peer is closed.
    pub fn iter(&self) -> impl Iterator<Item = R> + '_ {
        self.rx.iter()
    }
}
