//! Output that never blocks its caller: the primary's stdout and stderr,
//! each written by a thread of its own from a bounded queue.
//!
//! A primary forwards its workers' piped output ([`WorkerStdio::Piped`]),
//! and a program usually prints its own lines too (the events it sees).
//! Either kind of write can block for as long as whoever reads the
//! primary's stdout is not reading (a stalled log shipper, a full pipe,
//! `| less` left open). If such a write ran on a tokio thread, the primary
//! would stop supervising: a dead worker would not be reaped nor replaced.
//! So nothing in cluster-core writes to stdout or stderr from a task: every
//! line goes into the stream's queue, and one process-wide *writer thread*
//! per stream (`cluster-stdout`, `cluster-stderr`, started on first use)
//! writes the queue out, whole lines only, under the stream's lock (so
//! a line is never cut by another writer of the same process, `println!`
//! included).
//!
//! The queue is bounded in bytes, with two budgets per stream:
//!
//! - **Forwarded worker output** (up to [`FORWARD_BUDGET`] bytes waiting):
//!   when it is full, the tasks that forward the workers' output stop
//!   reading the workers' pipes until the writer makes room. A worker that
//!   keeps printing then blocks in its own `write`, exactly as the same
//!   program would if it wrote to the stalled stdout itself, with no
//!   cluster; a quiet worker, and the primary, carry on.
//! - **The program's own lines**, through [`Output`] (up to
//!   [`OWN_BUDGET`] bytes waiting): [`Output::line`] never waits; when the
//!   budget is full it drops the line, and the next line that fits is
//!   preceded by a count of those dropped. [`Output::line_wait`] waits for
//!   room instead.
//!
//! If a write fails (the reader closed the pipe), the lines are dropped, so
//! the workers are never stopped by a closed stdout.
//!
//! [`WorkerStdio::Piped`]: crate::WorkerStdio::Piped
//!
//! ```no_run
//! # async fn f() {
//! use cluster_core::output::Output;
//!
//! let out = Output::stdout();
//! out.line(format!("worker {} online", 3)); // queued, never blocks
//! // Before the program exits, wait (bounded) for the queue to be written.
//! let _ = tokio::time::timeout(std::time::Duration::from_secs(1), out.flush()).await;
//! # }
//! ```

#[cfg(test)]
mod tests;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::event::WorkerId;

/// How many bytes of forwarded worker output may wait in one stream's queue
/// before the forwarders stop reading the workers' pipes: 256 KiB.
pub const FORWARD_BUDGET: usize = 256 * 1024;

/// How many bytes of the program's own lines ([`Output`]) may wait in one
/// stream's queue before [`Output::line`] drops lines: 64 KiB.
pub const OWN_BUDGET: usize = 64 * 1024;

/// The most bytes the writer thread gathers into one write.
const BATCH: usize = 64 * 1024;

/// One of the primary's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a piece of a worker's output read by its forwarder becomes the bytes
/// queued for the primary's stream: the seam where other formats (raw
/// pass-through, JSON records) plug in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum LineFormat {
    /// `[worker <id>] ` + the line + a newline if it had none.
    #[default]
    Prefixed,
    /// The line unchanged (+ a newline if it had none).
    Raw,
    /// `{"worker":<id>,"stream":"stdout"|"stderr","line":"<the line, escaped>"}`.
    Json,
}

impl From<crate::settings::WorkerOutput> for LineFormat {
    fn from(o: crate::settings::WorkerOutput) -> Self {
        match o {
            crate::settings::WorkerOutput::Prefixed => LineFormat::Prefixed,
            crate::settings::WorkerOutput::Raw => LineFormat::Raw,
            crate::settings::WorkerOutput::Json => LineFormat::Json,
        }
    }
}

impl LineFormat {
    /// Append `piece` (one line, or a piece of an overlong line, as read
    /// from `worker`'s `stream`) to `out`, framed in this format.
    pub(crate) fn frame(self, worker: WorkerId, stream: Stream, piece: &[u8], out: &mut Vec<u8>) {
        match self {
            LineFormat::Prefixed => {
                let _ = write!(out, "[worker {worker}] ");
                push_line(out, piece);
            }
            LineFormat::Raw => push_line(out, piece),
            LineFormat::Json => {
                let stream = match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                let _ = write!(
                    out,
                    "{{\"worker\":{worker},\"stream\":\"{stream}\",\"line\":\""
                );
                let line = piece.strip_suffix(b"\n").unwrap_or(piece);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                json_escape(&String::from_utf8_lossy(line), out);
                out.extend_from_slice(b"\"}\n");
            }
        }
    }
}

