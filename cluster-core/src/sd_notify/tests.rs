//! The parsing of `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID`.

use std::time::Duration;

use super::{monotonic_usec, notify_addr, watchdog_interval};

#[test]
fn parses_paths_and_abstract_names() {
    let a = notify_addr("/run/systemd/notify").unwrap();
    assert_eq!(
        a.as_pathname().unwrap().to_str(),
        Some("/run/systemd/notify")
    );
    assert!(notify_addr("@abstract").is_some());
    assert!(notify_addr("relative").is_none());
    assert!(notify_addr("").is_none());
}

#[test]
fn watchdog_is_half_the_period_and_for_this_pid_only() {
    assert_eq!(
        watchdog_interval(Some("2000000"), None, 5),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        watchdog_interval(Some("2000000"), Some("5"), 5),
        Some(Duration::from_secs(1))
    );
    assert_eq!(watchdog_interval(Some("2000000"), Some("6"), 5), None);
    assert_eq!(watchdog_interval(Some("0"), None, 5), None);
    assert_eq!(watchdog_interval(None, None, 5), None);
}

#[test]
fn monotonic_usec_is_the_clock_of_instant_in_microseconds() {
    let before = monotonic_usec();
    std::thread::sleep(Duration::from_millis(2));
    let after = monotonic_usec();
    assert!(before > 0 && after >= before + 2_000, "{before} {after}");
}
