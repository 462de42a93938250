//! Unit tests of the cancel token.

use std::time::{Duration, Instant};

use super::CancelToken;

#[test]
fn cancel_wakes_a_waiting_thread() {
    let token = CancelToken::new();
    let waiter = {
        let token = token.clone();
        std::thread::spawn(move || token.wait_timeout(Duration::from_secs(30)))
    };
    token.cancel();
    assert!(waiter.join().expect("waiter panicked"));
    assert!(token.is_cancelled());
}

#[test]
fn a_passed_deadline_reads_as_cancelled_but_not_as_cancel() {
    let token = CancelToken::new();
    assert!(!token.is_cancelled());
    token.set_deadline(Instant::now());
    assert!(token.is_cancelled());
    assert!(!token.was_cancelled());
    assert!(token.wait_timeout(Duration::from_secs(30)));
}

#[test]
fn wait_timeout_returns_false_when_nothing_happens() {
    let token = CancelToken::new();
    assert!(!token.wait_timeout(Duration::from_millis(1)));
}
