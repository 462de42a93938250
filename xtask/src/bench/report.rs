//! The report: rows built from every round's figures, judged against their
//! targets, and the Markdown page with its table.

use std::fmt::Write as _;

use super::figures::{Better, Figure, Measured, combine, median};
use super::machine::Machine;
use super::target::parse_target;

/// Ids in the report's order (spawn, IPC, cluster, HTTP, scheduling,
/// threads, the user-level rows: the order of the table in
/// `docs/benchmarks.md`); others follow in the order they were first
/// printed.
const ORDER: &[&str] = &[
    "spawn.",
    "ipc.rtt_small_pinned",
    "ipc.rtt_small",
    "ipc.throughput_small",
    "ipc.rtt_1mib",
    "ipc.fd_pass",
    "ipc.",
    "cluster.restart_to_online",
    "cluster.",
    "http.rr_conn_per_s",
    "http.none_conn_per_s",
    "http.rr_fairness",
    "http.",
    "sched.",
    "threads.rtt_pinned",
    "threads.rtt",
    "threads.throughput",
    "threads.start_to_first_msg",
    "threads.pool_speedup_fib30",
    "threads.",
];

/// The Node.js cell of a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum NodeCell {
    /// `node` is not on the PATH.
    NotMeasured,
    /// Node has no counterpart for this figure.
    Absent,
    /// The Node script for this figure failed.
    Failed,
    /// Node's figure.
    Measured(Measured),
}

/// One row of the table: one figure, every round combined.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) what: String,
    pub(crate) unit: String,
    pub(crate) better: Better,
    pub(crate) target: Option<String>,
    pub(crate) ours: Option<Measured>,
    pub(crate) raw: Option<Measured>,
    /// Median over rounds of ours/raw, each taken within one bench run.
    pub(crate) ours_over_raw: Option<f64>,
    pub(crate) node: NodeCell,
    pub(crate) node_over_raw: Option<f64>,
}

/// A bench or a Node script that did not finish well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// `package/bench` or `bench/node/<script>.js`.
    pub(crate) source: String,
    pub(crate) reason: String,
    /// For a Node script: the id prefix (`ipc`) whose Node cells it owes.
    pub(crate) node_prefix: Option<String>,
}

/// Everything the Markdown page and the chart are made from.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) quick: bool,
    /// Whether the benches were built in release (else the dev profile).
    pub(crate) release: bool,
    pub(crate) rounds: usize,
    /// The xtask arguments of this run, for the "reproduce" line.
    pub(crate) args: Vec<String>,
    pub(crate) rows: Vec<Row>,
    pub(crate) failures: Vec<Failure>,
}

/// Builds the rows from our benches' rounds and Node's rounds (`None` when
/// `node` is not on the PATH). Rows exist only for figures our benches printed.
pub(crate) fn build_rows(
    ours_rounds: &[Vec<Figure>],
    node_rounds: Option<&[Vec<Figure>]>,
    failures: &[Failure],
) -> Vec<Row> {
    let mut ids: Vec<&Figure> = Vec::new();
    for figure in ours_rounds.iter().flatten() {
        if !ids.iter().any(|f| f.id == figure.id) {
            ids.push(figure);
        }
    }
    let mut rows: Vec<Row> = ids
        .into_iter()
        .map(|first| {
            let same: Vec<&Figure> = ours_rounds
                .iter()
                .flatten()
                .filter(|f| f.id == first.id)
                .collect();
            let ours: Vec<Measured> = same.iter().filter_map(|f| f.ours).collect();
            let raw: Vec<Measured> = same.iter().filter_map(|f| f.raw).collect();
            let ratios: Vec<f64> = same
                .iter()
                .filter_map(|f| Some(f.ours?.median / nonzero(f.raw?.median)?))
                .collect();
            let raw = combine(&raw);
            let node = node_cell(&first.id, node_rounds, failures);
            let node_over_raw = match (node, raw) {
                (NodeCell::Measured(n), Some(r)) => nonzero(r.median).map(|r| n.median / r),
                _ => None,
            };
            Row {
                id: first.id.clone(),
                what: first.what.clone(),
                unit: first.unit.clone(),
                better: first.better,
                target: first.target.clone(),
                ours: combine(&ours),
                raw,
                ours_over_raw: median(&ratios),
                node,
                node_over_raw,
            }
        })
        .collect();
    rows.sort_by_key(|row| rank(&row.id));
    rows
}

