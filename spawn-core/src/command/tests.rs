//! Unit tests of the builder: validation that happens before any fork.

use std::os::fd::OwnedFd;

use super::Command;
use crate::Error;

fn some_fd() -> OwnedFd {
    let (read, _write) = nix::unistd::pipe().expect("pipe");
    read
}

#[test]
fn stdio_targets_are_rejected_before_forking() {
    let err = Command::new("/bin/true")
        .inherit_fd(1, some_fd())
        .status_blocking()
        .expect_err("fd 1 is stdout");
    assert!(
        matches!(err, Error::BadFdTarget { child_fd: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn a_target_given_twice_is_rejected() {
    let err = Command::new("/bin/true")
        .inherit_fd(5, some_fd())
        .inherit_fd(5, some_fd())
        .status_blocking()
        .expect_err("fd 5 twice");
    assert!(
        matches!(err, Error::BadFdTarget { child_fd: 5, .. }),
        "{err:?}"
    );
}

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Command::new("/bin/true").spawn().expect_err("no runtime");
    assert!(matches!(err, Error::NoRuntime { .. }), "{err:?}");
}

#[test]
fn shell_mode_puts_arguments_after_the_script() {
    let cmd = Command::shell("echo \"$1\"").arg("x y");
    let args: Vec<_> = cmd.std.get_args().collect();
    assert_eq!(args, ["-c", "echo \"$1\"", "sh", "x y"]);
    assert_eq!(cmd.program(), "/bin/sh");
}
