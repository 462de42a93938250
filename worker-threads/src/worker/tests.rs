//! Unit tests of the worker's event protocol.

use crossbeam_channel::unbounded;

use super::events::{Control, EventStream, Wait};
use super::{Event, WorkerFailure};
use crate::RecvError;

#[test]
fn online_comes_first_messages_next_and_control_events_last() {
    let (control_tx, control) = unbounded();
    let (message_tx, messages) = unbounded();
    let stream = EventStream::new(control, messages);
    // Messages already queued still wait for Online.
    message_tx.send(1_u8).expect("stream alive");
    assert_eq!(stream.next(Wait::Try), Err(RecvError::Empty));
    control_tx.send(Control::Online).expect("stream alive");
    message_tx.send(2).expect("stream alive");
    let failure = WorkerFailure::Panicked {
        message: "boom".to_owned(),
    };
    control_tx
        .send(Control::Error(failure.clone()))
        .expect("stream alive");
    control_tx.send(Control::Exit(1)).expect("stream alive");
    // The end is known only once the message sender is gone.
    assert_eq!(stream.next(Wait::Try), Ok(Event::Online));
    assert_eq!(stream.next(Wait::Try), Ok(Event::Message(1)));
    assert_eq!(stream.next(Wait::Try), Ok(Event::Message(2)));
    assert_eq!(stream.next(Wait::Try), Err(RecvError::Empty));
    drop(message_tx);
    assert_eq!(stream.next(Wait::Block), Ok(Event::Error(failure)));
    assert_eq!(stream.next(Wait::Block), Ok(Event::Exit(1)));
    assert_eq!(stream.next(Wait::Block), Err(RecvError::Disconnected));
}
