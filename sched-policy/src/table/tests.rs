//! Unit tests of the worker table and its eligible view.

use crate::{Availability, Error, SlotId, WorkerTable};

fn s(n: u32) -> SlotId {
    SlotId::new(n)
}

fn slots<'a>(it: impl Iterator<Item = &'a crate::WorkerInfo>) -> Vec<u32> {
    it.map(|w| w.slot().get()).collect()
}

#[test]
fn rows_stay_sorted_and_duplicates_are_refused() {
    let mut t = WorkerTable::new();
    for n in [3, 0, 2] {
        t.add(s(n)).unwrap();
    }
    assert_eq!(t.add(s(2)), Err(Error::SlotTaken { slot: s(2) }));
    assert_eq!(slots(t.workers().iter()), [0, 2, 3]);
}

#[test]
fn unknown_slots_are_errors_not_panics() {
    let mut t = WorkerTable::with_ready(2);
    let unknown = Err(Error::UnknownSlot { slot: s(7) });
    assert_eq!(t.set_state(s(7), Availability::Ready), unknown);
    assert_eq!(t.connection_handed(s(7)), unknown);
    assert_eq!(t.connection_closed(s(7)), unknown);
    assert_eq!(t.set_cap(s(7), Some(1)), unknown);
    assert_eq!(t.remove(s(7)).map(|_| ()), unknown);
    assert_eq!(
        t.connection_closed(s(1)),
        Err(Error::NoOpenConnection { slot: s(1) })
    );
}

#[test]
fn a_new_worker_is_not_ready_until_told() {
    let mut t = WorkerTable::new();
    t.add(s(0)).unwrap();
    assert!(t.eligible().is_empty());
    t.set_state(s(0), Availability::Ready).unwrap();
    assert_eq!(slots(t.eligible().iter()), [0]);
}

#[test]
fn eligible_leaves_out_draining_capped_and_excluded() {
    let mut t = WorkerTable::with_ready(5);
    t.set_state(s(1), Availability::Draining).unwrap();
    t.set_state(s(2), Availability::NotReady).unwrap();
    t.set_cap(s(3), Some(1)).unwrap();
    t.connection_handed(s(3)).unwrap();
    assert_eq!(slots(t.eligible().iter()), [0, 4]);
    assert_eq!(slots(t.eligible_except(&[s(4)]).iter()), [0]);
    assert!(!t.eligible().contains(s(3)));
    t.connection_closed(s(3)).unwrap();
    assert!(t.eligible().contains(s(3)));
    let w = t.get(s(3)).unwrap();
    assert_eq!((w.open(), w.handed()), (0, 1));
}

#[test]
fn rotation_wraps_around_the_cursor() {
    let mut t = WorkerTable::with_ready(4);
    t.remove(s(2)).unwrap();
    assert_eq!(slots(t.eligible().rotation_from(s(2))), [3, 0, 1]);
    assert_eq!(slots(t.eligible().rotation_from(s(9))), [0, 1, 3]);
    assert_eq!(slots(t.eligible().rotation_from(s(0))), [0, 1, 3]);
}

#[test]
fn a_worker_at_its_window_is_not_eligible_until_it_acknowledges() {
    let mut t = WorkerTable::with_ready(2);
    t.set_window(s(0), Some(2)).unwrap();
    t.connection_handed(s(0)).unwrap();
    assert!(t.eligible().contains(s(0)));
    t.connection_handed(s(0)).unwrap();
    assert_eq!(slots(t.eligible().iter()), [1]);
    t.hand_off_acknowledged(s(0)).unwrap();
    assert!(t.eligible().contains(s(0)));
    let w = t.get(s(0)).unwrap();
    assert_eq!((w.pending(), w.open(), w.handed()), (1, 2, 2));
    t.hand_off_failed(s(0)).unwrap();
    let w = t.get(s(0)).unwrap();
    assert_eq!((w.pending(), w.open()), (0, 1));
    assert_eq!(
        t.hand_off_acknowledged(s(0)),
        Err(Error::NoPendingConnection { slot: s(0) })
    );
}

#[test]
fn an_expired_hand_off_stalls_the_worker_until_it_answers() {
    let mut t = WorkerTable::with_ready(2);
    t.connection_handed(s(1)).unwrap();
    t.hand_off_expired(s(1)).unwrap();
    let w = t.get(s(1)).unwrap();
    assert!(w.is_stalled());
    assert_eq!((w.pending(), w.open()), (0, 0));
    assert_eq!(slots(t.eligible().iter()), [0]);
    // A refusal of the connection already taken back shows it is alive.
    t.worker_responded(s(1)).unwrap();
    assert_eq!(slots(t.eligible().iter()), [0, 1]);
    // So does an acknowledgement.
    t.connection_handed(s(1)).unwrap();
    t.connection_handed(s(1)).unwrap();
    t.hand_off_expired(s(1)).unwrap();
    assert!(!t.eligible().contains(s(1)));
    t.hand_off_acknowledged(s(1)).unwrap();
    assert!(t.eligible().contains(s(1)));
}

#[test]
fn room_sums_what_the_eligible_workers_can_still_take() {
    let mut t = WorkerTable::with_ready(3);
    for n in 0..3 {
        t.set_window(s(n), Some(4)).unwrap();
    }
    assert_eq!(t.eligible().room(), 12);
    t.connection_handed(s(0)).unwrap();
    t.set_cap(s(1), Some(1)).unwrap();
    t.set_state(s(2), Availability::Draining).unwrap();
    assert_eq!(t.eligible().room(), 3 + 1);
    t.connection_handed(s(1)).unwrap();
    assert_eq!(t.eligible().room(), 3);
    t.set_window(s(0), None).unwrap();
    assert_eq!(t.eligible().room(), u64::from(u32::MAX));
    let empty = WorkerTable::new();
    assert_eq!(empty.eligible().room(), 0);
}
