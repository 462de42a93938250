//! `cargo xtask bench`: every bench of the workspace and its Node.js
//! counterpart, side by side, in one Markdown table and one SVG chart.
//!
//! 1. Finds the bench targets of the workspace (`cargo metadata`).
//! 2. Builds them with `cargo bench --no-run` (release; the dev profile with
//!    `--quick` or `--debug`), then runs each executable with `--bench`
//!    (and `--quick`), bounded in time. Repetitions and the A B A B
//!    interleaving of ours against the raw OS baseline happen inside each
//!    bench; here, rounds of "every bench, then every Node script" alternate
//!    (two rounds in a full run) and the rounds' medians are combined. Each
//!    run has its own time limit, and all runs together a budget (100 s with
//!    `--quick`, 13 minutes otherwise): what would overrun it is skipped.
//! 3. Runs `bench/node/*.js` with `node` when it is on the PATH.
//! 4. Prints the table and writes `benchmarks.md` and `benchmarks.svg` into
//!    the output folder: `--out DIR`, else `docs/` (`target/benchmarks/`
//!    with `--quick`, so that a quick run never overwrites the report).
//!
//! A bench that fails to build or run is a "failed" row, not the end of the
//! report; a crate without a bench simply has no row.

mod chart;
mod figures;
mod machine;
mod report;
mod runner;
mod target;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use self::figures::{Figure, parse_output};
use self::machine::Machine;
use self::report::{Failure, Report, build_rows, markdown};

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench [--quick] [--out DIR] [options]

  --quick       tiny workloads, one round, dev profile (under 2 minutes)
  --out DIR     where benchmarks.md and benchmarks.svg go (default: docs/,
                and target/benchmarks/ with --quick, so that a quick run
                never overwrites the committed report)
  --debug       build in the dev profile even in a full run
  --release     build in release even with --quick
  --rounds N    rounds of benches then Node scripts (default: 2, quick: 1)
  --only TEXT   only benches and Node scripts whose name contains TEXT
                (repeatable)
  --no-node     do not run the Node.js scripts even if node is on the PATH
";

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) out: Option<PathBuf>,
    pub(crate) release: bool,
    pub(crate) rounds: usize,
    pub(crate) only: Vec<String>,
    pub(crate) node: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<Options> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut options = Options {
            quick,
            out: None,
            release: !quick,
            rounds: if quick { 1 } else { 2 },
            only: Vec::new(),
            node: true,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("`{name}` needs a value\n\n{USAGE}"))
            };
            match arg.as_str() {
                "--quick" => {}
                "--debug" => options.release = false,
                "--release" => options.release = true,
                "--no-node" => options.node = false,
                "--out" => options.out = Some(PathBuf::from(value("--out")?)),
                "--only" => options.only.push(value("--only")?),
                "--rounds" => {
                    let n: usize = value("--rounds")?
                        .parse()
                        .context("`--rounds` takes a number")?;
                    options.rounds = n.clamp(1, 10);
                }
                other => bail!("unknown option `{other}`\n\n{USAGE}"),
            }
        }
        Ok(options)
    }

    fn selects(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }

    fn bench_timeout(&self) -> Duration {
        Duration::from_secs(if self.quick { 60 } else { 300 })
    }

    fn node_timeout(&self) -> Duration {
        Duration::from_secs(if self.quick { 60 } else { 180 })
    }

    /// The budget of all the runs together (the build comes before it).
    fn run_budget(&self) -> Duration {
        Duration::from_secs(if self.quick { 100 } else { 13 * 60 })
    }
}

/// What is left of the runs' budget, or why the next run is skipped.
fn time_left(deadline: Instant, own: Duration) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_secs(1) {
        Err("skipped: the run's time budget was spent".to_owned())
    } else {
        Ok(left.min(own))
    }
}

/// A bench target of a workspace member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BenchTarget {
    pub(crate) package: String,
    pub(crate) name: String,
    pub(crate) manifest_path: PathBuf,
}

impl BenchTarget {
    fn label(&self) -> String {
        format!("{}/{}", self.package, self.name)
    }
}

