//! Unit tests of `cargo xtask bench`: the figure lines, targets, rows, the
//! table and the chart from a fixture, the runner on fake bench executables,
//! and one real quick run in the dev profile (outputs in a temp folder).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::chart::{bars, write_svg};
use super::figures::{Better, Measured, parse_line, parse_output};
use super::machine::{Machine, format_utc};
use super::report::{Failure, NodeCell, Report, build_rows, format_number, markdown, table};
use super::target::parse_target;
use super::{Options, discover, runner};

const BENCH_STDOUT: &str = r#"warming up
{"id":"ipc.rtt_small_pinned","what":"IPC round trip, small message, one CPU","unit":"us","better":"lower","ours":8.1,"ours_spread":0.4,"raw":7.0,"raw_spread":0.3,"target":"<= 1.3x raw","extra":[1,2]}
{"id":"ipc.throughput_small","what":"IPC one-way throughput","unit":"per_s","better":"higher","ours":16000000,"ours_spread":500000,"raw":1000000,"raw_spread":20000,"target":">= 15M msg/s"}
{"id":"ipc.rtt_1mib","what":"IPC 1 MiB round trip","unit":"ms","better":"lower","ours":0.8,"ours_spread":0.05,"raw":null,"raw_spread":null,"target":"<= 1 ms"}
{not json
{"id":"threads.start_to_first_msg","what":"Thread start to first message","unit":"us","better":"lower","ours":90,"ours_spread":4,"raw":null,"target":"<= 0.2 ms"}
{"id":"spawn.true_seq","what":"Spawn /bin/true","unit":"per_s","better":"higher","ours":1700,"ours_spread":30,"raw":2000,"raw_spread":25,"target":">= 0.9x raw"}
"#;

const NODE_STDOUT: &str = r#"{"id":"ipc.rtt_small_pinned","what":"x","unit":"us","better":"lower","node":15.9,"node_spread":0.8,"runtime":"node v20"}
{"id":"ipc.throughput_small","what":"x","unit":"per_s","better":"higher","node":370000,"node_spread":9000}
{"id":"ipc.rtt_1mib","what":"x","unit":"ms","better":"lower","node":6,"node_spread":0.5}
"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn machine() -> Machine {
    Machine {
        cpu: "Test CPU".into(),
        cores: 2,
        kernel: "Linux 6".into(),
        rustc: "rustc 1.85".into(),
        node: Some("v20.0.0".into()),
        date: format_utc(0),
    }
}

/// Parses a cell of the table: `—`, `8.10 ± 0.400`, `16.0M`, `1.16`.
fn parse_number(cell: &str) -> Option<f64> {
    let cell = cell.trim();
    let (digits, scale) = match cell.chars().last()? {
        'M' => (&cell[..cell.len() - 1], 1e6),
        'k' => (&cell[..cell.len() - 1], 1e3),
        _ => (cell, 1.0),
    };
    digits.parse::<f64>().ok().map(|v| v * scale)
}

/// Checks every data row of a Markdown table: ten cells, and every numeric
/// column either `—`, a word, or numbers that parse. Returns the row count.
fn check_table(md: &str) -> usize {
    let header = md
        .lines()
        .position(|l| l.starts_with("| figure |"))
        .expect("table header");
    let mut rows = 0;
    for line in md
        .lines()
        .skip(header + 2)
        .take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 10, "row with 10 cells: {line}");
        rows += 1;
        if cells[1].starts_with("failed") {
            continue;
        }
        for (col, cell) in cells.iter().enumerate().skip(3).take(5) {
            if ["—", "not measured", "failed"].contains(cell) {
                continue;
            }
            for part in cell.split(" ± ") {
                assert!(
                    parse_number(part).is_some(),
                    "column {col} of `{line}`: `{part}` does not parse"
                );
            }
        }
        assert!(
            ["yes", "**no**", "?"].contains(&cells[9]),
            "met? cell: {line}"
        );
    }
    rows
}

/// Checks the SVG: well-formed enough, bars whose sizes parse, the labels.
fn check_svg(svg: &str, labels: &[&str]) {
    assert!(svg.trim_start().starts_with("<svg"), "an SVG document");
    assert!(
        svg.trim_end().ends_with("</svg>"),
        "a complete SVG document"
    );
    let mut sizes = 0;
    for attr in ["width=\"", "height=\""] {
        for piece in svg.split(attr).skip(1) {
            let value = piece.split('"').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{attr}{value}\" parses");
            sizes += 1;
        }
    }
    assert!(sizes > 2, "the chart has bars");
    for label in labels {
        assert!(svg.contains(label), "the chart names {label}");
    }
}

