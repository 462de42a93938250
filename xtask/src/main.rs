//! The workspace's own tasks, run as `cargo xtask <task>`.
//!
//! - `cargo xtask test`: the one gate. Formatting, clippy with warnings denied,
//!   every test of the workspace (under cargo-nextest when it is installed),
//!   every doc test, and the `tidy` check of the codebase itself. It stops at
//!   the first failing step and names it.
//! - `cargo xtask tidy`: only the tidy check.
//! - `cargo xtask bench [--quick] [--out DIR]`: every bench of the workspace
//!   and its Node.js counterpart in one Markdown table and one SVG chart
//!   (see `bench.rs`).
//! - `cargo xtask deploy-sim`: as root, a three-host rolling deploy of the
//!   demo behind HAProxy in network namespaces (see `deploy.rs`). Not part
//!   of `test` (it needs root and installs `haproxy`).
//!
//! Like rust-analyzer's xtask, this crate stays light: `anyhow`, plus
//! `serde_json` (cargo metadata and the benches' JSON lines) and `plotters`
//! with only its SVG backend (the bench chart). It calls cargo through
//! `$CARGO` so that it uses the same toolchain that started it.

mod bench;
mod deploy;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test    the one gate: fmt, clippy, tests, doc tests, tidy
  tidy    check the codebase's own conventions
  bench   every bench and its Node.js counterpart: table and chart
          (`cargo xtask bench --help` for options)
  deploy-sim  as root: 3 hosts (network namespaces) behind HAProxy, a
          rolling upgrade, reload and a killed primary under load
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("tidy") => run_tidy(&root),
        Some("bench") if args.iter().any(|a| a == "--help" || a == "-h") => {
            print!("{}", bench::USAGE);
            Ok(())
        }
        Some("bench") => bench::run(&root, &args[1..]),
        Some("deploy-sim") if args.iter().any(|a| a == "--help" || a == "-h") => {
            print!("{}", deploy::USAGE);
            Ok(())
        }
        Some("deploy-sim") => deploy::run(&root),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

/// The gate: each step in order, stopping at the first failure.
fn test(root: &Path) -> anyhow::Result<()> {
    let nextest = has_nextest();
    let mut steps: Vec<(&str, Vec<&str>)> = vec![
        ("fmt", vec!["fmt", "--all", "--check"]),
        (
            "clippy",
            vec![
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    // The libraries as their users get them: without dev-dependencies,
    // which turn cluster-core's HTTP features on for its examples and tests.
    steps.push((
        "clippy (default features)",
        vec!["clippy", "--workspace", "--locked", "--", "-D", "warnings"],
    ));
    if nextest {
        steps.push((
            "tests (nextest)",
            vec![
                "nextest",
                "run",
                "--workspace",
                "--all-targets",
                "--locked",
                "--profile",
                "ci",
                "--no-tests",
                "warn",
            ],
        ));
    } else {
        steps.push((
            "tests",
            vec!["test", "--workspace", "--all-targets", "--locked"],
        ));
    }
    steps.push((
        "doc tests",
        vec!["test", "--workspace", "--doc", "--locked"],
    ));

    for (name, args) in &steps {
        step(name, || cargo(root, args))?;
    }
    step("tidy", || run_tidy(root))?;
    eprintln!("xtask test: all steps passed");
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    eprintln!("==> xtask test: {name}");
    let started = std::time::Instant::now();
    f().with_context(|| format!("xtask test: step `{name}` failed"))?;
    eprintln!(
        "==> xtask test: {name} passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_tidy(root: &Path) -> anyhow::Result<()> {
    let report = tidy::check_tree(root)?;
    for note in &report.notes {
        eprintln!("tidy: {note}");
    }
    if report.problems.is_empty() {
        return Ok(());
    }
    for problem in &report.problems {
        eprintln!("tidy: {problem}");
    }
    bail!("{} tidy problem(s)", report.problems.len())
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start `cargo {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` exited with {status}", args.join(" "));
    }
    Ok(())
}

fn has_nextest() -> bool {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn workspace_root() -> PathBuf {
    // xtask lives at <root>/xtask.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}
