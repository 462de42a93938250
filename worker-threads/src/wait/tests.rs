//! Unit tests of the yielding receive.

use super::{recv, try_yielding};

#[test]
fn a_queued_value_is_received_without_blocking() {
    let (tx, rx) = crossbeam_channel::unbounded();
    tx.send(5).expect("receiver alive");
    assert_eq!(try_yielding(&rx), Some(Ok(5)));
    assert_eq!(try_yielding(&rx), None);
}

#[test]
fn a_closed_channel_ends_the_wait() {
    let (tx, rx) = crossbeam_channel::unbounded::<u8>();
    drop(tx);
    assert_eq!(recv(&rx), Err(crossbeam_channel::RecvError));
}

#[test]
fn a_value_sent_later_from_another_thread_arrives() {
    let (tx, rx) = crossbeam_channel::bounded(0);
    let sender = std::thread::spawn(move || tx.send(9));
    assert_eq!(recv(&rx), Ok(9));
    assert_eq!(sender.join().expect("sender"), Ok(()));
}
