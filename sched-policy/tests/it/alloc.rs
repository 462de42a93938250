//! The pick path allocates nothing: a counting global allocator, counting
//! per thread so that tests running in parallel do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use sched_policy::{
    Availability, Connection, ListenerId, PolicyKind, Scheduler, SchedulingPolicy, SlotId,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local that never allocates itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn picking_allocates_nothing() {
    let conns: Vec<Connection> = (0..64u16)
        .map(|i| {
            let peer = SocketAddr::from(([127, 0, 0, (i % 200) as u8 + 2], 50_000 + i));
            Connection::new(peer, ListenerId(0))
        })
        .collect();
    for kind in PolicyKind::ALL {
        let SchedulingPolicy::Distributed(policy) = kind.build_with_seed(3) else {
            continue;
        };
        let mut sched = Scheduler::new(policy);
        for n in 0..64 {
            sched.add_worker(SlotId::new(n)).expect("fresh slot");
            sched
                .set_state(SlotId::new(n), Availability::Ready)
                .expect("known slot");
        }
        let before = allocations();
        let mut picked = 0;
        for (i, conn) in conns.iter().cycle().take(2_000).enumerate() {
            let slot = sched.assign(conn).expect("a ready worker");
            picked += 1;
            if i % 3 == 0 {
                sched.connection_closed(slot).expect("an open connection");
            }
            if i % 97 == 0 {
                let again = sched.reassign(conn, &[slot]).expect("another worker");
                assert_ne!(again, slot);
                sched.hand_off_failed(again).expect("an open connection");
            }
        }
        assert_eq!(allocations() - before, 0, "{kind} allocated while picking");
        assert_eq!(picked, 2_000);
    }
}
