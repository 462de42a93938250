//! How every blocking receive of a message or an event in this crate waits
//! (with or without a timeout): a few `yield_now`s with a `try_recv` after
//! each, then crossbeam's own blocking wait; and how a receive or a send on a
//! [`MessagePort`](crate::MessagePort) also wakes when its thread's worker is
//! terminated or its task cancelled ([`recv_or_stop`], [`send_or_stop`]).
//!
//! Crossbeam's `recv` spins with `pause` instructions before it parks the
//! thread. When the two threads share one CPU that spin only burns the time
//! slice the peer needs to answer: a bare crossbeam ping-pong on one CPU
//! measured about 2 × a bare eventfd ping-pong. Yielding instead lets the
//! peer run at once; on two CPUs a yield returns quickly and costs about as
//! much as a short spin. Measured on the 2-vCPU machine, one CPU: 1.5 µs per
//! round trip against 2.5 µs for eventfd and 4.7 µs for bare crossbeam
//! (`benches/threads.rs`).
//!
//! Waits that are not receives of a message (a [`CancelToken`]'s own
//! `wait_timeout`, `Worker::terminate` waiting for the thread's end) block
//! at once: nothing is about to arrive there.

use std::time::Instant;

use crossbeam_channel::{
    Receiver, RecvTimeoutError, Select, SendError, Sender, TryRecvError, TrySendError,
};

use crate::{CancelToken, RecvError};

/// How many times a receive yields before it blocks.
const YIELDS: u32 = 3;

/// Receives like `rx.recv()`, yielding a few times before blocking.
pub(crate) fn recv<T>(rx: &Receiver<T>) -> Result<T, crossbeam_channel::RecvError> {
    match try_yielding(rx) {
        Some(got) => got,
        None => rx.recv(),
    }
}

/// Receives like `rx.recv_deadline(deadline)`, yielding a few times before
/// blocking.
pub(crate) fn recv_deadline<T>(rx: &Receiver<T>, deadline: Instant) -> Result<T, RecvTimeoutError> {
    match try_yielding(rx) {
        Some(got) => got.map_err(|_| RecvTimeoutError::Disconnected),
        None => rx.recv_deadline(deadline),
    }
}

/// Tries to receive, yielding between tries; `None` when still empty.
pub(crate) fn try_yielding<T>(rx: &Receiver<T>) -> Option<Result<T, crossbeam_channel::RecvError>> {
    for _ in 0..YIELDS {
        match rx.try_recv() {
            Ok(value) => return Some(Ok(value)),
            Err(TryRecvError::Disconnected) => return Some(Err(crossbeam_channel::RecvError)),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    match rx.try_recv() {
        Ok(value) => Some(Ok(value)),
        Err(TryRecvError::Disconnected) => Some(Err(crossbeam_channel::RecvError)),
        Err(TryRecvError::Empty) => None,
    }
}

/// Receives from `rx` (yielding first) until `deadline`, if any, and until
/// `token`, if any, is cancelled or past its own deadline
/// ([`RecvError::Terminated`], even with messages queued).
pub(crate) fn recv_or_stop<T>(
    rx: &Receiver<T>,
    token: Option<&CancelToken>,
    deadline: Option<Instant>,
) -> Result<T, RecvError> {
    if token.is_some_and(CancelToken::is_cancelled) {
        return Err(RecvError::Terminated);
    }
    if let Some(got) = try_yielding(rx) {
        return got.map_err(|_| RecvError::Disconnected);
    }
    let Some(token) = token else {
        return match deadline {
            None => rx.recv().map_err(|_| RecvError::Disconnected),
            Some(deadline) => rx.recv_deadline(deadline).map_err(|e| match e {
                RecvTimeoutError::Timeout => RecvError::Timeout,
                RecvTimeoutError::Disconnected => RecvError::Disconnected,
            }),
        };
    };
    let token_deadline = token.deadline().map(crossbeam_channel::at);
    let mut select = Select::new();
    let message = select.recv(rx);
    let stop = select.recv(token.receiver());
    let past = token_deadline.as_ref().map(|timer| select.recv(timer));
    let selected = match deadline {
        None => select.select(),
        Some(deadline) => match select.select_deadline(deadline) {
            Ok(selected) => selected,
            Err(_) => return Err(RecvError::Timeout),
        },
    };
    let index = selected.index();
    if index == message {
        selected.recv(rx).map_err(|_| RecvError::Disconnected)
    } else if index == stop {
        let _ = selected.recv(token.receiver());
        Err(RecvError::Terminated)
    } else {
        if let (Some(timer), Some(past)) = (&token_deadline, past)
            && index == past
        {
            let _ = selected.recv(timer);
        }
        Err(RecvError::Terminated)
    }
}

/// Sends `msg` on `tx`, waiting for room on a full bounded channel until
/// `token`, if any, is cancelled or past its deadline: the message is then
/// handed back, as when the peer is gone.
pub(crate) fn send_or_stop<T>(
    tx: &Sender<T>,
    msg: T,
    token: Option<&CancelToken>,
) -> Result<(), SendError<T>> {
    let msg = match tx.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Disconnected(msg)) => return Err(SendError(msg)),
        Err(TrySendError::Full(msg)) => msg,
    };
    let Some(token) = token else {
        return tx.send(msg);
    };
    if token.is_cancelled() {
        return Err(SendError(msg));
    }
    let token_deadline = token.deadline().map(crossbeam_channel::at);
    let mut select = Select::new();
    let send = select.send(tx);
    let stop = select.recv(token.receiver());
    let past = token_deadline.as_ref().map(|timer| select.recv(timer));
    let selected = select.select();
    let index = selected.index();
    if index == send {
        selected.send(tx, msg)
    } else {
        if index == stop {
            let _ = selected.recv(token.receiver());
        } else if let (Some(timer), Some(past)) = (&token_deadline, past)
            && index == past
        {
            let _ = selected.recv(timer);
        }
        Err(SendError(msg))
    }
}

#[cfg(test)]
mod tests;
