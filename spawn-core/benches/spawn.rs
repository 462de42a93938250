//! Workload: sequential spawn + wait of `/bin/true`, with inherited stdio.
//!
//! Rows (one JSON line each on stdout, the workspace's bench convention):
//! - `spawn.true_seq`: `Command::new("/bin/true").spawn()?.wait().await` on a
//!   current-thread tokio runtime;
//! - `spawn.true_seq_blocking`: `Command::status_blocking`, no runtime.
//!
//! Both in spawns per second, better higher, beside the raw OS figure: a
//! bare `posix_spawn` + `waitpid` loop written here with libc, measured in
//! the same run, interleaved raw / async / blocking over several repetitions.
//! Good is ≥ 0.9 × raw (Node.js's `child_process.spawn`: docs/benchmarks.md).
//! Figures are medians of the repetitions; spread is (max - min) / 2.
//!
//! `--quick` runs a tiny workload (a few seconds even in a debug build);
//! A debug build run without `--bench` (that is `cargo test --all-targets`)
//! also runs the quick workload, as a smoke test.
//! `--list` (how cargo-nextest asks a binary for its tests) lists one test,
//! `quick_smoke`, so `nextest run --all-targets` runs the quick workload as
//! a smoke test; other arguments (cargo passes `--bench`) are ignored.

use std::ffi::CString;
use std::time::Instant;

use anyhow::{Context, bail};
use spawn_core::{Close, Command};

unsafe extern "C" {
    static environ: *const *mut libc::c_char;
}

fn main() -> anyhow::Result<()> {
    // cargo-nextest lists a binary's tests with `--list`: offer one smoke
    // test, which runs the quick workload (no `--bench` below).
    if std::env::args().any(|a| a == "--list") {
        if !std::env::args().any(|a| a == "--ignored") {
            println!("quick_smoke: test");
        }
        return Ok(());
    }
    let args: Vec<String> = std::env::args().collect();
    let under_cargo_test = cfg!(debug_assertions) && !args.iter().any(|a| a == "--bench");
    let quick = under_cargo_test || args.iter().any(|a| a == "--quick");
    let (reps, n) = if quick { (3, 30) } else { (7, 1500) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Warm-up: page cache, tokio's SIGCHLD handler.
    raw_spawns(20)?;
    runtime.block_on(async_spawns(20))?;

    let (mut raw, mut ours, mut blocking) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        raw.push(rate(n, || raw_spawns(n))?);
        ours.push(rate(n, || runtime.block_on(async_spawns(n)))?);
        blocking.push(rate(n, || blocking_spawns(n))?);
        eprintln!(
            "rep {rep}: raw {:.0}/s, async {:.0}/s, blocking {:.0}/s",
            raw[rep], ours[rep], blocking[rep]
        );
    }
    paired("spawn.true_seq", &ours, &raw);
    paired("spawn.true_seq_blocking", &blocking, &raw);
    let raw = stats(&raw);
    row(
        "spawn.true_seq",
        "sequential spawn + wait of /bin/true (async)",
        stats(&ours),
        raw,
    );
    row(
        "spawn.true_seq_blocking",
        "sequential spawn + wait of /bin/true (blocking)",
        stats(&blocking),
        raw,
    );
    Ok(())
}

fn rate(n: usize, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn async_spawns(n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        let close = Command::new("/bin/true").spawn()?.wait().await?;
        if close != Close::Exited(0) {
            bail!("/bin/true closed with {close}");
        }
    }
    Ok(())
}

fn blocking_spawns(n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        let close = Command::new("/bin/true").status_blocking()?;
        if close != Close::Exited(0) {
            bail!("/bin/true closed with {close}");
        }
    }
    Ok(())
}

/// The raw baseline: bare `posix_spawn` + `waitpid`.
fn raw_spawns(n: usize) -> anyhow::Result<()> {
    let path = CString::new("/bin/true")?;
    let argv = [path.as_ptr().cast_mut(), std::ptr::null_mut()];
    for _ in 0..n {
        let mut pid: libc::pid_t = 0;
        // SAFETY: path and argv are NUL-terminated and outlive the call;
        // null file actions and attributes are allowed; environ is the
        // process's environment.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                argv.as_ptr(),
                environ,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc)).context("posix_spawn");
        }
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(std::io::Error::last_os_error()).context("waitpid");
        }
        if status != 0 {
            bail!("/bin/true returned status {status}");
        }
    }
    Ok(())
}

/// The median of the per-repetition ratios, less sensitive to a noisy
/// machine than the ratio of medians (stderr only).
fn paired(id: &str, ours: &[f64], raw: &[f64]) {
    let ratios: Vec<f64> = ours.iter().zip(raw).map(|(o, r)| o / r).collect();
    let s = stats(&ratios);
    eprintln!(
        "{id}: paired ratio {:.2} (spread {:.2})",
        s.median, s.spread
    );
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    spread: f64,
}

fn stats(xs: &[f64]) -> Stats {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let spread = (sorted[sorted.len() - 1] - sorted[0]) / 2.0;
    Stats { median, spread }
}

fn row(id: &str, what: &str, ours: Stats, raw: Stats) {
    println!(
        r#"{{"id":"{id}","what":"{what}","unit":"per_s","better":"higher","ours":{:.1},"ours_spread":{:.1},"raw":{:.1},"raw_spread":{:.1},"target":">= 0.9x raw"}}"#,
        ours.median, ours.spread, raw.median, raw.spread
    );
    eprintln!("{id}: {:.2} x raw", ours.median / raw.median);
}
