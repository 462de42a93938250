//! The writer task of a [`Sender`](super::Sender): it takes the whole queue
//! at once and writes it in as few `sendmsg` calls as it can, registering
//! the socket for writability only while it is full.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{CloseReason, Queue, Shared};
use crate::frame::next_send;
use crate::sys::{self, Wait};

/// A batch buffer up to this size is reused for the next batch.
const RETAINED_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Closes the queue when the writer task ends without having closed it:
/// when its runtime shuts down (the task is dropped mid-await), the senders
/// then get [`Error::Closed`](crate::Error::Closed) instead of waiting
/// forever for room or a flush that nobody will make.
struct CloseOnExit(Arc<Queue>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        if st.closed.is_none() {
            st.closed = Some(CloseReason::WriterStopped);
            st.writing = false;
            st.clear();
        }
        drop(st);
        self.0.space_ready.notify_waiters();
    }
}

/// The writer task: takes the whole queue at once and writes it.
pub(super) async fn writer(shared: Arc<Shared>, write_fd: OwnedFd, queue: Arc<Queue>) {
    let _close_on_exit = CloseOnExit(Arc::clone(&queue));
    let mut write_fd = Some(write_fd);
    let mut batch: Vec<u8> = Vec::new();
    let mut batch_fds: Vec<(usize, OwnedFd)> = Vec::new();
    // Control frames taken with the batch, written before it (kept apart:
    // a large batch of user frames is never copied behind them).
    let mut control: Vec<u8> = Vec::new();
    let mut control_fds: Vec<(usize, OwnedFd)> = Vec::new();
    loop {
        let wake = queue.data_ready.notified();
        {
            let mut st = queue.lock();
            if st.closed.is_some() {
                return;
            }
            if st.is_empty() {
                st.writing = false;
                if st.senders_gone {
                    drop(st);
                    queue.space_ready.notify_waiters();
                    // The peer sees the end of the stream; a failure here
                    // means it is already gone, which it will notice anyway.
                    let _ = sys::shutdown_write(shared.fd.get_ref().as_fd());
                    return;
                }
            } else {
                // Control first, then the user frames queued so far: a
                // control frame never waits behind them.
                let st = &mut *st;
                std::mem::swap(&mut st.control, &mut control);
                std::mem::swap(&mut st.control_fds, &mut control_fds);
                std::mem::swap(&mut st.bytes, &mut batch);
                std::mem::swap(&mut st.fds, &mut batch_fds);
                st.writing = true;
            }
        }
        queue.wake_waiters();
        if batch.is_empty() && control.is_empty() {
            wake.await;
            continue;
        }
        let mut result = Ok(());
        if !control.is_empty() {
            result = write_batch(&mut write_fd, &control, &control_fds).await;
            control.clear();
            control_fds.clear();
        }
        if result.is_ok() && !batch.is_empty() {
            result = write_batch(&mut write_fd, &batch, &batch_fds).await;
        }
        batch.clear();
        batch_fds.clear();
        if batch.capacity() > (4 * queue.limit).max(RETAINED_BATCH_BYTES) {
            // Keep the memory of ordinary batches (and of messages up to a
            // few MiB); give back what one huge message grew.
            batch = Vec::new();
        }
        if let Err(e) = result {
            let reason = CloseReason::from_write_error(&e);
            let mut st = queue.lock();
            st.closed = Some(reason);
            st.writing = false;
            st.clear();
            drop(st);
            queue.space_ready.notify_waiters();
            return;
        }
    }
}

/// Writes one batch, attaching each descriptor to a `sendmsg` that starts
/// at or before its frame.
///
/// The socket is written without a reactor registration; only when it is
/// full does the descriptor get registered for writability, and it is
/// deregistered again once the batch is out.
async fn write_batch(
    slot: &mut Option<OwnedFd>,
    bytes: &[u8],
    fds: &[(usize, OwnedFd)],
) -> io::Result<()> {
    let mut registered: Option<AsyncFd<OwnedFd>> = None;
    let result = write_batch_inner(slot, &mut registered, bytes, fds).await;
    if let Some(async_fd) = registered {
        *slot = Some(async_fd.into_inner());
    }
    result
}

async fn write_batch_inner(
    slot: &mut Option<OwnedFd>,
    registered: &mut Option<AsyncFd<OwnedFd>>,
    bytes: &[u8],
    fds: &[(usize, OwnedFd)],
) -> io::Result<()> {
    let mut pos = 0;
    let mut next_fd = 0;
    let mut raw: Vec<RawFd> = Vec::new();
    while pos < bytes.len() {
        let (chunk, attach) = next_send(bytes.len(), pos, next_fd, fds);
        raw.clear();
        raw.extend(fds[attach.clone()].iter().map(|(_, fd)| fd.as_raw_fd()));
        let chunk = &bytes[chunk];
        let sent = match registered {
            None => {
                let fd = slot.as_ref().ok_or(io::ErrorKind::NotConnected)?;
                match sys::send_with_fds(fd.as_fd(), chunk, &raw, Wait::DontWait) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let fd = slot.take().ok_or(io::ErrorKind::NotConnected)?;
                        match sys::register(fd, Interest::WRITABLE) {
                            Ok(async_fd) => *registered = Some(async_fd),
                            Err((fd, e)) => {
                                *slot = Some(fd);
                                return Err(e);
                            }
                        }
                        continue;
                    }
                    other => other,
                }
            }
            Some(async_fd) => {
                let mut guard = async_fd.writable().await?;
                match guard.try_io(|fd| {
                    sys::send_with_fds(fd.get_ref().as_fd(), chunk, &raw, Wait::DontWait)
                }) {
                    Ok(result) => result,
                    Err(_would_block) => continue,
                }
            }
        };
        match sent {
            Ok(n) => {
                pos += n;
                next_fd = attach.end;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
