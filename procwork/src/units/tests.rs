//! Tests of the duration and size parsers.

use std::time::Duration;

use super::*;

#[test]
fn durations_parse_with_their_units() {
    assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
    assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
}

#[test]
fn durations_without_a_unit_or_with_a_wrong_one_are_refused() {
    for (text, why) in [
        ("5", "missing unit"),
        ("", "empty"),
        ("5x", "unknown unit"),
        ("s", "expected a number"),
        ("1.5s", "whole numbers"),
        ("99999999999999999999s", "number too large"),
    ] {
        let err = parse_duration(text).unwrap_err().to_string();
        assert!(err.contains(why), "{text:?}: {err}");
        assert!(err.contains(&format!("`{text}`")), "{text:?}: {err}");
    }
}

#[test]
fn sizes_parse_in_powers_of_1024() {
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("1G").unwrap(), 1 << 30);
    assert_eq!(parse_size("800MiB").unwrap(), 800 << 20);
    assert_eq!(parse_size("64K").unwrap(), 64 << 10);
    assert!(
        parse_size("12")
            .unwrap_err()
            .to_string()
            .contains("missing unit")
    );
    assert!(
        parse_size("1T")
            .unwrap_err()
            .to_string()
            .contains("unknown unit")
    );
}

#[test]
fn short_forms_for_the_table() {
    assert_eq!(short_duration(Duration::from_secs(45)), "45s");
    assert_eq!(short_duration(Duration::from_secs(125)), "2m");
    assert_eq!(short_duration(Duration::from_secs(7300)), "2h");
    assert_eq!(short_size(50 << 20), "50.0mb");
    assert_eq!(short_size(3 << 29), "1.5gb");
}
