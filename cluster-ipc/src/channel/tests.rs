//! `InheritedPeer::closes_within`: a copy of the other end that lives on
//! for a moment is waited for; one that stays open is not, past the bound.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{InheritedPeer, channel_pair};

#[test]
fn an_end_closed_a_moment_later_is_seen_closed() {
    let (ours, theirs) = channel_pair().unwrap();
    let peer = InheritedPeer {
        pid: std::process::id(),
        closed: false,
        fd: ours.as_raw_fd(),
    };
    // The last copy of the other end goes away after the look, as a
    // starting worker's copy does at its `exec`.
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(theirs);
    });
    assert!(peer.closes_within(Duration::from_secs(10)));
    closer.join().unwrap();
}

#[test]
fn an_end_held_open_is_not_closed_after_the_bound() {
    let (ours, theirs) = channel_pair().unwrap();
    let peer = InheritedPeer {
        pid: std::process::id(),
        closed: false,
        fd: ours.as_raw_fd(),
    };
    assert!(!peer.closes_within(Duration::from_millis(30)));
    drop(theirs);
    assert!(peer.closes_within(Duration::from_secs(10)));
}
