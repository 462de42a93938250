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
//! | `ipc.fd_pass` | one-way frames with one descriptor each (a fresh `dup` per frame) | a bare `SCM_RIGHTS` loop: one `sendmsg` of 1 byte + 1 descriptor each, same `dup` | ≥ 0.8 × raw (raw ≈ 577k/s) |
//!
//! Both ends are separate **processes**: the bench re-executes itself with
//! `--peer <mode>` and hands the peer its channel end through
//! `CLUSTER_IPC_FD`, as a cluster does. Ours and the raw baselines use the
//! same socketpair from `channel_pair()` (1 MiB send buffers). Each side of
//! ours runs on a current-thread tokio runtime. Beside the pinned round trip,
//! stderr also shows a bare tokio `UnixStream` ping-pong: the floor of any
//! design on the tokio reactor.
//!
//! Each figure is measured `REPS` times, ours and raw interleaved (A B A B);
//! the line reports the medians, and as spread half the range
//! ((max − min) / 2) of the repetitions. `--quick` runs a tiny workload (a
//! few seconds even in a debug build), and so does a run without cargo's
//! `--bench` (as `cargo test --all-targets` runs it); `--list` lists no tests
//! (for nextest); `--only <word>` runs the rows whose id contains the word.
//! Other arguments are ignored. One JSON line per figure on stdout; human text on stderr.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cluster_ipc::{
    Config, DEFAULT_CHILD_FD, Handshake, Incoming, Receiver, Sender, channel_pair, handshake,
    pass_to_child,
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
    // Test runners list a harness-less bench's tests with `--list`: it has none.
    if args.iter().any(|a| a == "--list") {
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

    if run("ipc.rtt_small_pinned") {
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
        let what = "IPC round trip, small message, one CPU";
        let (ours, raw) = (scale(&ours, 1e6), scale(&raw, 1e6));
        report(
            "ipc.rtt_small_pinned",
            what,
            "us",
            "lower",
            &ours,
            Some(&raw),
            "<= 1.3x raw",
        );
    }
    if run("ipc.rtt_small") {
        let (ours, raw) = interleave(
            sizes.reps,
            || rtt_small_ours(sizes.rtt),
            || rtt_raw(sizes.rtt, small_frame_len()),
        )?;
        let what = "IPC round trip, small message, unpinned";
        let (ours, raw) = (scale(&ours, 1e6), scale(&raw, 1e6));
        report(
            "ipc.rtt_small",
            what,
            "us",
            "lower",
            &ours,
            Some(&raw),
            "<= 1.3x raw",
        );
    }
    if run("ipc.throughput_small") {
        let (ours, raw) = interleave(
            sizes.reps,
            || throughput_ours(sizes.throughput),
            || throughput_raw(sizes.throughput),
        )?;
        let what = "IPC one-way throughput, small messages";
        report(
            "ipc.throughput_small",
            what,
            "per_s",
            "higher",
            &ours,
            Some(&raw),
            ">= 15000000",
        );
    }
    if run("ipc.rtt_1mib") {
        let (ours, raw) = interleave(
            sizes.reps,
            || rtt_big_ours(sizes.big),
            || rtt_raw(sizes.big, 1 << 20),
        )?;
        let what = "IPC round trip, 1 MiB message";
        let (ours, raw) = (scale(&ours, 1e3), scale(&raw, 1e3));
        report(
            "ipc.rtt_1mib",
            what,
            "ms",
            "lower",
            &ours,
            Some(&raw),
            "<= 1 ms",
        );
    }
    if run("ipc.fd_pass") {
        let (ours, raw) = interleave(
            sizes.reps,
            || fd_pass_ours(sizes.fds),
            || fd_pass_raw(sizes.fds),
        )?;
        let what = "descriptor passes per second (SCM_RIGHTS)";
        report(
            "ipc.fd_pass",
            what,
            "per_s",
            "higher",
            &ours,
            Some(&raw),
            ">= 0.8x raw",
        );
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

#[allow(clippy::too_many_arguments, reason = "one JSON line's fields")]
fn report(
    id: &str,
    what: &str,
    unit: &str,
    better: &str,
    ours: &[f64],
    raw: Option<&[f64]>,
    target: &str,
) {
    let (o, os) = median_spread(ours);
    let (raw_s, raw_spread) = match raw {
        Some(r) => {
            let (m, s) = median_spread(r);
            (format!("{m:.3}"), format!("{s:.3}"))
        }
        None => ("null".into(), "null".into()),
    };
    eprintln!("{id}: ours {o:.3} ±{os:.3} {unit}, raw {raw_s} ±{raw_spread} ({ours:?} vs {raw:?})");
    println!(
        "{{\"id\":\"{id}\",\"what\":\"{what}\",\"unit\":\"{unit}\",\"better\":\"{better}\",\"ours\":{o:.3},\"ours_spread\":{os:.3},\"raw\":{raw_s},\"raw_spread\":{raw_spread},\"target\":\"{target}\"}}"
    );
}

// ---- processes and affinity ----

fn spawn_peer(args: &[&str]) -> anyhow::Result<(Child, OwnedFd)> {
    let (primary, child_end) = channel_pair()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--peer").args(args);
    pass_to_child(&mut cmd, child_end, DEFAULT_CHILD_FD)?;
    let child = cmd.spawn().context("spawning the peer")?;
    drop(cmd);
    Ok((child, primary))
}

fn reap(mut child: Child) -> anyhow::Result<()> {
    let status = child.wait()?;
    if !status.success() {
        bail!("peer exited with {status}");
    }
    Ok(())
}

fn affinity() -> anyhow::Result<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-pointer of the given size.
    let ret = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    Ok(set)
}

fn set_affinity(set: &libc::cpu_set_t) -> anyhow::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the given size.
    let ret = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// Pins this thread (and the peers it forks later) to CPU 0, as `taskset -c 0`.
fn pin_to_cpu0() -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 is within the set's bounds.
    unsafe { libc::CPU_SET(0, &mut set) };
    set_affinity(&set)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?)
}

