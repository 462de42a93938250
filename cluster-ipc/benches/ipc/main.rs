//! Bench of the channel: round trips, one-way throughput, a 1 MiB round
//! trip and descriptor passing, each beside a raw OS baseline measured in the
//! same run.
//!
//! Workloads (the small message is `Small { seq: u64, text: String }` with a
//! 32-byte string; about 44 bytes on the wire: the 8-byte header and a
//! ~36-byte postcard payload):
//!
//! | id | ours | raw baseline | good is |
//! |---|---|---|---|
//! | `ipc.rtt_small_pinned` | send + recv of a small message, both processes on CPU 0, a current-thread runtime each | blocking `write`/`read` ping-pong of the same byte count over a bare socketpair, same pinning | ≤ 1.3 × raw (Node.js 2.0 ×; raw ≈ 7.8 µs here) |
//! | `ipc.rtt_small` | same, unpinned | same, unpinned | ≤ 1.3 × raw |
//! | `ipc.throughput_small` | one-way `send().await` of N messages, the peer decodes each, answers once | a bare buffered socketpair carrying postcard frames, no async (64 KiB writes, 256 KiB reads) | ≥ 15M msg/s (Node.js 370k/s; raw ≈ 20M/s) |
//! | `ipc.rtt_1mib` | round trip of a 1 MiB message | blocking 1 MiB ping-pong | ≤ 1 ms (Node.js 6 ms) |
//! | `ipc.fd_pass` | one-way frames with one descriptor each (a fresh `dup` per frame) | a bare batched `SCM_RIGHTS` loop: one `sendmsg` of 253 bytes + 253 descriptors (the kernel's `SCM_MAX_FD`, the most our writer attaches to one `sendmsg`), same `dup` | ≥ 0.8 × raw |
//! | `ipc.fd_pass_unbatched` | same figure as `ipc.fd_pass` | a bare `SCM_RIGHTS` loop: one `sendmsg` of 1 byte + 1 descriptor each, same `dup` | ≥ 0.8 × raw (raw ≈ 500k/s: ours batches, so it reads ~4 ×) |
//!
//! Both ends are separate **processes**: the bench re-executes itself with
//! `--peer <mode>` and hands the peer its channel end through
//! `CLUSTER_IPC_FD` (placed by spawn-core's `inherit_fd`), as a cluster does. Ours and the raw baselines use the
//! same socketpair from `channel_pair()` (1 MiB send buffers). Each side of
//! ours runs on a current-thread tokio runtime. Beside the pinned round trip,
//! stderr also shows a bare tokio `UnixStream` ping-pong: the floor of any
//! design on the tokio reactor.
//!
//! Each figure is measured `REPS` times, ours and raw interleaved (A B A B);
//! the line reports the medians, and as spread half the range
//! ((max − min) / 2) of the repetitions. `--quick` runs a tiny workload (a
//! few seconds even in a debug build), and so does a run without cargo's
//! `--bench` (as `cargo test --all-targets` runs it); `--list` lists one test,
//! `quick_smoke`, which nextest runs as that smoke test; `--only <word>` runs the rows whose id contains the word.
//! Other arguments are ignored. One JSON line per figure on stdout; human text on stderr.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cluster_ipc::{
    CHANNEL_FD_ENV, Config, DEFAULT_CHILD_FD, Handshake, Incoming, Receiver, Sender, channel_pair,
    handshake,
};
use serde::{Deserialize, Serialize};

const TEXT: &str = "0123456789abcdef0123456789abcdef";

#[derive(Debug, Serialize, Deserialize)]
struct Small {
    seq: u64,
    text: String,
}

/// A byte blob serialized as bytes (one copy), not as a sequence of u8.
#[derive(Debug)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

