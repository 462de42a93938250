//! Extra descriptors handed to the child at chosen numbers.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use spawn_core::{Close, Command, Stdio};

use crate::run;

/// A pipe whose ends are close-on-exec, as every descriptor should be.
fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Descriptors of this process that any child inherits (not close-on-exec),
/// such as those the test harness was started with.
fn inheritable_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| {
            // SAFETY: F_GETFD only reads the flags of a descriptor number.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags != -1 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}

fn read_all(fd: OwnedFd) -> String {
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .expect("read");
    text
}

#[test]
fn a_descriptor_arrives_at_its_number() {
    run(async {
        let (read, write) = pipe().expect("pipe");
        let close = Command::shell("echo hello >&7")
            .inherit_fd(7, write)
            .spawn()
            .expect("spawn")
            .wait()
            .await
            .expect("wait");
        assert_eq!(close, Close::Exited(0));
        // The parent's write end was closed by the spawn: reading ends.
        assert_eq!(read_all(read), "hello\n");
    });
}

#[test]
fn swapped_numbers_are_placed_correctly() {
    run(async {
        let (read_a, write_a) = pipe().expect("pipe a");
        let (read_b, write_b) = pipe().expect("pipe b");
        let (num_a, num_b) = (write_a.as_raw_fd(), write_b.as_raw_fd());
        // a goes to b's number and b to a's: a naive dup2 would clobber one.
        let close = Command::shell("echo a > /proc/self/fd/$1; echo b > /proc/self/fd/$2")
            .args([num_b.to_string(), num_a.to_string()])
            .inherit_fd(num_b, write_a)
            .inherit_fd(num_a, write_b)
            .spawn()
            .expect("spawn")
            .wait()
            .await
            .expect("wait");
        assert_eq!(close, Close::Exited(0));
        assert_eq!(
            (read_all(read_a), read_all(read_b)),
            ("a\n".into(), "b\n".into())
        );
    });
}

#[test]
fn descriptors_not_handed_over_do_not_leak_into_the_child() {
    run(async {
        let (read, write) = pipe().expect("pipe");
        // Move the unshared end high, where the child's own descriptors
        // (ls's directory handle) cannot fall by coincidence.
        let read =
            nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).expect("dup");
        // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that we own.
        let read = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(read) };
        let already_inheritable = inheritable_fds();
        let out = Command::shell("ls /proc/self/fd")
            .inherit_fd(9, write)
            .output()
            .await
            .expect("ls");
        let fds: Vec<i32> = String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .map(|l| l.parse().expect("fd number"))
            .collect();
        assert!(fds.contains(&9), "{fds:?}");
        assert!(
            !fds.contains(&read.as_raw_fd()),
            "the unshared end leaked: {fds:?}"
        );
        let unexpected: Vec<i32> = fds
            .into_iter()
            .filter(|fd| ![0, 1, 2, 9].contains(fd) && !already_inheritable.contains(fd))
            .collect();
        // At most the descriptor ls opened to read the directory.
        assert!(
            unexpected.len() <= 1,
            "unexpected descriptors in the child: {unexpected:?}"
        );
    });
}

#[test]
fn exec_failure_is_reported_when_a_target_is_where_std_reports_errors() {
    run(async {
        // std reports a failed exec through a pipe made just before the
        // fork, at the two lowest free numbers: find them, and hand a
        // descriptor at the number its write end will get. The hook's dup2
        // there must not hide the failed exec.
        let (_handed_read, handed) = pipe().expect("pipe");
        let (probe_read, probe_write) = pipe().expect("probe");
        let target = probe_write.as_raw_fd();
        drop((probe_read, probe_write));
        let err = Command::new("no-such-program-spawn-core")
            .inherit_fd(target, handed)
            .spawn()
            .expect_err("the program does not exist");
        assert!(matches!(err, spawn_core::Error::NotFound { .. }), "{err:?}");
    });
}

#[test]
fn a_target_just_below_the_descriptor_limit_is_placed() {
    run(async {
        let (limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        let target = i32::try_from(limit - 1).expect("a descriptor number");
        let (read, write) = pipe().expect("pipe");
        let close = Command::shell("echo edge > /proc/self/fd/\"$1\"")
            .arg(target.to_string())
            .inherit_fd(target, write)
            .status()
            .await
            .expect("spawn");
        assert_eq!(close, Close::Exited(0));
        assert_eq!(read_all(read), "edge\n");
    });
}

/// `pid pgrp session` of a shell, from `/proc/$$/stat` (`pid (comm) state
/// ppid pgrp session ...`, and `(sh)` holds no space).
const SHOW_SESSION: &str =
    "read -r pid comm state ppid pgrp sid rest < /proc/$$/stat; echo \"$pid $pgrp $sid\" >&5";

#[test]
fn a_new_session_with_descriptors_and_pipes_leads_its_session() {
    run(async {
        // Descriptors and a new session: spawn-core's own posix_spawn on
        // Linux (file actions, POSIX_SPAWN_SETSID), with every stdio kind.
        let (read, write) = pipe().expect("pipe");
        let out = Command::shell(format!("{SHOW_SESSION}; cat; echo err >&2"))
            .inherit_fd(5, write)
            .new_session()
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut child = out;
        let mut stdin = child.take_stdin().expect("piped stdin");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"from stdin\n")
            .await
            .expect("write");
        drop(stdin);
        let pid = child.id().expect("running");
        assert_eq!(child.wait().await.expect("wait"), Close::Exited(0));
        let ids: Vec<u32> = read_all(read)
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect();
        assert_eq!(ids, [pid, pid, pid], "pid, group and session");
    });
}

#[test]
fn a_capture_with_a_descriptor_reads_both_streams_and_null_stdin() {
    run(async {
        let (read, write) = pipe().expect("pipe");
        let out = Command::shell("echo out; echo err >&2; cat; echo fd >&6")
            .inherit_fd(6, write)
            .output()
            .await
            .expect("output");
        assert_eq!(out.close, Close::Exited(0));
        // stdin is /dev/null for `output`: `cat` ends at once.
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(read_all(read), "fd\n");
    });
}

#[test]
fn a_missing_program_with_a_descriptor_is_not_found() {
    run(async {
        // Looked up on PATH (posix_spawnp), and by its path.
        for program in ["no-such-program-spawn-core", "/no/such/program"] {
            let (_read, write) = pipe().expect("pipe");
            let err = Command::new(program)
                .inherit_fd(3, write)
                .spawn()
                .expect_err("the program does not exist");
            assert!(matches!(err, spawn_core::Error::NotFound { .. }), "{err:?}");
        }
    });
}

#[test]
fn a_working_directory_with_a_descriptor_is_entered() {
    run(async {
        let dir = std::env::temp_dir().canonicalize().expect("temp dir");
        let (read, write) = pipe().expect("pipe");
        let close = Command::shell("pwd -P >&5")
            .current_dir(&dir)
            .inherit_fd(5, write)
            .status()
            .await
            .expect("spawn");
        assert_eq!(close, Close::Exited(0));
        assert_eq!(read_all(read).trim_end(), dir.to_str().expect("utf-8"));
    });
}
