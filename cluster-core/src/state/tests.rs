//! Unit tests of the worker state machine.

use super::WorkerState::*;

#[test]
fn moves_only_forward() {
    let path = [
        Online,
        Listening,
        Online,
        Listening,
        None,
        Disconnected,
        Online,
        Dead,
        Listening,
    ];
    let mut s = None;
    let mut seen = Vec::new();
    for next in path {
        s = s.advance(next);
        seen.push(s);
    }
    assert_eq!(
        seen,
        [
            Online,
            Listening,
            Listening,
            Listening,
            Listening,
            Disconnected,
            Disconnected,
            Dead,
            Dead
        ]
    );
}

#[test]
fn predicates() {
    for s in [None, Online, Listening, Disconnected, Dead] {
        assert_eq!(s.is_alive(), s != Dead);
    }
    assert!(Online.is_ready() && Listening.is_ready());
    assert!(!None.is_ready() && !Disconnected.is_ready());
}
