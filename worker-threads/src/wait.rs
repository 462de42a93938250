//! How every blocking receive of this crate waits: a few `yield_now`s with a
//! `try_recv` after each, then crossbeam's own blocking `recv`.
//!
//! Crossbeam's `recv` spins with `pause` instructions before it parks the
//! thread. When the two threads share one CPU that spin only burns the time
//! slice the peer needs to answer: a bare crossbeam ping-pong on one CPU
//! measured about 2 × a bare eventfd ping-pong. Yielding instead lets the
//! peer run at once; on two CPUs a yield returns quickly and costs about as
//! much as a short spin. Measured on the 2-vCPU machine, one CPU: 1.5 µs per
//! round trip against 2.5 µs for eventfd and 4.7 µs for bare crossbeam
//! (`benches/threads.rs`).

use crossbeam_channel::{Receiver, RecvError, TryRecvError};

/// How many times a receive yields before it blocks.
const YIELDS: u32 = 3;

/// Receives like `rx.recv()`, yielding a few times before blocking.
pub(crate) fn recv<T>(rx: &Receiver<T>) -> Result<T, RecvError> {
    match try_yielding(rx) {
        Some(got) => got,
        None => rx.recv(),
    }
}

/// Tries to receive, yielding between tries; `None` when still empty.
pub(crate) fn try_yielding<T>(rx: &Receiver<T>) -> Option<Result<T, RecvError>> {
    for _ in 0..YIELDS {
        match rx.try_recv() {
            Ok(value) => return Some(Ok(value)),
            Err(TryRecvError::Disconnected) => return Some(Err(RecvError)),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    match rx.try_recv() {
        Ok(value) => Some(Ok(value)),
        Err(TryRecvError::Disconnected) => Some(Err(RecvError)),
        Err(TryRecvError::Empty) => None,
    }
}

#[cfg(test)]
mod tests;