#[test]
fn figure_lines_are_read_tolerantly() {
    let figures = parse_output(BENCH_STDOUT);
    assert_eq!(figures.len(), 5, "two noise lines skipped");
    let first = &figures[0];
    assert_eq!(first.id, "ipc.rtt_small_pinned");
    assert_eq!(first.better, Better::Lower);
    assert_eq!(
        first.ours,
        Some(Measured {
            median: 8.1,
            spread: 0.4
        })
    );
    assert_eq!(figures[2].raw, None, "null raw is no raw");
    assert_eq!(figures[1].better, Better::Higher);
    assert_eq!(parse_line("{\"what\":\"no id\"}"), None);
    assert_eq!(parse_line("[1,2]"), None);
    assert_eq!(parse_line(""), None);
    let node = parse_line(NODE_STDOUT.lines().next().unwrap()).expect("node line");
    assert_eq!(node.node.map(|m| m.median), Some(15.9));
    assert_eq!(node.ours, None);
}

#[test]
fn targets_are_read_in_the_rows_unit() {
    let t = parse_target("<= 1.3x raw", "us").unwrap();
    assert!(t.at_most && t.of_raw && (t.value - 1.3).abs() < 1e-9);
    let t = parse_target("≥ 0.9 × raw", "per_s").unwrap();
    assert!(!t.at_most && t.of_raw && (t.value - 0.9).abs() < 1e-9);
    let t = parse_target(">= 15M msg/s", "per_s").unwrap();
    assert!(!t.of_raw && (t.value - 15e6).abs() < 1e-3);
    let t = parse_target("<= 0.2 ms", "us").unwrap();
    assert!((t.value - 200.0).abs() < 1e-9);
    let t = parse_target("<= 5 ms", "ms").unwrap();
    assert!((t.value - 5.0).abs() < 1e-9);
    let t = parse_target("<= 1.05", "ratio").unwrap();
    assert!((t.value - 1.05).abs() < 1e-9);
    assert_eq!(parse_target("as fast as possible", "us"), None);
    // Remarks in parentheses, as the crates' benches write them.
    let t = parse_target(">= 20M/s (raw: bare crossbeam channel)", "per_s").unwrap();
    assert!(!t.of_raw && (t.value - 20e6).abs() < 1e-3);
    let t = parse_target("<= 1.5x raw (eventfd ping-pong)", "us").unwrap();
    assert!(t.of_raw && (t.value - 1.5).abs() < 1e-9);
    let t = parse_target(">= 2.6e6 per_s (1% of a 26k/s hand-off)", "per_s").unwrap();
    assert!(!t.of_raw && (t.value - 2.6e6).abs() < 1e-3);
    let t = parse_target(">= 15000000", "per_s").unwrap();
    assert!((t.value - 15e6).abs() < 1e-3);
    let t = parse_target(">= 1.9 (raw: 2.0, the ideal)", "ratio").unwrap();
    assert!(!t.of_raw && (t.value - 1.9).abs() < 1e-9);
    let t = parse_target("<= 5 ms median", "ms").unwrap();
    assert!(t.at_most && (t.value - 5.0).abs() < 1e-9);
}

#[test]
fn numbers_are_formatted_with_three_significant_digits() {
    assert_eq!(format_number(8.1), "8.10");
    assert_eq!(format_number(0.4123), "0.412");
    assert_eq!(format_number(830.0), "830");
    assert_eq!(format_number(23_700.0), "23.7k");
    assert_eq!(format_number(16_000_000.0), "16.0M");
    assert_eq!(format_number(0.0), "0");
}

#[test]
fn dates_are_utc() {
    assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
    assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
}

#[test]
fn rows_combine_rounds_and_judge_targets() {
    let ours = vec![parse_output(BENCH_STDOUT), parse_output(BENCH_STDOUT)];
    let node = vec![parse_output(NODE_STDOUT), Vec::new()];
    let failures = vec![Failure {
        source: "bench/node/threads.js".into(),
        reason: "exited with 1".into(),
        node_prefix: Some("threads".into()),
    }];
    let rows = build_rows(&ours, Some(&node), &failures);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "spawn.true_seq",
            "ipc.rtt_small_pinned",
            "ipc.throughput_small",
            "ipc.rtt_1mib",
            "threads.start_to_first_msg"
        ],
        "the report's order"
    );
    let pinned = &rows[1];
    assert!((pinned.ours_over_raw.unwrap() - 8.1 / 7.0).abs() < 1e-9);
    assert_eq!(pinned.met(), Some(true));
    assert!((pinned.node_over_raw.unwrap() - 15.9 / 7.0).abs() < 1e-9);
    assert_eq!(rows[0].met(), Some(false), "1700/2000 < 0.9");
    assert_eq!(rows[2].met(), Some(true), "16M >= 15M");
    assert_eq!(rows[3].met(), Some(true), "0.8 ms <= 1 ms");
    assert_eq!(rows[4].met(), Some(true), "90 us <= 200 us");
    assert_eq!(rows[0].node, NodeCell::Absent, "no Node line for spawn");
    assert_eq!(rows[4].node, NodeCell::Failed, "threads.js failed");

    let without_node = build_rows(&ours, None, &[]);
    assert!(without_node.iter().all(|r| r.node == NodeCell::NotMeasured));
    let text = table(&without_node, &[]);
    assert!(text.contains("not measured"));
}

