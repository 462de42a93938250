//! The `LISTEN_*` parsing: which descriptors are ours, and when none are.

use super::{LISTEN_FDS_START, parse};

#[test]
fn names_this_process_only() {
    assert_eq!(parse(None, Some("2"), None, None, 42), None);
    assert_eq!(parse(Some("41"), Some("2"), None, None, 42), None);
    assert_eq!(parse(Some("x"), Some("2"), None, None, 42), None);
    let (fds, upgrade) = parse(Some("42"), Some("2"), None, None, 42).unwrap();
    assert_eq!(
        fds,
        vec![(LISTEN_FDS_START, None), (LISTEN_FDS_START + 1, None)]
    );
    assert_eq!(upgrade, None);
}

#[test]
fn reads_names_and_the_upgrade_channel() {
    let (fds, upgrade) = parse(Some("7"), Some("3"), Some("http::admin"), Some("6"), 7).unwrap();
    assert_eq!(
        fds,
        vec![
            (3, Some("http".to_owned())),
            (4, None),
            (5, Some("admin".to_owned()))
        ]
    );
    assert_eq!(upgrade, Some(6));
}

#[test]
fn refuses_nonsense() {
    assert_eq!(parse(Some("7"), Some("-1"), None, None, 7), None);
    assert_eq!(parse(Some("7"), Some("many"), None, None, 7), None);
    // The upgrade channel cannot be one of the sockets.
    let (_, upgrade) = parse(Some("7"), Some("2"), None, Some("4"), 7).unwrap();
    assert_eq!(upgrade, None);
}