fn node_cell(id: &str, node_rounds: Option<&[Vec<Figure>]>, failures: &[Failure]) -> NodeCell {
    let Some(rounds) = node_rounds else {
        return NodeCell::NotMeasured;
    };
    let measured: Vec<Measured> = rounds
        .iter()
        .flatten()
        .filter(|f| f.id == id)
        .filter_map(|f| f.node.or(f.ours))
        .collect();
    if let Some(m) = combine(&measured) {
        return NodeCell::Measured(m);
    }
    let prefix = id.split('.').next().unwrap_or(id);
    if failures
        .iter()
        .any(|f| f.node_prefix.as_deref() == Some(prefix))
    {
        NodeCell::Failed
    } else {
        NodeCell::Absent
    }
}

fn rank(id: &str) -> usize {
    ORDER
        .iter()
        .position(|o| {
            if o.ends_with('.') {
                id.starts_with(o)
            } else {
                id == *o
            }
        })
        .unwrap_or(ORDER.len())
}

fn nonzero(v: f64) -> Option<f64> {
    (v != 0.0 && v.is_finite()).then_some(v)
}

impl Row {
    /// Whether our figure meets its target; `None` when that cannot be told.
    pub(crate) fn met(&self) -> Option<bool> {
        let target = parse_target(self.target.as_deref()?, &self.unit)?;
        let figure = if target.of_raw {
            self.ours_over_raw?
        } else {
            self.ours?.median
        };
        Some(if target.at_most {
            figure <= target.value
        } else {
            figure >= target.value
        })
    }

    /// How far a figure is from the baseline, oriented so that 1 is the
    /// baseline and more is worse: against the raw figure when there is one,
    /// else against an absolute target. Also says which baseline it used.
    pub(crate) fn cost(&self, figure: f64) -> Option<(f64, Baseline)> {
        let (base, baseline) = match self.raw {
            Some(raw) => (raw.median, Baseline::Raw),
            None => {
                let target = parse_target(self.target.as_deref()?, &self.unit)?;
                if target.of_raw {
                    return None;
                }
                (target.value, Baseline::Target)
            }
        };
        let cost = match self.better {
            Better::Lower => figure / nonzero(base)?,
            Better::Higher => base / nonzero(figure)?,
        };
        (cost.is_finite() && cost > 0.0).then_some((cost, baseline))
    }
}

/// What a chart bar is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Baseline {
    Raw,
    Target,
}

/// A number with three significant digits, `k`/`M` for large ones.
pub(crate) fn format_number(v: f64) -> String {
    let (scaled, suffix) = if v.abs() >= 1e6 {
        (v / 1e6, "M")
    } else if v.abs() >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if scaled == 0.0 {
        0
    } else {
        (2 - scaled.abs().log10().floor() as i32).clamp(0, 4) as usize
    };
    format!("{scaled:.digits$}{suffix}")
}

fn format_measured(m: Option<Measured>) -> String {
    match m {
        Some(m) => format!("{} ± {}", format_number(m.median), format_number(m.spread)),
        None => "—".to_owned(),
    }
}

fn format_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"))
}

/// The table alone: one row per figure, then one per failed bench.
pub(crate) fn table(rows: &[Row], failures: &[Failure]) -> String {
    let mut out = String::new();
    out.push_str(
        "| figure | what | unit | ours ± spread | raw ± spread | ours/raw \
         | Node ± spread | Node/raw | target | met? |\n",
    );
    out.push_str("|---|---|---|--:|--:|--:|--:|--:|---|---|\n");
    for row in rows {
        let node = match row.node {
            NodeCell::NotMeasured => "not measured".to_owned(),
            NodeCell::Absent => "—".to_owned(),
            NodeCell::Failed => "failed".to_owned(),
            NodeCell::Measured(m) => format_measured(Some(m)),
        };
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "?",
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.id,
            row.what.replace('|', "/"),
            row.unit,
            format_measured(row.ours),
            format_measured(row.raw),
            format_ratio(row.ours_over_raw),
            node,
            format_ratio(row.node_over_raw),
            row.target.as_deref().unwrap_or("—").replace('|', "/"),
            met,
        );
    }
    for failure in failures.iter().filter(|f| f.node_prefix.is_none()) {
        let _ = writeln!(
            out,
            "| `{}` | failed: {} | | | | | | | | failed |",
            failure.source,
            failure.reason.replace('|', "/").replace('\n', " "),
        );
    }
    out
}