struct Sizes {
    reps: usize,
    rtt: u64,
    throughput: u64,
    big: u64,
    fds: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--peer") {
        return peer(&args[i + 1..]);
    }
    // cargo-nextest lists a binary's tests with `--list`: offer one smoke
    // test, which runs the quick workload (no `--bench` below).
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("quick_smoke: test");
        }
        return Ok(());
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`)
    // run the tiny workload, as a smoke test.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let sizes = if quick {
        Sizes {
            reps: 2,
            rtt: 200,
            throughput: 20_000,
            big: 4,
            fds: 2_000,
        }
    } else {
        Sizes {
            reps: 5,
            rtt: 20_000,
            throughput: 2_000_000,
            big: 200,
            fds: 100_000,
        }
    };
    // `--only <word>` runs the rows whose id contains it (for profiling).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let run = |id: &str| only.as_deref().is_none_or(|w| id.contains(w));
    let all_cpus = affinity()?;

    if run(RTT_SMALL_PINNED.id) {
        pin_to_cpu0()?;
        let rows = interleave(
            sizes.reps,
            || rtt_small_ours(sizes.rtt),
            || rtt_raw(sizes.rtt, small_frame_len()),
        );
        // For reference: the floor of any tokio-reactor design, a bare
        // tokio UnixStream ping-pong between two current-thread runtimes.
        let floor = (0..sizes.reps)
            .map(|_| rtt_tokio_floor(sizes.rtt, small_frame_len()))
            .collect::<anyhow::Result<Vec<f64>>>();
        set_affinity(&all_cpus)?;
        let (ours, raw) = rows?;
        let (floor, floor_spread) = median_spread(&scale(&floor?, 1e6));
        eprintln!("ipc.rtt_small_pinned: tokio UnixStream floor {floor:.3} ±{floor_spread:.3} us");
        RTT_SMALL_PINNED.report(&ours, &raw);
    }
    if run(RTT_SMALL.id) {
        RTT_SMALL.measure(
            sizes.reps,
            || rtt_small_ours(sizes.rtt),
            || rtt_raw(sizes.rtt, small_frame_len()),
        )?;
    }
    if run(THROUGHPUT_SMALL.id) {
        THROUGHPUT_SMALL.measure(
            sizes.reps,
            || throughput_ours(sizes.throughput),
            || throughput_raw(sizes.throughput),
        )?;
    }
    if run(RTT_1MIB.id) {
        RTT_1MIB.measure(
            sizes.reps,
            || rtt_big_ours(sizes.big),
            || rtt_raw(sizes.big, 1 << 20),
        )?;
    }
    if run(FD_PASS.id) {
        // Ours against both raw loops, all three interleaved: the batched
        // one is the honest baseline (the channel's writer batches too).
        let (mut ours, mut batched, mut single) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..sizes.reps {
            ours.push(fd_pass_ours(sizes.fds)?);
            batched.push(fd_pass_raw_batched(sizes.fds)?);
            single.push(fd_pass_raw(sizes.fds)?);
        }
        FD_PASS.report(&ours, &batched);
        FD_PASS_UNBATCHED.report(&ours, &single);
    }
    Ok(())
}

fn scale(v: &[f64], by: f64) -> Vec<f64> {
    v.iter().map(|x| x * by).collect()
}

fn interleave(
    reps: usize,
    mut ours: impl FnMut() -> anyhow::Result<f64>,
    mut raw: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        a.push(ours()?);
        b.push(raw()?);
    }
    Ok((a, b))
}

fn median_spread(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (median, (s[s.len() - 1] - s[0]) / 2.0)
}

/// One figure of the bench: what its JSON line says of it. Measurements
/// come in seconds (or per second) and are multiplied by `scale` into `unit`.
struct Row {
    id: &'static str,
    what: &'static str,
    unit: &'static str,
    better: &'static str,
    scale: f64,
    target: &'static str,
}

const RTT_SMALL_PINNED: Row = Row {
    id: "ipc.rtt_small_pinned",
    what: "IPC round trip, small message, one CPU",
    unit: "us",
    better: "lower",
    scale: 1e6,
    target: "<= 1.3x raw",
};
const RTT_SMALL: Row = Row {
    id: "ipc.rtt_small",
    what: "IPC round trip, small message, unpinned",
    unit: "us",
    better: "lower",
    scale: 1e6,
    target: "<= 1.3x raw",
};
const THROUGHPUT_SMALL: Row = Row {
    id: "ipc.throughput_small",
    what: "IPC one-way throughput, small messages",
    unit: "per_s",
    better: "higher",
    scale: 1.0,
    target: ">= 15000000",
};
const RTT_1MIB: Row = Row {
    id: "ipc.rtt_1mib",
    what: "IPC round trip, 1 MiB message",
    unit: "ms",
    better: "lower",
    scale: 1e3,
    target: "<= 1 ms",
};
const FD_PASS: Row = Row {
    id: "ipc.fd_pass",
    what: "descriptor passes per second (SCM_RIGHTS; raw batches 253 per sendmsg)",
    unit: "per_s",
    better: "higher",
    scale: 1.0,
    target: ">= 0.8x raw",
};

const FD_PASS_UNBATCHED: Row = Row {
    id: "ipc.fd_pass_unbatched",
    what: "descriptor passes per second (SCM_RIGHTS; raw sends one per sendmsg)",
    unit: "per_s",
    better: "higher",
    scale: 1.0,
    target: ">= 0.8x raw",
};

impl Row {
    /// Measures ours and raw, interleaved, and reports the row.
    fn measure(
        &self,
        reps: usize,
        ours: impl FnMut() -> anyhow::Result<f64>,
        raw: impl FnMut() -> anyhow::Result<f64>,
    ) -> anyhow::Result<()> {
        let (ours, raw) = interleave(reps, ours, raw)?;
        self.report(&ours, &raw);
        Ok(())
    }

    /// Prints the row's JSON line (stdout) and a readable line (stderr).
    fn report(&self, ours: &[f64], raw: &[f64]) {
        let Row {
            id,
            what,
            unit,
            better,
            scale: by,
            target,
        } = self;
        let (ours, raw) = (scale(ours, *by), scale(raw, *by));
        let (o, os) = median_spread(&ours);
        let (r, rs) = median_spread(&raw);
        eprintln!("{id}: ours {o:.3} ±{os:.3} {unit}, raw {r:.3} ±{rs:.3} ({ours:?} vs {raw:?})");
        println!(
            "{{\"id\":\"{id}\",\"what\":\"{what}\",\"unit\":\"{unit}\",\"better\":\"{better}\",\"ours\":{o:.3},\"ours_spread\":{os:.3},\"raw\":{r:.3},\"raw_spread\":{rs:.3},\"target\":\"{target}\"}}"
        );
    }
}

mod ours;
mod peer;
mod process;
mod raw;

use ours::*;
use peer::*;
use process::*;
use raw::*;