async fn open(fd: OwnedFd) -> anyhow::Result<(Sender, Receiver)> {
    let (tx, rx, _) = handshake(fd, Handshake::for_this_process(1), Config::default()).await?;
    Ok((tx, rx))
}

fn small_frame_len() -> usize {
    8 + postcard::to_allocvec(&Small {
        seq: 0,
        text: TEXT.into(),
    })
    .map_or(0, |v| v.len())
}

// ---- ours ----

fn rtt_small_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["echo-small"])?;
    let secs = runtime()?.block_on(async {
        let (tx, mut rx) = open(fd).await?;
        let mut msg = Small {
            seq: 0,
            text: TEXT.into(),
        };
        let mut once = async |seq: u64| -> anyhow::Result<()> {
            msg.seq = seq;
            tx.send(&msg).await?;
            match rx.recv::<Small>().await? {
                Incoming::User(back, _) if back.seq == seq => Ok(()),
                other => bail!("unexpected {other:?}"),
            }
        };
        for i in 0..n / 10 + 10 {
            once(i).await?;
        }
        let t = Instant::now();
        for i in 0..n {
            once(i).await?;
        }
        anyhow::Ok(t.elapsed().as_secs_f64() / n as f64)
    })?;
    reap(child)?;
    Ok(secs)
}

fn rtt_big_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["echo-blob"])?;
    let secs = runtime()?.block_on(async {
        let (tx, mut rx) = open(fd).await?;
        let blob = Blob(vec![7; 1 << 20]);
        let mut total = Duration::ZERO;
        for i in 0..n + 2 {
            let t = Instant::now();
            tx.send(&blob).await?;
            match rx.recv::<Blob>().await? {
                Incoming::User(back, _) if back.0.len() == blob.0.len() => {}
                other => bail!("unexpected {other:?}"),
            }
            if i >= 2 {
                total += t.elapsed();
            }
        }
        anyhow::Ok(total.as_secs_f64() / n as f64)
    })?;
    reap(child)?;
    Ok(secs)
}

fn throughput_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["sink-small", &n.to_string()])?;
    let per_s = runtime()?.block_on(async {
        let (tx, mut rx) = open(fd).await?;
        let mut msg = Small {
            seq: 0,
            text: TEXT.into(),
        };
        let t = Instant::now();
        for i in 0..n {
            msg.seq = i;
            tx.send(&msg).await?;
        }
        match rx.recv::<u64>().await? {
            Incoming::User(count, _) if count == n => {}
            other => bail!("unexpected {other:?}"),
        }
        anyhow::Ok(n as f64 / t.elapsed().as_secs_f64())
    })?;
    reap(child)?;
    Ok(per_s)
}

