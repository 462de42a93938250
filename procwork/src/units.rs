//! The command line's typed values: durations written as `300ms`, `5s`,
//! `2m`, `1h` (or several parts, `1m30s`), and byte sizes written as
//! `512M`, `1G`, `800MiB`. Each parser gives a clear, typed error.

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::error::ValueError;

/// Parses a duration: one or more `<number><unit>` parts, the unit one of
/// `ms`, `s`, `m`, `h` (`1m30s`, `300ms`, `0s`). A bare number is refused,
/// so that `5` is never read as 5 ms when 5 s was meant.
///
/// # Errors
/// [`ValueError::Duration`], naming the text and what is wrong with it.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let bad = |why: &'static str| ValueError::Duration {
        text: text.to_owned(),
        why,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number, as in 300ms, 5s, 2m or 1h"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        if rest.starts_with(['.', ',']) {
            return Err(bad("write whole numbers, as in 1500ms"));
        }
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(|| bad("too long"))?),
            "h" => Duration::from_secs(number.checked_mul(3600).ok_or_else(|| bad("too long"))?),
            "" => return Err(bad("missing unit: write ms, s, m or h after the number")),
            _ => return Err(bad("unknown unit: use ms, s, m or h")),
        };
        total = total.checked_add(part).ok_or_else(|| bad("too long"))?;
    }
    Ok(total)
}

/// Parses a byte size: a number and a unit, `K`/`M`/`G` (powers of 1024,
/// also written `KiB`/`MiB`/`GiB`, or `KB`/`MB`/`GB`), or `B`.
///
/// # Errors
/// [`ValueError::Size`], naming the text and what is wrong with it.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let bad = |why: &'static str| ValueError::Size {
        text: text.to_owned(),
        why,
    };
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad("expected a number, as in 512M or 1G"));
    }
    let number: u64 = s[..digits].parse().map_err(|_| bad("number too large"))?;
    let shift = match s[digits..].trim() {
        "B" | "b" => 0,
        "K" | "k" | "KB" | "KiB" | "kB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        "" => return Err(bad("missing unit: write K, M or G after the number")),
        _ => return Err(bad("unknown unit: use B, K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| bad("too large"))
}

/// A duration as the status table shows it: `45s`, `12m`, `3h`, `2d`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A byte count as the status table shows it: `48.2mb`, `1.1gb`.
pub fn short_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1}gb", mib / 1024.0)
    } else {
        format!("{mib:.1}mb")
    }
}
