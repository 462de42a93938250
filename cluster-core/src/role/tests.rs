//! Unit tests of the worker variable's format.

use std::time::Duration;

use super::WorkerEnv;
use crate::event::{SlotId, WorkerId};

#[test]
fn round_trip() {
    for heartbeat in [None, Some(Duration::from_millis(250))] {
        let env = WorkerEnv {
            id: WorkerId(7),
            slot: SlotId(2),
            heartbeat,
        };
        assert_eq!(WorkerEnv::parse(&env.encode()).unwrap(), env);
    }
}

#[test]
fn malformed_values_are_errors() {
    for bad in [
        "", "1", "1:2", "1:2:3:4", "x:0:0", "0:0:0", "1:-1:0", "1:0:-5",
    ] {
        assert!(WorkerEnv::parse(bad).is_err(), "{bad:?} was accepted");
    }
}