fn fd_pass_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["sink-fd", &n.to_string()])?;
    let per_s = runtime()?.block_on(async {
        let (tx, mut rx) = open(fd).await?;
        let file = std::fs::File::open("/dev/null")?;
        let t = Instant::now();
        for i in 0..n {
            tx.send_with_fds(i, vec![file.try_clone()?.into()]).await?;
        }
        match rx.recv::<u64>().await? {
            Incoming::User(count, _) if count == n => {}
            other => bail!("unexpected {other:?}"),
        }
        anyhow::Ok(n as f64 / t.elapsed().as_secs_f64())
    })?;
    reap(child)?;
    Ok(per_s)
}

// ---- raw baselines ----

fn rtt_raw(n: u64, size: usize) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["raw-echo", &size.to_string()])?;
    let mut stream = UnixStream::from(fd);
    let mut buf = vec![7u8; size];
    let warm = if size > 4096 { 2 } else { n / 10 + 10 };
    let mut total = Duration::ZERO;
    for i in 0..n + warm {
        let t = Instant::now();
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        if i >= warm {
            total += t.elapsed();
        }
    }
    drop(stream);
    reap(child)?;
    Ok(total.as_secs_f64() / n as f64)
}

fn rtt_tokio_floor(n: u64, size: usize) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (child, fd) = spawn_peer(&["tokio-echo", &size.to_string()])?;
    let secs = runtime()?.block_on(async {
        let std_stream = UnixStream::from(fd);
        std_stream.set_nonblocking(true)?;
        let mut stream = tokio::net::UnixStream::from_std(std_stream)?;
        let mut buf = vec![7u8; size];
        let warm = n / 10 + 10;
        let mut total = Duration::ZERO;
        for i in 0..n + warm {
            let t = Instant::now();
            stream.write_all(&buf).await?;
            stream.read_exact(&mut buf).await?;
            if i >= warm {
                total += t.elapsed();
            }
        }
        anyhow::Ok(total.as_secs_f64() / n as f64)
    })?;
    reap(child)?;
    Ok(secs)
}

fn throughput_raw(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["raw-sink-small", &n.to_string()])?;
    let mut stream = UnixStream::from(fd);
    let mut msg = Small {
        seq: 0,
        text: TEXT.into(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(80 * 1024);
    let t = Instant::now();
    for i in 0..n {
        msg.seq = i;
        let start = buf.len();
        buf.extend_from_slice(&[0; 8]);
        postcard::to_io(&msg, &mut buf)?;
        let len = (buf.len() - start - 8) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buf[start + 4] = 2;
        if buf.len() >= 64 * 1024 {
            stream.write_all(&buf)?;
            buf.clear();
        }
    }
    stream.write_all(&buf)?;
    let mut ack = [0; 8];
    stream.read_exact(&mut ack)?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != n {
        bail!("raw sink counted {} of {n}", u64::from_le_bytes(ack));
    }
    drop(stream);
    reap(child)?;
    Ok(per_s)
}

fn fd_pass_raw(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["raw-fd-sink", &n.to_string()])?;
    let file = std::fs::File::open("/dev/null")?;
    let t = Instant::now();
    for _ in 0..n {
        let dup: OwnedFd = file.try_clone()?.into();
        raw_send_fd(fd.as_raw_fd(), dup.as_raw_fd())?;
    }
    let mut stream = UnixStream::from(fd);
    let mut ack = [0; 8];
    stream.read_exact(&mut ack)?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    drop(stream);
    reap(child)?;
    Ok(per_s)
}