/// One paragraph: targets met, and how ours compares with Node.js.
pub(crate) fn summary(rows: &[Row]) -> String {
    let judged: Vec<bool> = rows.iter().filter_map(Row::met).collect();
    let met = judged.iter().filter(|m| **m).count();
    let mut out = format!(
        "Targets met: {met} of {} judged ({} row(s) without a target that can be judged).",
        judged.len(),
        rows.len() - judged.len()
    );
    // Node's figure over ours, oriented so that more than 1 means ours is better.
    let factors: Vec<f64> = rows
        .iter()
        .filter_map(|row| {
            let (NodeCell::Measured(node), Some(ours)) = (row.node, row.ours) else {
                return None;
            };
            let factor = match row.better {
                Better::Lower => node.median / nonzero(ours.median)?,
                Better::Higher => ours.median / nonzero(node.median)?,
            };
            factor.is_finite().then_some(factor)
        })
        .collect();
    if let Some(mid) = median(&factors) {
        let better = factors.iter().filter(|f| **f > 1.0).count();
        let _ = write!(
            out,
            " Against Node.js: ours is better on {better} of {} rows measured by both; \
             the median row is {}× in our favour.",
            factors.len(),
            format_number(mid)
        );
    }
    out.push('\n');
    out
}

/// The whole Markdown page; `chart_file` is the SVG's name beside it.
pub(crate) fn markdown(report: &Report, chart_file: &str) -> String {
    let m = &report.machine;
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str("<!-- Written by `cargo xtask bench`; edit the benches, not this page. -->\n\n");
    let mode = if report.quick {
        "quick (tiny workloads: the figures are indicative only)"
    } else {
        "full"
    };
    let _ = writeln!(out, "- Machine: {}, {} cores", m.cpu, m.cores);
    let _ = writeln!(out, "- Kernel: {}", m.kernel);
    let _ = writeln!(out, "- rustc: {}", m.rustc);
    let _ = writeln!(
        out,
        "- Node.js: {}",
        m.node.as_deref().unwrap_or("not on the PATH")
    );
    let _ = writeln!(out, "- Date: {}", m.date);
    let _ = writeln!(
        out,
        "- Run: {mode}, {} profile, {} round(s) of every bench then every Node script, alternated",
        if report.release { "release" } else { "dev" },
        report.rounds
    );
    let _ = writeln!(
        out,
        "- This run: `cargo xtask bench{}{}`\n",
        if report.args.is_empty() { "" } else { " " },
        report.args.join(" ")
    );
    out.push_str(
        "Reproduce with `cargo xtask bench` (release build, under 15 minutes) or \
         `cargo xtask bench --quick` (under 2 minutes); `node` on the PATH adds the \
         Node.js column (scripts in `bench/node/`).\n\n",
    );
    out.push_str(
        "Each figure is the median of its repetitions ± spread (half the range, \
         as each bench defines it; across rounds the larger of the rounds' spreads \
         and half the range of their medians). `raw` is the bare OS limit measured \
         by a bare Rust program inside the same bench, interleaved A B A B with \
         ours, and `ours/raw` is the median of the per-run ratios, so the \
         machine's drift cancels. For `per_s` and speedup rows higher is better; \
         for `us` and `ms` rows lower is better.\n\n",
    );
    out.push_str(&table(&report.rows, &report.failures));
    out.push('\n');
    out.push_str(&summary(&report.rows));
    let node_failures: Vec<&Failure> = report
        .failures
        .iter()
        .filter(|f| f.node_prefix.is_some())
        .collect();
    if !node_failures.is_empty() {
        out.push_str("\nNode scripts that failed:\n\n");
        for f in node_failures {
            let _ = writeln!(out, "- `{}`: {}", f.source, f.reason.replace('\n', " "));
        }
    }
    let _ = write!(
        out,
        "\n![Cost against the raw OS limit, ours and Node.js side by side]({chart_file})\n\n\
         The chart shows, per row, how many times worse than the raw OS limit each \
         figure is (1 = the raw limit; rows marked † have no raw baseline and are \
         drawn against their target instead).\n",
    );
    out
}
