//! Targets as the benches write them: `<= 1.3x raw`, `>= 15M msg/s`,
//! `<= 0.2 ms`, `>= 1.9 (raw: 2.0, the ideal)`, read in the row's unit.

/// A target as read from its text: `<= 1.3x raw`, `>= 15M msg/s`, `<= 0.2 ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Target {
    pub(crate) at_most: bool,
    /// In the row's unit, or a factor of the raw figure when `of_raw`.
    pub(crate) value: f64,
    pub(crate) of_raw: bool,
}

/// Reads a target's text against the row's unit; `None` when it cannot.
pub(crate) fn parse_target(text: &str, unit: &str) -> Option<Target> {
    let text = text.trim();
    let (at_most, rest) = if let Some(r) = strip_any(text, &["<=", "≤", "<"]) {
        (true, r)
    } else {
        (false, strip_any(text, &[">=", "≥", ">"])?)
    };
    let (mut value, suffix) = leading_number(rest.trim_start())?;
    let suffix = suffix.trim_start();
    // `1.3x raw`, `0.9 × raw`; a `(raw: ...)` remark is no factor of raw.
    let of_raw = ["x raw", "x  raw", "× raw", "×raw", "xraw", "times raw"]
        .iter()
        .any(|f| suffix.starts_with(f));
    if !of_raw {
        let scale = if suffix.starts_with("ms") {
            time_scale(1e-3, unit)
        } else if ["us", "µs", "μs"].iter().any(|u| suffix.starts_with(u)) {
            time_scale(1e-6, unit)
        } else if suffix.starts_with('M') {
            1e6
        } else if suffix.starts_with('k') {
            1e3
        } else {
            1.0
        };
        value *= scale;
    }
    Some(Target {
        at_most,
        value,
        of_raw,
    })
}

/// The longest leading number of `text` (`1.3`, `15,000,000`, `2.6e6`) and the rest.
fn leading_number(text: &str) -> Option<(f64, &str)> {
    let candidate = text
        .find(|c: char| !(c.is_ascii_digit() || ".,_eE+-".contains(c)))
        .unwrap_or(text.len());
    (1..=candidate).rev().find_map(|end| {
        let value: f64 = text.get(..end)?.replace([',', '_'], "").parse().ok()?;
        Some((value, &text[end..]))
    })
}

fn strip_any<'a>(text: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| text.strip_prefix(p))
}

/// Factor from a time given in `seconds_per` seconds to the row's unit.
fn time_scale(seconds_per: f64, unit: &str) -> f64 {
    match unit {
        "ms" => seconds_per / 1e-3,
        "us" => seconds_per / 1e-6,
        "s" => seconds_per,
        _ => 1.0,
    }
}