#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// One blocking `sendmsg` of one byte with one descriptor.
fn raw_send_fd(sock: RawFd, fd: RawFd) -> anyhow::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: a zeroed msghdr is an empty message; we point it at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: the control buffer is aligned and holds CMSG_SPACE(4) bytes.
    unsafe {
        let hdr = libc::CMSG_FIRSTHDR(&msg);
        (*hdr).cmsg_level = libc::SOL_SOCKET;
        (*hdr).cmsg_type = libc::SCM_RIGHTS;
        (*hdr).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` points at live buffers for the call.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } != 1 {
        return Err(std::io::Error::last_os_error()).context("sendmsg");
    }
    Ok(())
}

/// One blocking `recvmsg` of one byte; closes the descriptor that came with it.
fn raw_recv_fd(sock: RawFd) -> anyhow::Result<bool> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: a zeroed msghdr is an empty message; we point it at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = 64;
    // SAFETY: `msg` points at live buffers for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("recvmsg");
    }
    // SAFETY: the kernel wrote well-formed cmsghdrs into the control buffer.
    unsafe {
        let hdr = libc::CMSG_FIRSTHDR(&msg);
        if !hdr.is_null() && (*hdr).cmsg_type == libc::SCM_RIGHTS {
            drop(OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(hdr).cast::<RawFd>(),
            )));
        }
    }
    Ok(n == 1)
}

// ---- the peer process ----

fn peer(args: &[String]) -> anyhow::Result<()> {
    // SAFETY: first thing the peer does, before any thread starts.
    let fd = unsafe { cluster_ipc::from_env() }?.context("CLUSTER_IPC_FD not set")?;
    let mode = args.first().map(String::as_str).unwrap_or("");
    let count = || -> anyhow::Result<u64> { Ok(args.get(1).context("missing count")?.parse()?) };
    match mode {
        "echo-small" => runtime()?.block_on(echo::<Small>(fd)),
        "echo-blob" => runtime()?.block_on(echo::<Blob>(fd)),
        "sink-small" => {
            let n = count()?;
            runtime()?.block_on(async {
                let (tx, mut rx) = open(fd).await?;
                let mut sum = 0u64;
                for _ in 0..n {
                    match rx.recv::<Small>().await? {
                        Incoming::User(m, _) => sum = sum.wrapping_add(m.seq),
                        other => bail!("unexpected {other:?}"),
                    }
                }
                std::hint::black_box(sum);
                tx.send(n).await?;
                tx.flush().await?;
                drain(rx).await
            })
        }
        "sink-fd" => {
            let n = count()?;
            runtime()?.block_on(async {
                let (tx, mut rx) = open(fd).await?;
                for _ in 0..n {
                    match rx.recv_raw().await? {
                        Incoming::User(_, fds) if fds.len() == 1 => {}
                        other => bail!("unexpected {other:?}"),
                    }
                }
                tx.send(n).await?;
                tx.flush().await?;
                drain(rx).await
            })
        }
        "raw-echo" => {
            let size: usize = count()? as usize;
            let mut stream = UnixStream::from(fd);
            let mut buf = vec![0; size];
            loop {
                match stream.read_exact(&mut buf) {
                    Ok(()) => stream.write_all(&buf)?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "tokio-echo" => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let size: usize = count()? as usize;
            runtime()?.block_on(async {
                let std_stream = UnixStream::from(fd);
                std_stream.set_nonblocking(true)?;
                let mut stream = tokio::net::UnixStream::from_std(std_stream)?;
                let mut buf = vec![0; size];
                loop {
                    match stream.read_exact(&mut buf).await {
                        Ok(_) => stream.write_all(&buf).await?,
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(e.into()),
                    }
                }
            })
        }
        "raw-sink-small" => {
            let n = count()?;
            let mut stream = UnixStream::from(fd);
            let mut buf = vec![0u8; 256 * 1024];
            let (mut start, mut end, mut got, mut sum) = (0, 0, 0u64, 0u64);
            while got < n {
                if end - start < 8
                    || end - start
                        < 8 + u32::from_le_bytes(buf[start..start + 4].try_into()?) as usize
                {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                    let r = stream.read(&mut buf[end..])?;
                    if r == 0 {
                        bail!("primary closed early");
                    }
                    end += r;
                    continue;
                }
                let len = u32::from_le_bytes(buf[start..start + 4].try_into()?) as usize;
                let m: Small = postcard::from_bytes(&buf[start + 8..start + 8 + len])?;
                sum = sum.wrapping_add(m.seq);
                start += 8 + len;
                got += 1;
            }
            std::hint::black_box(sum);
            stream.write_all(&n.to_le_bytes())?;
            stream.read_to_end(&mut Vec::new())?;
            Ok(())
        }
        "raw-fd-sink" => {
            let n = count()?;
            for _ in 0..n {
                if !raw_recv_fd(fd.as_raw_fd())? {
                    bail!("primary closed early");
                }
            }
            let mut stream = UnixStream::from(fd);
            stream.write_all(&n.to_le_bytes())?;
            stream.read_to_end(&mut Vec::new())?;
            Ok(())
        }
        other => bail!("unknown peer mode {other:?}"),
    }
}

async fn echo<T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(
    fd: OwnedFd,
) -> anyhow::Result<()> {
    let (tx, mut rx) = open(fd).await?;
    loop {
        match rx.recv::<T>().await {
            Ok(Incoming::User(msg, _)) => tx.send(&msg).await?,
            Ok(other) => bail!("unexpected {other:?}"),
            Err(e) if e.is_peer_closed() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

async fn drain(mut rx: Receiver) -> anyhow::Result<()> {
    loop {
        match rx.recv_raw().await {
            Ok(_) => {}
            Err(e) if e.is_peer_closed() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
