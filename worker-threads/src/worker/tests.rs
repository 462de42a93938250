//! Unit tests of the worker's wire type.

use super::{Event, Wire, WorkerFailure};

#[test]
fn a_small_message_travels_in_sixteen_bytes() {
    assert_eq!(std::mem::size_of::<Wire<u64>>(), 16);
    assert!(std::mem::size_of::<Event<u64>>() > 16);
}

#[test]
fn the_wire_converts_to_the_same_event() {
    let failure = WorkerFailure::Panicked {
        message: "boom".to_owned(),
    };
    assert_eq!(Event::from(Wire::<u8>::Online), Event::Online);
    assert_eq!(Event::from(Wire::Message(3_u8)), Event::Message(3));
    assert_eq!(
        Event::from(Wire::<u8>::Error(Box::new(failure.clone()))),
        Event::Error(failure)
    );
    assert_eq!(Event::from(Wire::<u8>::Exit(4)), Event::Exit(4));
}