/// The longest piece of a worker's output forwarded as one line.
const MAX_LINE: u64 = 64 * 1024;

/// Read `io` (a worker's `stream`) line by line and queue each line, framed
/// by `format`, into `sink`, waiting for room before reading more. Without
/// a sink (no writer thread) the output is read and dropped, so the worker
/// never blocks on it. Returns at the end of `io`.
pub(crate) async fn forward<R: AsyncRead + Unpin>(
    sink: Option<&Sink>,
    io: R,
    worker: WorkerId,
    stream: Stream,
    format: LineFormat,
) {
    let mut reader = BufReader::new(io);
    let mut piece = Vec::with_capacity(256);
    loop {
        piece.clear();
        // A line longer than the cap is forwarded in pieces.
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut piece)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(sink) = sink {
            let mut line = Vec::with_capacity(piece.len() + 16);
            format.frame(worker, stream, &piece, &mut line);
            sink.forward(line).await;
        }
    }
}

/// Forward a worker's piped `stream` (`io`) to the same stream of this
/// process, line by line, framed by `format` with `worker`'s id: what a
/// [`Cluster`](crate::Cluster) does for [`WorkerStdio::Piped`], for a
/// program that supervises processes of its own. It stops reading `io`
/// while the forwarding budget is full, and returns at the end of `io`.
pub async fn forward_worker_output<R: AsyncRead + Unpin>(
    io: R,
    worker: WorkerId,
    stream: Stream,
    format: crate::WorkerOutput,
) {
    forward(Sink::of(stream), io, worker, stream, format.into()).await;
}

/// What the writer thread takes from the queue.
enum Item {
    /// Whole lines, and the budget they hold until written.
    Lines(Vec<u8>, OwnedSemaphorePermit),
    /// Answered once everything queued before it was written.
    Flush(oneshot::Sender<()>),
}

/// One stream's queue, its budgets and its writer thread.
pub(crate) struct Sink {
    queue: mpsc::UnboundedSender<Item>,
    forwarded: Arc<Semaphore>,
    forward_total: usize,
    own: Arc<Semaphore>,
    own_total: usize,
    /// Own lines dropped since the last one queued.
    dropped: AtomicU64,
}

