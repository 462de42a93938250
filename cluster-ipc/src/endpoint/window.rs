//! Flow control of user messages: the receiving side's window and the
//! credits that give it back.
//!
//! Each end announces its receive window in its handshake. A sender may
//! start a user frame while what it sent and has not had granted back is
//! under the peer's window (so at most the window plus one frame is ever
//! outstanding); the receiver grants bytes back with a window-update frame
//! as the program consumes messages, in batches of a quarter window. Control
//! frames (hand-offs, acknowledgements, heartbeats, disconnects, window
//! updates) take no credit and leave before queued user frames: a program
//! that reads its messages late, or never, slows its peer's messages and
//! nothing else. HTTP/2's `WINDOW_UPDATE` is the same idea.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use std::os::fd::AsFd;

use super::Shared;

/// The receiving side's account of grants, shared by its [`Receiver`]
/// (`super::Receiver`) and every [`Credit`] it handed out.
pub(super) struct Grants {
    /// Bytes granted back to the peer so far (counted when decided, before
    /// the update is on the socket: the check against the window is never
    /// stricter than what the peer knows).
    granted: AtomicU64,
    /// Bytes released by dropped [`Credit`]s and not yet granted.
    pending: AtomicU64,
    /// A grant goes out once this many bytes are pending.
    threshold: u64,
    /// The window this end announced.
    window: u64,
    /// This endpoint's socket and send queue, where window updates go
    /// (weak: a [`Credit`] held after the endpoint is dropped keeps no
    /// descriptor open).
    shared: Weak<Shared>,
}

impl Grants {
    pub(super) fn new(window: u32, shared: Weak<Shared>) -> Self {
        let window = u64::from(window.max(1));
        Grants {
            granted: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            threshold: (window / 4).max(1),
            window,
            shared,
        }
    }

    /// The window this end announced.
    pub(super) fn window(&self) -> u64 {
        self.window
    }

    /// Bytes granted so far.
    pub(super) fn granted(&self) -> u64 {
        self.granted.load(Ordering::Acquire)
    }

    /// The batch size of grants.
    pub(super) fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Grants `bytes` to the peer now (a window update on the control
    /// lane; nothing if this end no longer sends).
    pub(super) fn grant(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.granted.fetch_add(bytes, Ordering::AcqRel);
        if let Some(shared) = self.shared.upgrade() {
            shared
                .queue
                .push_window_update(bytes, shared.fd.get_ref().as_fd());
        }
    }

    /// Releases `bytes` of consumed messages from any thread; grants once
    /// a batch is pending.
    fn release(&self, bytes: u64) {
        let pending = self.pending.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if pending >= self.threshold {
            let take = self.pending.swap(0, Ordering::AcqRel);
            self.grant(take);
        }
    }
}

/// The room one received user message takes in its receiver's window,
/// given back when this value is dropped: hold it for as long as the
/// message waits for the program (in a queue of events, say), so a program
/// that does not consume messages makes its peer wait, and nothing more.
///
/// A message returned decoded by [`Receiver::recv`](super::Receiver::recv)
/// has been consumed already: it comes without one.
#[must_use = "dropping a credit consumes its message's room at once"]
pub struct Credit {
    grants: Option<Arc<Grants>>,
    bytes: u64,
}

impl Credit {
    pub(super) fn new(grants: Arc<Grants>, bytes: u64) -> Self {
        Credit {
            grants: Some(grants),
            bytes,
        }
    }

    /// A credit that gives nothing back (for a message that took none).
    pub fn none() -> Self {
        Credit {
            grants: None,
            bytes: 0,
        }
    }

    /// The bytes of window this credit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::fmt::Debug for Credit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credit")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        if let Some(grants) = self.grants.take() {
            grants.release(self.bytes);
        }
    }
}
