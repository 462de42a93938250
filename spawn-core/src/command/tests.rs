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
    let mut cmd = Command::shell("echo \"$1\"");
    cmd.arg("x y");
    let args: Vec<_> = cmd.get_args().collect();
    assert_eq!(args, ["-c", "echo \"$1\"", "sh", "x y"]);
    assert_eq!(cmd.get_program(), "/bin/sh");
}

#[test]
fn a_target_at_or_above_the_descriptor_limit_is_refused_in_the_parent() {
    let (limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    for target in [i32::MAX, i32::try_from(limit).unwrap_or(i32::MAX)] {
        let mut cmd = Command::new("/bin/true");
        cmd.inherit_fd(target, some_fd());
        let err = cmd
            .status_blocking()
            .expect_err("no such descriptor number");
        assert!(
            matches!(err, Error::FdTargetAboveLimit { child_fd, limit: l, .. }
                if child_fd == target && l == limit),
            "{err:?}"
        );
        // Refused before anything was taken: the descriptor is still there.
        assert_eq!(cmd.fds.len(), 1);
    }
}

#[test]
fn a_descriptor_goes_to_one_spawn_and_a_respawn_needs_a_new_one() {
    let mut cmd = Command::new("/bin/true");
    cmd.inherit_fd(5, some_fd());
    assert!(cmd.status_blocking().expect("first spawn").success());
    let err = cmd
        .status_blocking()
        .expect_err("fd 5 went to the first child");
    assert!(
        matches!(err, Error::FdHandedOver { child_fd: 5, .. }),
        "{err:?}"
    );
    cmd.inherit_fd(5, some_fd());
    assert!(cmd.status_blocking().expect("with a new one").success());
}
