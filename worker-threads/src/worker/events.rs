//! The parent's side of a worker's events: two channels read in order.
//!
//! Messages travel alone on their own channel, as bare `Out` values, so a
//! message costs no more than the value itself (a `u64` channel moves ~25%
//! more per second than one of 16-byte enums). The rare life-cycle events
//! (online, error, exit) travel on a second channel. Order is kept by the
//! protocol: the worker sends `Online` on the control channel before any
//! message; at the end it sends `Error`/`Exit` there and only then drops the
//! message sender. So the parent reads `Online` first, then messages until
//! the message channel disconnects, then the rest of the control channel.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::{Event, WorkerFailure};
use crate::RecvError;

/// A life-cycle event, on the control channel.
#[derive(Debug)]
pub(super) enum Control {
    Online,
    Error(WorkerFailure),
    Exit(i32),
}

/// How long a receive may wait.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wait {
    Block,
    Until(Instant),
    Try,
}

const BEFORE_ONLINE: u8 = 0;
const MESSAGES: u8 = 1;
const ENDING: u8 = 2;
const DONE: u8 = 3;

/// The two receivers and where the reader is in the protocol.
#[derive(Debug)]
pub(super) struct EventStream<Out> {
    control: Receiver<Control>,
    messages: Receiver<Out>,
    phase: AtomicU8,
}

impl<Out> EventStream<Out> {
    pub(super) fn new(control: Receiver<Control>, messages: Receiver<Out>) -> Self {
        Self {
            control,
            messages,
            phase: AtomicU8::new(BEFORE_ONLINE),
        }
    }

    /// The next event, in protocol order. Meant for one reader at a time;
    /// concurrent readers stay memory-safe but may see the phases race.
    pub(super) fn next(&self, wait: Wait) -> Result<Event<Out>, RecvError> {
        loop {
            match self.phase.load(Ordering::Acquire) {
                BEFORE_ONLINE => {
                    let event = self.control_event(wait)?;
                    self.phase.store(MESSAGES, Ordering::Release);
                    return Ok(event);
                }
                MESSAGES => match recv_from(&self.messages, wait) {
                    Ok(msg) => return Ok(Event::Message(msg)),
                    Err(RecvError::Disconnected) => self.phase.store(ENDING, Ordering::Release),
                    Err(other) => return Err(other),
                },
                ENDING => {
                    let event = self.control_event(wait)?;
                    if matches!(event, Event::Exit(_)) {
                        self.phase.store(DONE, Ordering::Release);
                    }
                    return Ok(event);
                }
                _ => return Err(RecvError::Disconnected),
            }
        }
    }

    fn control_event(&self, wait: Wait) -> Result<Event<Out>, RecvError> {
        Ok(match recv_from(&self.control, wait)? {
            Control::Online => Event::Online,
            Control::Error(failure) => Event::Error(failure),
            Control::Exit(code) => Event::Exit(code),
        })
    }
}

fn recv_from<T>(rx: &Receiver<T>, wait: Wait) -> Result<T, RecvError> {
    match wait {
        Wait::Block => crate::wait::recv(rx).map_err(|_| RecvError::Disconnected),
        Wait::Until(deadline) => crate::wait::recv_deadline(rx, deadline).map_err(|e| match e {
            RecvTimeoutError::Timeout => RecvError::Timeout,
            RecvTimeoutError::Disconnected => RecvError::Disconnected,
        }),
        Wait::Try => rx.try_recv().map_err(|e| match e {
            TryRecvError::Empty => RecvError::Empty,
            TryRecvError::Disconnected => RecvError::Disconnected,
        }),
    }
}
