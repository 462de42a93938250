//! Sticky: each client address keeps its worker, by rendezvous hashing.

use std::net::IpAddr;

use crate::{Connection, Eligible, Policy, SlotId};

/// Sends every connection from one client IP address to the same slot, by
/// rendezvous (highest random weight) hashing over the eligible slots.
///
/// Each (client, slot) pair gets a score, [`rendezvous_score`]; the client
/// goes to the eligible slot with the highest score. So:
///
/// - the choice depends only on the client's IP (not its port) and on which
///   slots are eligible: no state, nothing to rebuild when workers change;
/// - when a worker leaves (exits, drains, is not ready, reaches its cap) only
///   its own clients move, each to its next-best slot; the others stay put;
/// - when a worker comes back **in the same slot** (a restart), exactly those
///   clients come back to it: stickiness survives worker restarts, and, as
///   the hash is fixed (see [`rendezvous_score`]), primary restarts too.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) counts as the IPv4 address,
/// so one client is one key on a dual-stack listener. Clients behind one NAT
/// share an address and so a worker; sticky balances clients, not load.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sticky;

impl Sticky {
    /// The sticky policy.
    pub fn new() -> Self {
        Self
    }
}

impl Policy for Sticky {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn pick(&mut self, workers: Eligible<'_>, conn: &Connection) -> Option<SlotId> {
        let key = client_key(conn.peer.ip());
        // Highest score; on an (improbable) tie, the lower slot: the scan is
        // in slot order and only a strictly higher score replaces the best.
        let mut best: Option<(u64, SlotId)> = None;
        for w in workers.iter() {
            let score = mix(key ^ slot_salt(w.slot()));
            if best.is_none_or(|(top, _)| score > top) {
                best = Some((score, w.slot()));
            }
        }
        best.map(|(_, slot)| slot)
    }
}

/// The rendezvous score of `slot` for a client at `ip`: the client goes to
/// the eligible slot with the highest score.
///
/// The hash is part of this crate's compatibility promise (pinned by a test):
/// the same (address, slot) pair scores the same in every process, on every
/// platform and in every 0.x/1.x release, so stickiness survives restarts of
/// workers and of the primary. It is:
///
/// 1. the client key: FNV-1a (64-bit) over a family tag and the address
///    octets (`4, a, b, c, d` for IPv4 and for IPv4-mapped IPv6, `6` and the
///    16 octets otherwise), then the MurmurHash3 `fmix64` finaliser;
/// 2. the slot salt: `(slot + 1) * 0x9E3779B97F4A7C15` (wrapping; the
///    golden-ratio constant spreads consecutive slots over all 64 bits);
/// 3. the score: `fmix64(key XOR salt)`.
///
/// It is not a keyed hash: a client that can choose its address can choose
/// its worker. That is fine for affinity, not for isolation.
pub fn rendezvous_score(ip: IpAddr, slot: SlotId) -> u64 {
    mix(client_key(ip) ^ slot_salt(slot))
}

fn client_key(ip: IpAddr) -> u64 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let hash = match ip {
        IpAddr::V4(v4) => fnv1a(fnv1a(FNV_OFFSET, &[4]), &v4.octets()),
        IpAddr::V6(v6) => fnv1a(fnv1a(FNV_OFFSET, &[6]), &v6.octets()),
    };
    mix(hash)
}

fn slot_salt(slot: SlotId) -> u64 {
    u64::from(slot.get())
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche.
fn mix(mut z: u64) -> u64 {
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

#[cfg(test)]
mod tests;