impl Sink {
    /// The process-wide sink of `stream`, its thread started on first use;
    /// `None` if that thread could not be started (the lines are dropped).
    pub(crate) fn of(stream: Stream) -> Option<&'static Sink> {
        static STDOUT: OnceLock<Option<Sink>> = OnceLock::new();
        static STDERR: OnceLock<Option<Sink>> = OnceLock::new();
        let (cell, name) = match stream {
            Stream::Stdout => (&STDOUT, "cluster-stdout"),
            Stream::Stderr => (&STDERR, "cluster-stderr"),
        };
        cell.get_or_init(|| {
            Sink::start(name, FORWARD_BUDGET, OWN_BUDGET, move |bytes| {
                // Errors (a closed pipe) drop the lines: nothing waits on them.
                let _ = match stream {
                    Stream::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(bytes).and_then(|()| out.flush())
                    }
                    Stream::Stderr => std::io::stderr().lock().write_all(bytes),
                };
            })
            .ok()
        })
        .as_ref()
    }

    /// A sink whose thread `name` hands each batch of whole lines to
    /// `write`, which may block as long as it likes.
    pub(crate) fn start(
        name: &str,
        forward_budget: usize,
        own_budget: usize,
        write: impl FnMut(&[u8]) + Send + 'static,
    ) -> std::io::Result<Sink> {
        let (queue, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_out(rx, write))?;
        Ok(Sink {
            queue,
            forwarded: Arc::new(Semaphore::new(forward_budget)),
            forward_total: forward_budget,
            own: Arc::new(Semaphore::new(own_budget)),
            own_total: own_budget,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue forwarded worker output (whole lines), waiting for room in the
    /// forwarding budget: while it waits, its forwarder reads nothing more.
    pub(crate) async fn forward(&self, bytes: Vec<u8>) {
        let Ok(permit) = Arc::clone(&self.forwarded)
            .acquire_many_owned(permits(bytes.len(), self.forward_total))
            .await
        else {
            return; // never closed
        };
        let _ = self.queue.send(Item::Lines(bytes, permit));
    }

    /// Queue one of the program's own lines if the budget has room; never
    /// waits. Returns whether it was queued.
    fn try_own(&self, line: &[u8]) -> bool {
        let mut bytes = self.dropped_notice();
        push_line(&mut bytes, line);
        let n = permits(bytes.len(), self.own_total);
        match Arc::clone(&self.own).try_acquire_many_owned(n) {
            Ok(permit) => {
                self.dropped.store(0, Ordering::Relaxed);
                let _ = self.queue.send(Item::Lines(bytes, permit));
                true
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queue one of the program's own lines, waiting for room.
    async fn own(&self, line: &[u8]) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        push_line(&mut bytes, line);
        let n = permits(bytes.len(), self.own_total);
        let Ok(permit) = Arc::clone(&self.own).acquire_many_owned(n).await else {
            return; // never closed
        };
        let _ = self.queue.send(Item::Lines(bytes, permit));
    }

    /// The line that reports the own lines dropped so far, if any.
    fn dropped_notice(&self) -> Vec<u8> {
        match self.dropped.load(Ordering::Relaxed) {
            0 => Vec::new(),
            n => format!("[cluster-core: {n} line(s) dropped, output stalled]\n").into_bytes(),
        }
    }

    /// Wait until everything queued before this call was written.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Item::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The permits `len` bytes take from a budget of `total` (a piece larger
/// than the whole budget takes all of it).
fn permits(len: usize, total: usize) -> u32 {
    u32::try_from(len.clamp(1, total)).unwrap_or(u32::MAX)
}

/// `line`, with a newline if it has none.
/// Append `s` escaped as the inside of a JSON string.
fn json_escape(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    if out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
}

/// The writer thread: take what is queued (up to [`BATCH`] bytes), write it
/// with one call, give the budget back, answer the flushes; until every
/// sender is gone (never, for the process-wide sinks).
fn write_out(mut rx: mpsc::UnboundedReceiver<Item>, mut write: impl FnMut(&[u8])) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut held = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Lines(bytes, permit) => {
                    batch.extend_from_slice(&bytes);
                    held.push(permit);
                }
                Item::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            write(&batch);
            batch.clear();
        }
        held.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Lines to the primary's stdout or stderr that never block the caller:
/// queued for the stream's writer thread, which also writes the forwarded
/// worker output (see the [module docs](self)). Use it instead of
/// `println!` in a primary's event loop, so a stalled reader of your
/// output cannot stall the loop.
///
/// Lines queued here are written in order, each whole, among the forwarded
/// worker lines. What is still queued when the process exits is lost:
/// [`flush`](Self::flush) (bounded with a timeout) before exiting.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    stream: Stream,
}

impl Output {
    /// The primary's stdout.
    pub fn stdout() -> Self {
        Self {
            stream: Stream::Stdout,
        }
    }

    /// The primary's stderr.
    pub fn stderr() -> Self {
        Self {
            stream: Stream::Stderr,
        }
    }

    /// Queue one line (a newline is added if it has none); never blocks.
    /// Returns `false` if it was dropped: more than [`OWN_BUDGET`] bytes of
    /// this program's lines are waiting for a stalled reader (the next line
    /// queued is preceded by the count of lines dropped), or the writer
    /// thread could not be started.
    pub fn line(&self, line: impl AsRef<[u8]>) -> bool {
        Sink::of(self.stream).is_some_and(|s| s.try_own(line.as_ref()))
    }

    /// Queue one line, waiting (asynchronously) while the budget is full:
    /// it never drops a line, and waits as long as the reader stalls.
    pub async fn line_wait(&self, line: impl AsRef<[u8]>) {
        if let Some(sink) = Sink::of(self.stream) {
            sink.own(line.as_ref()).await;
        }
    }

    /// Wait until every line queued so far (forwarded worker output
    /// included) was written. Waits as long as the reader stalls: bound
    /// it with a timeout.
    pub async fn flush(&self) {
        if let Some(sink) = Sink::of(self.stream) {
            sink.flush().await;
        }
    }
}

/// Wait (bounded by `bound` per stream) until what is queued on the
/// primary's stdout and stderr was written: the end of `Cluster::run` and
/// of [`crate::main`]'s primary.
pub(crate) async fn flush_both(bound: std::time::Duration) {
    for out in [Output::stdout(), Output::stderr()] {
        let _ = tokio::time::timeout(bound, out.flush()).await;
    }
}
