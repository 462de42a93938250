//! Unit tests of [`Close`]: the status decoding and the JSON form.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use super::Close;
use crate::Signal;

#[test]
fn exit_status_decodes_to_exactly_one_of_code_or_signal() {
    let exited = Close::from_status(ExitStatus::from_raw(3 << 8));
    assert_eq!(exited, Close::Exited(3));
    assert_eq!((exited.code(), exited.signo()), (Some(3), None));

    let killed = Close::from_status(ExitStatus::from_raw(libc::SIGKILL));
    assert_eq!(killed, Close::Signaled(libc::SIGKILL));
    assert_eq!(
        (killed.code(), killed.signal()),
        (None, Some(Signal::SIGKILL))
    );
}

#[test]
fn json_matches_the_seed_shape() {
    assert_eq!(Close::Exited(3).to_json(), r#"{"code":3,"signal":null}"#);
    assert_eq!(
        Close::Signaled(libc::SIGTERM).to_json(),
        r#"{"code":null,"signal":"SIGTERM"}"#
    );
}

#[test]
fn unnamed_signals_get_a_numeric_name() {
    let rt = Close::Signaled(libc::SIGRTMIN() + 1);
    assert_eq!(rt.signal(), None);
    assert_eq!(
        rt.signal_name().as_deref(),
        Some(format!("SIG{}", libc::SIGRTMIN() + 1).as_str())
    );
}

#[test]
fn mirror_exit_code_follows_the_shell_convention() {
    assert_eq!(Close::Exited(0).mirror_exit_code(), 0);
    assert!(Close::Exited(0).success());
    assert_eq!(Close::Signaled(libc::SIGKILL).mirror_exit_code(), 137);
    assert_eq!(Close::Exited(1).to_string(), "exit code 1");
    assert_eq!(Close::Signaled(libc::SIGINT).to_string(), "signal SIGINT");
}
