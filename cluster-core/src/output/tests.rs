//! The writer thread and its budgets, with a `write` that the test holds
//! shut (a stalled reader) and then opens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{LineFormat, Sink, Stream, forward};
use crate::event::WorkerId;

/// A sink whose writes wait until the returned gate is dropped, then land
/// in the returned buffer.
fn stalled_sink(forward_budget: usize, own_budget: usize) -> (Sink, Arc<Mutex<Vec<u8>>>, Gate) {
    let written = Arc::new(Mutex::new(Vec::new()));
    let (gate, shut) = std::sync::mpsc::channel::<()>();
    let out = Arc::clone(&written);
    let sink = Sink::start("test-writer", forward_budget, own_budget, move |bytes| {
        // Blocks until the gate (the sender) is dropped; never sent to.
        let _ = shut.recv();
        out.lock().unwrap().extend_from_slice(bytes);
    })
    .expect("start the writer thread");
    (sink, written, Gate(gate))
}

struct Gate(#[allow(dead_code, reason = "held shut until dropped")] std::sync::mpsc::Sender<()>);

#[test]
fn raw_keeps_the_line_and_json_wraps_it_escaped() {
    let mut out = Vec::new();
    LineFormat::Raw.frame(WorkerId(3), Stream::Stdout, b"{\"a\":1}\n", &mut out);
    LineFormat::Raw.frame(WorkerId(3), Stream::Stdout, b"tail", &mut out);
    assert_eq!(out, b"{\"a\":1}\ntail\n");
    let mut out = Vec::new();
    LineFormat::Json.frame(
        WorkerId(7),
        Stream::Stderr,
        b"say \"hi\"\t\\ \x01\n",
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"worker\":7,\"stream\":\"stderr\",\"line\":\"say \\\"hi\\\"\\t\\\\ \\u0001\"}\n"
    );
}

#[test]
fn prefixed_frames_one_whole_line() {
    let mut out = Vec::new();
    LineFormat::Prefixed.frame(WorkerId(3), Stream::Stdout, b"hello\n", &mut out);
    LineFormat::Prefixed.frame(WorkerId(4), Stream::Stderr, b"no newline", &mut out);
    assert_eq!(out, b"[worker 3] hello\n[worker 4] no newline\n");
}

/// A stalled writer stops the forwarder, which stops reading, so the
/// worker's writes wait; opening it delivers every line whole, in order.
#[tokio::test(start_paused = true)]
async fn a_stalled_writer_pushes_back_to_the_worker() {
    let (sink, written, gate) = stalled_sink(1024, 1024);
    let sink: &'static Sink = Box::leak(Box::new(sink));
    let (mut worker_end, primary_end) = tokio::io::duplex(256);
    let forwarder = tokio::spawn(forward(
        Some(sink),
        primary_end,
        WorkerId(7),
        Stream::Stdout,
        LineFormat::Prefixed,
    ));
    const LINES: usize = 2000;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let worker = tokio::spawn(async move {
        for n in 0..LINES {
            let line = format!("line {n} {}\n", "x".repeat(n % 50));
            worker_end.write_all(line.as_bytes()).await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // The paused clock only moves when every task waits: the worker is then
    // blocked on its full pipe, the forwarder on the full budget.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let stuck_at = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(stuck_at < LINES, "the worker was never held back");
    assert!(!worker.is_finished());

    drop(gate);
    worker.await.unwrap();
    forwarder.await.unwrap();
    sink.flush().await;
    let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), LINES);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("[worker 7] line {n} {}", "x".repeat(n % 50)));
    }
}

/// Own lines never wait: past the budget they are dropped and counted, and
/// the count precedes the next line that fits.
#[test]
fn own_lines_are_dropped_and_counted_when_the_budget_is_full() {
    let (sink, written, gate) = stalled_sink(1024, 10);
    assert!(sink.try_own(b"first"));
    assert!(!sink.try_own(b"second"), "over the budget");
    assert!(!sink.try_own(b"third"), "over the budget");
    drop(gate);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(sink.flush());
    assert!(sink.try_own(b"fourth"));
    rt.block_on(sink.flush());
    let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text,
        "first\n[cluster-core: 2 line(s) dropped, output stalled]\nfourth\n"
    );
}
