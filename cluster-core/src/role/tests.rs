//! Unit tests of the worker variable's format.

use std::time::Duration;

use super::{WorkerEnv, new_token};
use crate::event::{SlotId, WorkerId};

#[test]
fn round_trip() {
    for heartbeat in [None, Some(Duration::from_millis(250))] {
        for token in [0, 1, u64::MAX, new_token(WorkerId(7))] {
            let env = WorkerEnv {
                id: WorkerId(7),
                slot: SlotId::new(2),
                heartbeat,
                primary: 4242,
                token,
            };
            assert_eq!(WorkerEnv::parse(&env.encode()).unwrap(), env);
        }
    }
}

#[test]
fn malformed_values_are_errors() {
    for bad in [
        "",
        "1",
        "1:2",
        "1:2:3",
        "1:2:3:4",
        "1:2:3:4:5:6",
        "x:0:0:1:0",
        "0:0:0:1:0",
        "1:-1:0:1:0",
        "1:0:-5:1:0",
        "1:0:0:0:ab",
        "1:0:0:1:xyz",
        "1:0:0:-1:ab",
    ] {
        assert!(WorkerEnv::parse(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn tokens_differ_between_launches() {
    assert_ne!(new_token(WorkerId(1)), new_token(WorkerId(1)));
}
