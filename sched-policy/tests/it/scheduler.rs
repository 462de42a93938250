//! The `Scheduler`: counters follow assignments, hooks reach the policy, and
//! a policy answering an ineligible slot never gets a connection through.

use std::net::SocketAddr;

use sched_policy::{Availability, Connection, Eligible, ListenerId, Policy, Scheduler, SlotId};

fn conn() -> Connection {
    Connection::new(SocketAddr::from(([127, 0, 0, 1], 50_000)), ListenerId(0))
}

/// Always answers slot 0, eligible or not, and records its hooks.
#[derive(Debug, Default)]
struct Stubborn {
    events: Vec<String>,
}

impl Policy for Stubborn {
    fn name(&self) -> &'static str {
        "stubborn"
    }
    fn pick(&mut self, _workers: Eligible<'_>, _conn: &Connection) -> Option<SlotId> {
        Some(SlotId::new(0))
    }
    fn worker_added(&mut self, slot: SlotId) {
        self.events.push(format!("added {slot}"));
    }
    fn worker_removed(&mut self, slot: SlotId) {
        self.events.push(format!("removed {slot}"));
    }
    fn connection_handed(&mut self, slot: SlotId, _conn: &Connection) {
        self.events.push(format!("handed {slot}"));
    }
    fn connection_closed(&mut self, slot: SlotId) {
        self.events.push(format!("closed {slot}"));
    }
}

#[test]
fn an_ineligible_answer_is_refused_and_hooks_are_called() {
    let mut sched = Scheduler::new(Stubborn::default());
    sched.add_worker(SlotId::new(0)).unwrap();
    sched.add_worker(SlotId::new(1)).unwrap();
    sched
        .set_state(SlotId::new(1), Availability::Ready)
        .unwrap();
    // SlotId 0 is not ready: the stubborn answer is refused.
    assert_eq!(sched.assign(&conn()), None);
    sched
        .set_state(SlotId::new(0), Availability::Ready)
        .unwrap();
    assert_eq!(sched.assign(&conn()), Some(SlotId::new(0)));
    // Excluded after a failed hand-off: refused again.
    sched.hand_off_failed(SlotId::new(0)).unwrap();
    assert_eq!(sched.reassign(&conn(), &[SlotId::new(0)]), None);
    sched.set_cap(SlotId::new(0), Some(0)).unwrap();
    assert_eq!(sched.assign(&conn()), None);
    sched.remove_worker(SlotId::new(0)).unwrap();
    assert_eq!(
        sched.policy().events,
        ["added 0", "added 1", "handed 0", "closed 0", "removed 0"]
    );
    let w = sched.table().get(SlotId::new(1)).unwrap();
    assert_eq!((w.open(), w.handed()), (0, 0));
}
