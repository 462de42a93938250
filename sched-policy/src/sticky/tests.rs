//! Unit tests of the sticky hash: pinned values, address normalisation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::rendezvous_score;
use crate::SlotId;

/// The hash is a compatibility promise: these values must never change, or
/// every client of every cluster moves to another worker on upgrade.
#[test]
fn scores_are_pinned() {
    let v4 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let got: Vec<String> = [(v4, 0), (v4, 1), (v4, 63), (v6, 0), (v6, 1)]
        .iter()
        .map(|&(ip, n)| format!("{ip} {n} {:016x}", rendezvous_score(ip, SlotId::new(n))))
        .collect();
    insta::assert_snapshot!(got.join("\n"));
}

#[test]
fn ipv4_mapped_ipv6_is_the_ipv4_client() {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
    for n in 0..8 {
        assert_eq!(
            rendezvous_score(v4, SlotId::new(n)),
            rendezvous_score(mapped, SlotId::new(n))
        );
    }
}
