//! Decision sequences for fixed inputs, pinned as insta snapshots.
//!
//! Each case is data: a policy name and a small script run through one
//! [`check`] helper, which renders every step and the picks it made.
//!
//! Script lines: `ready S..` (add if missing, set ready), `drain S..`,
//! `notready S..`, `remove S..`, `cap S N`, `close S`, `pick N` (N new
//! connections; the k-th of the whole script comes from `127.0.0.(2 + k % 6)`
//! port `50000 + k`), `reroute S` (one connection, its hand-off to `S`
//! failed: `S` excluded), `window S N`, and for every pending hand-off to
//! `S`: `ack S` (acknowledged), `refuse S` (failed), `expire S` (taken back
//! after its deadline); `answer S` (the worker answered something).

use std::fmt::Write as _;
use std::net::SocketAddr;

use sched_policy::{
    Availability, Connection, ListenerId, PolicyKind, Scheduler, SchedulingPolicy, SlotId,
};

fn check(name: &str, kind: &str, script: &str) {
    let kind: PolicyKind = kind.parse().expect("a policy name");
    let SchedulingPolicy::Distributed(policy) = kind.build_with_seed(42) else {
        panic!("{kind} is not a picker");
    };
    let mut sched = Scheduler::new(policy);
    let mut out = format!("policy {kind}\n");
    let mut k = 0u16;
    let mut next_conn = || {
        let peer = SocketAddr::from(([127, 0, 0, 2 + (k % 6) as u8], 50_000 + k));
        k += 1;
        Connection::new(peer, ListenerId(0))
    };
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (op, args) = line.split_once(' ').unwrap_or((line, ""));
        let nums: Vec<u32> = args
            .split_whitespace()
            .map(|a| a.parse().expect("a number"))
            .collect();
        let slots = nums.iter().map(|&n| SlotId::new(n));
        write!(out, "{line:<14}").unwrap();
        match op {
            "ready" => {
                for s in slots {
                    if sched.table().get(s).is_none() {
                        sched.add_worker(s).unwrap();
                    }
                    sched.set_state(s, Availability::Ready).unwrap();
                }
            }
            "drain" => slots.for_each(|s| sched.set_state(s, Availability::Draining).unwrap()),
            "notready" => slots.for_each(|s| sched.set_state(s, Availability::NotReady).unwrap()),
            "remove" => slots.for_each(|s| sched.remove_worker(s).unwrap()),
            "cap" => sched.set_cap(SlotId::new(nums[0]), Some(nums[1])).unwrap(),
            "close" => sched.connection_closed(SlotId::new(nums[0])).unwrap(),
            "window" => sched
                .set_window(SlotId::new(nums[0]), Some(nums[1]))
                .unwrap(),
            "ack" | "refuse" | "expire" => {
                let s = SlotId::new(nums[0]);
                let pending = sched.table().get(s).map_or(0, |w| w.pending());
                for _ in 0..pending {
                    match op {
                        "ack" => sched.hand_off_acknowledged(s).unwrap(),
                        "refuse" => sched.hand_off_failed(s).unwrap(),
                        _ => sched.hand_off_expired(s).unwrap(),
                    }
                }
            }
            "answer" => sched.worker_responded(SlotId::new(nums[0])).unwrap(),
            "pick" => {
                write!(out, "->").unwrap();
                for _ in 0..nums[0] {
                    let conn = next_conn();
                    match sched.assign(&conn) {
                        Some(s) => write!(out, " {}<{}", s, conn.peer.ip()).unwrap(),
                        None => write!(out, " none<{}", conn.peer.ip()).unwrap(),
                    }
                }
            }
            "reroute" => {
                let conn = next_conn();
                let picked = sched.reassign(&conn, &[SlotId::new(nums[0])]);
                let shown = picked.map_or("none".to_owned(), |s| s.to_string());
                write!(out, "-> {shown}<{}", conn.peer.ip()).unwrap();
            }
            other => panic!("unknown script op {other:?}"),
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out.push_str("open:");
    for w in sched.table().workers() {
        write!(out, " {}={}/{}", w.slot(), w.open(), w.handed()).unwrap();
        if w.window().is_some() {
            write!(out, " pending={}", w.pending()).unwrap();
        }
    }
    out.push('\n');
    insta::assert_snapshot!(name, out);
}

const CHURN: &str = "
    ready 0 1 2 3
    pick 12
    drain 1
    pick 6
    remove 1
    ready 1
    pick 6
    cap 0 4
    pick 6
    reroute 2
    notready 0 1 2 3
    pick 1
";

#[test]
fn round_robin_rotates_and_skips_ineligible() {
    check("rr_churn", "rr", CHURN);
}

#[test]
fn least_connections_fills_the_quietest() {
    check(
        "least_conn_long_lived",
        "least-conn",
        "
        ready 0 1 2
        pick 6
        close 0
        close 0
        pick 3
        ready 3
        pick 4
        ",
    );
    check("least_conn_churn", "least-conn", CHURN);
}

#[test]
fn power_of_two_choices_is_reproducible() {
    check("p2c_churn", "p2c", CHURN);
}

#[test]
fn sticky_keeps_clients_across_churn() {
    check("sticky_churn", "sticky", CHURN);
    check(
        "sticky_cap",
        "sticky",
        "
        ready 0 1 2 3
        pick 12
        cap 3 4
        pick 6
        close 3
        pick 6
        ",
    );
}

/// A hand-off window of 2 per worker, one worker that stops acknowledging
/// (slot 1): it fills its window, its hand-offs expire, it is skipped until
/// it answers again.
const HUNG: &str = "
    ready 0 1 2
    window 0 2
    window 1 2
    window 2 2
    pick 7
    ack 0
    ack 2
    refuse 1
    pick 6
    ack 0
    ack 2
    expire 1
    pick 5
    ack 0
    ack 2
    answer 1
    pick 3
";

#[test]
fn a_hung_worker_fills_its_window_and_stalls() {
    check("rr_hung_window", "rr", HUNG);
    check("least_conn_hung_window", "least-conn", HUNG);
    check("sticky_hung_window", "sticky", HUNG);
}
