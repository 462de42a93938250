//! Figures: the JSON lines that benches and Node scripts print, and how the
//! repetitions of one row are combined into the cells of the report.
//!
//! A bench prints, per figure, one line of this form on stdout (any other line
//! is ignored, and so is any field not named here):
//!
//! ```text
//! {"id":"ipc.rtt_small","what":"...","unit":"us","better":"lower",
//!  "ours":8.1,"ours_spread":0.4,"raw":7.0,"raw_spread":0.3,"target":"<= 1.3x raw"}
//! ```
//!
//! A Node.js script of `bench/node/` prints the same form with its figure in
//! `node` and `node_spread` instead of `ours`/`raw`.

use serde_json::Value;

/// Which direction is good for a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Better {
    /// Latencies: smaller is better.
    Lower,
    /// Rates and speedups: larger is better.
    Higher,
}

/// One JSON line of a bench or a Node script, as printed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Figure {
    pub(crate) id: String,
    pub(crate) what: String,
    pub(crate) unit: String,
    pub(crate) better: Better,
    pub(crate) ours: Option<Measured>,
    pub(crate) raw: Option<Measured>,
    pub(crate) node: Option<Measured>,
    pub(crate) target: Option<String>,
}

/// A median and its spread, as one run reported them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Measured {
    pub(crate) median: f64,
    pub(crate) spread: f64,
}

/// Reads one stdout line; `None` for anything that is not a figure line.
pub(crate) fn parse_line(line: &str) -> Option<Figure> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    let value: Value = serde_json::from_str(line).ok()?;
    let object = value.as_object()?;
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    let measured = |key: &str| {
        let median = object.get(key).and_then(Value::as_f64)?;
        if !median.is_finite() {
            return None;
        }
        let spread = object
            .get(&format!("{key}_spread"))
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite())
            .unwrap_or(0.0)
            .abs();
        Some(Measured { median, spread })
    };
    let id = text("id").filter(|id| !id.is_empty())?;
    let better = match text("better").as_deref() {
        Some("higher") => Better::Higher,
        _ => Better::Lower,
    };
    Some(Figure {
        what: text("what").unwrap_or_else(|| id.clone()),
        unit: text("unit").unwrap_or_default(),
        id,
        better,
        ours: measured("ours"),
        raw: measured("raw"),
        node: measured("node"),
        target: text("target").filter(|t| !t.trim().is_empty()),
    })
}

/// Every figure line of a program's stdout, in order.
pub(crate) fn parse_output(stdout: &str) -> Vec<Figure> {
    stdout.lines().filter_map(parse_line).collect()
}

/// Combines the same figure from several rounds: the median of the rounds'
/// medians; the spread is the largest of the rounds' own spreads and half the
/// range across rounds, whichever is larger.
pub(crate) fn combine(rounds: &[Measured]) -> Option<Measured> {
    let medians: Vec<f64> = rounds.iter().map(|m| m.median).collect();
    let median = median(&medians)?;
    let own = rounds.iter().map(|m| m.spread).fold(0.0, f64::max);
    let lo = medians.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = medians.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Measured {
        median,
        spread: own.max((hi - lo) / 2.0),
    })
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}