#[test]
fn fixture_report_has_a_table_and_a_chart_whose_numbers_parse() {
    let ours = vec![parse_output(BENCH_STDOUT)];
    let node = vec![parse_output(NODE_STDOUT)];
    let failures = vec![Failure {
        source: "cluster-core/restart".into(),
        reason: "exited with exit status: 101".into(),
        node_prefix: None,
    }];
    let rows = build_rows(&ours, Some(&node), &failures);
    let report = Report {
        machine: machine(),
        quick: true,
        release: false,
        rounds: 1,
        args: vec!["--quick".into()],
        rows,
        failures,
    };
    let md = markdown(&report, "benchmarks.svg");
    assert_eq!(check_table(&md), 6, "five figures and one failed bench");
    assert!(md.contains("| `cluster-core/restart` | failed: exited with"));
    assert!(md.contains("Targets met: 4 of 5 judged (0 row(s)"), "{md}");
    assert!(
        md.contains("ours is better on 3 of 3 rows measured by both"),
        "{md}"
    );
    assert!(md.contains("Test CPU, 2 cores"));
    assert!(md.contains("`cargo xtask bench --quick`"));
    assert!(md.contains("![") && md.contains("(benchmarks.svg)"));

    let chart_bars = bars(&report.rows);
    assert_eq!(chart_bars.len(), 5);
    let tput = chart_bars
        .iter()
        .find(|b| b.label == "ipc.throughput_small")
        .unwrap();
    assert!(
        (tput.ours.unwrap() - 1e6 / 16e6).abs() < 1e-9,
        "higher is better: raw/ours"
    );
    let mib = chart_bars
        .iter()
        .find(|b| b.label.starts_with("ipc.rtt_1mib"))
        .unwrap();
    assert!(mib.label.ends_with('†'), "drawn against its target");
    assert!((mib.ours.unwrap() - 0.8).abs() < 1e-9);
    assert!((mib.node.unwrap() - 6.0).abs() < 1e-9);

    let dir = temp_dir("fixture");
    let svg = dir.join("chart.svg");
    write_svg(&svg, &chart_bars, "fixture").expect("chart written");
    let text = std::fs::read_to_string(&svg).expect("chart read");
    check_svg(
        &text,
        &[
            "ipc.rtt_small_pinned",
            "spawn.true_seq",
            "Node.js 20",
            "ours",
        ],
    );
    // Each bar's figure is written beside it, and parses.
    let values: Vec<f64> = text
        .split('>')
        .filter_map(|piece| piece.split('<').next()?.trim().strip_suffix('×'))
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        values.contains(&1.16),
        "ours/raw of the pinned round trip: {values:?}"
    );
    assert!(
        values.contains(&6.0),
        "Node's 1 MiB round trip against its 1 ms target"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_empty_report_still_writes_a_table_and_a_chart() {
    let report = Report {
        machine: machine(),
        quick: false,
        release: true,
        rounds: 2,
        args: Vec::new(),
        rows: Vec::new(),
        failures: Vec::new(),
    };
    assert_eq!(check_table(&markdown(&report, "b.svg")), 0);
    let dir = temp_dir("empty");
    write_svg(&dir.join("b.svg"), &[], "empty").expect("empty chart written");
    let text = std::fs::read_to_string(dir.join("b.svg")).expect("chart read");
    assert!(text.contains("</svg>"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn script(dir: &Path, name: &str, body: &str) -> Command {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script written");
    let mut command = Command::new("/bin/sh");
    command.arg(path);
    command
}

#[test]
fn runner_collects_stdout_and_reports_failures_and_timeouts() {
    let dir = temp_dir("runner");
    let good = script(
        &dir,
        "good.sh",
        &format!("echo 'human text' >&2\ncat <<'EOF'\n{BENCH_STDOUT}EOF"),
    );
    let outcome = runner::run(good, Duration::from_secs(30));
    assert_eq!(outcome.failure, None);
    assert_eq!(parse_output(&outcome.stdout).len(), 5);

    let failing = script(
        &dir,
        "failing.sh",
        "echo '{\"id\":\"a.b\",\"ours\":1}'\nexit 3",
    );
    let outcome = runner::run(failing, Duration::from_secs(30));
    let failure = outcome.failure.expect("a failure");
    assert!(failure.contains('3'), "{failure}");
    assert_eq!(
        parse_output(&outcome.stdout).len(),
        1,
        "partial figures kept"
    );

    let hanging = script(
        &dir,
        "hanging.sh",
        "echo '{\"id\":\"a.c\"}'\nsleep 30 &\nwait",
    );
    let started = std::time::Instant::now();
    let outcome = runner::run(hanging, Duration::from_millis(300));
    assert!(outcome.failure.expect("a failure").contains("timed out"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the whole group killed"
    );
    assert_eq!(parse_output(&outcome.stdout).len(), 1);

    let binary = script(
        &dir,
        "binary.sh",
        "printf 'caf\\377\\n'\necho '{\"id\":\"a.d\",\"ours\":2}'",
    );
    let outcome = runner::run(binary, Duration::from_secs(30));
    assert_eq!(outcome.failure, None);
    assert_eq!(
        parse_output(&outcome.stdout).len(),
        1,
        "read past a non-UTF-8 line"
    );

    let missing = runner::run(Command::new(dir.join("nope")), Duration::from_secs(5));
    assert!(
        missing
            .failure
            .expect("a failure")
            .contains("could not start")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_targets_are_discovered_from_cargo_metadata() {
    let metadata = r#"{"packages":[
      {"id":"a 0.1","name":"cluster-ipc","manifest_path":"/w/cluster-ipc/Cargo.toml","targets":[
        {"kind":["lib"],"name":"cluster_ipc"},{"kind":["bench"],"name":"ipc"},{"kind":["test"],"name":"it"}]},
      {"id":"x 0.0","name":"xtask","manifest_path":"/w/xtask/Cargo.toml","targets":[{"kind":["bench"],"name":"no"}]},
      {"id":"b 0.1","name":"spawn-core","manifest_path":"/w/spawn-core/Cargo.toml","targets":[{"kind":["bench"],"name":"spawn"}]}
    ],"workspace_members":["a 0.1","b 0.1","x 0.0"]}"#;
    let targets = discover(metadata).expect("metadata parsed");
    let labels: Vec<String> = targets
        .iter()
        .map(|t| format!("{}/{}", t.package, t.name))
        .collect();
    assert_eq!(labels, ["cluster-ipc/ipc", "spawn-core/spawn"]);
    assert_eq!(
        targets[1].manifest_path,
        Path::new("/w/spawn-core/Cargo.toml")
    );
}

#[test]
fn options_are_parsed() {
    let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let quick = Options::parse(&args("--quick --out /tmp/x --only ipc --only spawn")).unwrap();
    assert!(quick.quick && !quick.release && quick.rounds == 1 && quick.node);
    assert_eq!(quick.only, ["ipc", "spawn"]);
    assert_eq!(quick.out.as_deref(), Some(Path::new("/tmp/x")));
    let full = Options::parse(&args("--no-node --rounds 3")).unwrap();
    assert!(!full.quick && full.release && full.rounds == 3 && !full.node);
    assert!(!Options::parse(&args("--debug")).unwrap().release);
    assert!(Options::parse(&args("--quick --release")).unwrap().release);
    assert!(Options::parse(&args("--frobnicate")).is_err());
    assert!(Options::parse(&args("--out")).is_err());
}

/// One real run of the machinery: the workspace's spawn bench (when it is
/// there) and `bench/node/spawn.js` (when `node` is), quick, dev profile.
#[test]
fn real_quick_run_writes_a_table_and_a_chart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    let dir = temp_dir("real");
    let args: Vec<String> = ["--quick", "--only", "spawn", "--out"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([dir.display().to_string()])
        .collect();
    super::run(root, &args).expect("the report runs");
    let md = std::fs::read_to_string(dir.join("benchmarks.md")).expect("table written");
    let rows = check_table(&md);
    let metadata = super::cargo_output(root, &["metadata", "--format-version", "1", "--no-deps"])
        .expect("cargo metadata");
    let spawn_benches = discover(&metadata)
        .expect("metadata parsed")
        .into_iter()
        .filter(|t| t.package.contains("spawn") || t.name.contains("spawn"))
        .count();
    if spawn_benches > 0 {
        assert!(
            rows >= 1,
            "the spawn bench's figures are in the table:\n{md}"
        );
    }
    assert!(md.contains("- Machine: "));
    let svg = std::fs::read_to_string(dir.join("benchmarks.svg")).expect("chart written");
    assert!(svg.contains("</svg>"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn runs_past_the_budget_are_skipped() {
    let now = std::time::Instant::now();
    assert!(super::time_left(now, Duration::from_secs(5)).is_err());
    let left = super::time_left(now + Duration::from_secs(60), Duration::from_secs(5));
    assert_eq!(left, Ok(Duration::from_secs(5)));
    let left = super::time_left(now + Duration::from_secs(3), Duration::from_secs(5)).unwrap();
    assert!(left <= Duration::from_secs(3));
}