/// Runs the whole report.
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let started = Instant::now();
    let out_dir = options.out.clone().unwrap_or_else(|| {
        if options.quick {
            root.join("target/benchmarks")
        } else {
            root.join("docs")
        }
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let metadata = cargo_output(root, &["metadata", "--format-version", "1", "--no-deps"])?;
    let targets: Vec<BenchTarget> = discover(&metadata)?
        .into_iter()
        .filter(|t| options.selects(&t.label()))
        .collect();
    eprintln!(
        "xtask bench: {} bench target(s): {}",
        targets.len(),
        targets
            .iter()
            .map(BenchTarget::label)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut failures = Vec::new();
    let executables = build(root, &targets, options.release, &mut failures);

    let node = options.node.then(find_node).flatten();
    let scripts = if node.is_some() {
        node_scripts(&root.join("bench/node"), &options)?
    } else {
        eprintln!("xtask bench: no `node` on the PATH (or --no-node): Node column not measured");
        Vec::new()
    };

    let (ours_rounds, node_rounds) = run_rounds(
        root,
        &options,
        &executables,
        node.as_deref().map(|n| (n, scripts.as_slice())),
        &mut failures,
    );

    let rows = build_rows(
        &ours_rounds,
        node.is_some().then_some(node_rounds.as_slice()),
        &failures,
    );
    let report = Report {
        machine: Machine::describe(node.as_deref()),
        quick: options.quick,
        release: options.release,
        rounds: options.rounds,
        args: args.to_vec(),
        rows,
        failures,
    };
    let mut page = markdown(&report, "benchmarks.svg");
    print!("{page}");
    page.push_str(&committed_reports(root));
    let md_path = out_dir.join("benchmarks.md");
    std::fs::write(&md_path, &page).with_context(|| format!("writing {}", md_path.display()))?;
    let svg_path = out_dir.join("benchmarks.svg");
    chart::write_svg(
        &svg_path,
        &chart::bars(&report.rows),
        "Cost against the raw OS limit: ours and Node.js (1 = raw, lower is better)",
    )?;
    eprintln!(
        "xtask bench: wrote {} and {} in {:.0}s ({} failure(s))",
        md_path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64(),
        report.failures.len()
    );
    Ok(())
}

/// The reports other bench scripts committed under `bench/results/`
/// (`bench/procwork-vs-pm2.sh`'s), each kept as a section of the page, so
/// that a new `cargo xtask bench` run does not drop them: their headings
/// one level down, in file-name order.
fn committed_reports(root: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("bench/results"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    let mut out = String::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let rel = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        out.push_str(&format!(
            "\n<!-- From `{rel}`, kept as it was committed. -->\n\n"
        ));
        for line in text.lines() {
            if line.starts_with('#') {
                out.push('#');
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The rounds: every bench, then every Node script, `options.rounds` times.
/// Returns the figures of our benches and Node's, one list per round.
fn run_rounds(
    root: &Path,
    options: &Options,
    executables: &[(BenchTarget, PathBuf)],
    node: Option<(&str, &[PathBuf])>,
    failures: &mut Vec<Failure>,
) -> (Vec<Vec<Figure>>, Vec<Vec<Figure>>) {
    let deadline = Instant::now() + options.run_budget();
    let quick = options.quick.then_some("--quick");
    let mut ours_rounds = Vec::new();
    let mut node_rounds = Vec::new();
    for round in 1..=options.rounds {
        let mut ours = Vec::new();
        for (target, exe) in executables {
            eprintln!("xtask bench: round {round}: {}", target.label());
            let mut command = Command::new(exe);
            command.arg("--bench").args(quick);
            if let Some(dir) = target.manifest_path.parent() {
                command.current_dir(dir);
            }
            let outcome = run_bounded(command, deadline, options.bench_timeout());
            let figures = parse_output(&outcome.stdout);
            if let Some(reason) = outcome.failure {
                push_failure(failures, target.label(), reason, None);
            } else if figures.is_empty() {
                push_failure(failures, target.label(), "printed no figure".into(), None);
            }
            ours.extend(figures);
        }
        ours_rounds.push(ours);

        let mut nodes = Vec::new();
        for script in node.map_or(&[][..], |(_, scripts)| scripts) {
            let name = format!("bench/node/{}", file_name(script));
            eprintln!("xtask bench: round {round}: {name}");
            let mut command = Command::new(node.map_or("node", |(program, _)| program));
            command.arg(script).args(quick).current_dir(root);
            let outcome = run_bounded(command, deadline, options.node_timeout());
            if let Some(reason) = outcome.failure {
                push_failure(failures, name, reason, Some(node_prefix(script)));
            }
            nodes.extend(parse_output(&outcome.stdout));
        }
        node_rounds.push(nodes);
    }
    (ours_rounds, node_rounds)
}

/// Runs `command` for at most its own limit and what is left of the budget.
fn run_bounded(command: Command, deadline: Instant, own: Duration) -> runner::Outcome {
    match time_left(deadline, own) {
        Ok(timeout) => runner::run(command, timeout),
        Err(reason) => runner::Outcome {
            stdout: String::new(),
            failure: Some(reason),
        },
    }
}

fn push_failure(
    failures: &mut Vec<Failure>,
    source: String,
    reason: String,
    prefix: Option<String>,
) {
    eprintln!("xtask bench: {source} failed: {reason}");
    if !failures.iter().any(|f| f.source == source) {
        failures.push(Failure {
            source,
            reason,
            node_prefix: prefix,
        });
    }
}

/// The bench targets of the workspace members, from `cargo metadata` output.
pub(crate) fn discover(metadata: &str) -> anyhow::Result<Vec<BenchTarget>> {
    let value: Value = serde_json::from_str(metadata).context("parsing `cargo metadata`")?;
    let members: Vec<&str> = value["workspace_members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut targets = Vec::new();
    for package in value["packages"].as_array().into_iter().flatten() {
        let id = package["id"].as_str().unwrap_or_default();
        let name = package["name"].as_str().unwrap_or_default();
        if !members.contains(&id) || name == "xtask" {
            continue;
        }
        let manifest_path = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bench = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"));
            if let (true, Some(bench)) = (is_bench, target["name"].as_str()) {
                targets.push(BenchTarget {
                    package: name.to_owned(),
                    name: bench.to_owned(),
                    manifest_path: manifest_path.clone(),
                });
            }
        }
    }
    targets.sort_by_key(BenchTarget::label);
    Ok(targets)
}

/// Builds every target at once, or one by one if that fails, so that one
/// broken crate does not hide the others. Returns each built executable.
fn build(
    root: &Path,
    targets: &[BenchTarget],
    release: bool,
    failures: &mut Vec<Failure>,
) -> Vec<(BenchTarget, PathBuf)> {
    if targets.is_empty() {
        return Vec::new();
    }
    if let Ok(mut built) = build_some(root, targets, release) {
        // In the order of `targets`, not of cargo's messages.
        built.sort_by_key(|(t, _)| targets.iter().position(|x| x == t));
        return built;
    }
    let mut built = Vec::new();
    for target in targets {
        match build_some(root, std::slice::from_ref(target), release) {
            Ok(mut one) => built.append(&mut one),
            Err(e) => push_failure(failures, target.label(), format!("build: {e:#}"), None),
        }
    }
    built
}

fn build_some(
    root: &Path,
    targets: &[BenchTarget],
    release: bool,
) -> anyhow::Result<Vec<(BenchTarget, PathBuf)>> {
    let mut args: Vec<&str> = vec![
        "bench",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ];
    if !release {
        args.extend(["--profile", "dev"]);
    }
    for target in targets {
        args.extend(["--package", &target.package, "--bench", &target.name]);
    }
    let stdout = cargo_output(root, &args)?;
    let mut built = Vec::new();
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (
            message["executable"].as_str(),
            message["target"]["name"].as_str(),
        ) else {
            continue;
        };
        let manifest = message["manifest_path"].as_str().map(Path::new);
        let is_bench = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bench"));
        if let Some(target) = targets
            .iter()
            .find(|t| is_bench && t.name == name && manifest == Some(t.manifest_path.as_path()))
        {
            built.push((target.clone(), PathBuf::from(exe)));
        }
    }
    Ok(built)
}

pub(crate) fn cargo_output(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `cargo {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!("`cargo {}` exited with {}", args.join(" "), out.status);
    }
    String::from_utf8(out.stdout).context("cargo printed non-UTF-8 output")
}

fn find_node() -> Option<String> {
    let ok = Command::new("node")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| "node".to_owned())
}

/// The top-level `*.js` files of `bench/node/`, sorted, that `--only` selects.
fn node_scripts(dir: &Path, options: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let mut scripts = Vec::new();
    if !dir.is_dir() {
        return Ok(scripts);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "js") && options.selects(&file_name(&path)) {
            scripts.push(path);
        }
    }
    scripts.sort();
    Ok(scripts)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// `cluster_restart.js` owes the Node cells of the `cluster.*` rows.
fn node_prefix(script: &Path) -> String {
    let stem = script
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    stem.split(['_', '.']).next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests;
