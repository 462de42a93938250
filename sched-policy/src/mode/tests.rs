//! Unit tests of policy names: every name round-trips, others are typed errors.

use crate::{Error, PolicyKind, SchedulingPolicy};

fn check(input: &str, expect: Result<&str, Error>) {
    let got = input.parse::<SchedulingPolicy>().map(|p| p.name());
    assert_eq!(got, expect, "parsing {input:?}");
}

#[test]
fn names_parse_to_their_policy() {
    check("rr", Ok("rr"));
    check("none", Ok("none"));
    check("sticky", Ok("sticky"));
    check("least-conn", Ok("least-conn"));
    check("p2c", Ok("p2c"));
    check(" RR\n", Ok("rr"));
}

#[test]
fn other_names_are_typed_errors() {
    for bad in ["", "round-robin", "least_conn", "rr,none", "p2c2"] {
        check(
            bad,
            Err(Error::UnknownPolicy {
                input: bad.to_owned(),
            }),
        );
    }
    let msg = "x".parse::<PolicyKind>().unwrap_err().to_string();
    assert_eq!(
        msg,
        r#"unknown scheduling policy "x" (expected one of rr, none, sticky, least-conn, p2c)"#
    );
}

#[test]
fn every_kind_round_trips_through_its_name() {
    for kind in PolicyKind::ALL {
        assert_eq!(kind.to_string().parse::<PolicyKind>(), Ok(kind));
    }
    assert_eq!(PolicyKind::default(), PolicyKind::RoundRobin);
    assert_eq!(SchedulingPolicy::default().name(), "rr");
    assert!(
        "none"
            .parse::<SchedulingPolicy>()
            .unwrap()
            .policy_mut()
            .is_none()
    );
}
