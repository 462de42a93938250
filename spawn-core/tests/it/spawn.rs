//! Spawning: exit codes, signals, typed spawn errors, cwd, env, stdio, shell
//! mode.

use spawn_core::Signal;
use spawn_core::{Close, Command, Error, Stdio};

use crate::run;

#[test]
fn exit_codes_are_reported() {
    run(async {
        for code in [0, 1, 3, 255] {
            let close = Command::shell("exit \"$1\"")
                .arg(code.to_string())
                .spawn()
                .expect("spawn")
                .wait()
                .await
                .expect("wait");
            assert_eq!(close, Close::Exited(code));
            assert_eq!(close.signal(), None);
        }
    });
}

#[test]
fn death_by_signal_reports_the_signal() {
    run(async {
        let mut child = Command::new("sleep").arg("100").spawn().expect("spawn");
        assert!(child.id().is_some_and(|id| id > 0));
        child.signal(Signal::SIGKILL).expect("kill");
        let close = child.wait().await.expect("wait");
        assert_eq!(close.signal(), Some(Signal::SIGKILL));
        assert_eq!(close.code(), None);
        assert_eq!(close.to_json(), r#"{"code":null,"signal":"SIGKILL"}"#);
        // A second wait returns the same close; kill after reaping is a no-op.
        assert_eq!(child.wait().await.expect("wait again"), close);
        child.signal(Signal::SIGKILL).expect("kill a reaped child");
    });
}

#[test]
fn a_missing_program_is_not_found_with_its_name() {
    run(async {
        let err = Command::new("no-such-program-spawn-core")
            .spawn()
            .expect_err("missing");
        match &err {
            Error::NotFound { program, .. } => assert_eq!(program, "no-such-program-spawn-core"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(err.to_string().contains("no-such-program-spawn-core"));
    });
}

#[test]
fn a_non_executable_file_is_permission_denied() {
    let path = std::env::temp_dir().join(format!("spawn-core-noexec-{}", std::process::id()));
    std::fs::write(&path, "#!/bin/sh\n").expect("write");
    let err = Command::new(&path)
        .status_blocking()
        .expect_err("not executable");
    std::fs::remove_file(&path).expect("remove");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
}

#[test]
fn a_bad_cwd_is_reported_as_such() {
    run(async {
        let err = Command::new("/bin/true")
            .current_dir("/no/such/dir/spawn-core")
            .spawn()
            .expect_err("bad cwd");
        match err {
            Error::BadCwd { program, cwd, .. } => {
                assert_eq!(program, "/bin/true");
                assert_eq!(cwd, std::path::Path::new("/no/such/dir/spawn-core"));
            }
            other => panic!("expected BadCwd, got {other:?}"),
        }
        let out = Command::new("pwd")
            .current_dir("/")
            .output()
            .await
            .expect("pwd");
        assert_eq!(out.stdout, b"/\n");
    });
}

#[test]
fn env_set_remove_and_clear() {
    run(async {
        let out = Command::shell("printf '%s|%s|%s' \"$A\" \"${HOME-unset}\" \"${PATH-unset}\"")
            .env("A", "one")
            .env_remove("HOME")
            .output()
            .await
            .expect("env");
        let text = String::from_utf8(out.stdout).expect("utf8");
        assert!(text.starts_with("one|unset|"), "{text}");
        assert!(!text.ends_with("|unset"), "PATH is inherited: {text}");

        let out = Command::new("/usr/bin/env")
            .env_clear()
            .env("ONLY", "1")
            .output()
            .await
            .expect("env");
        assert_eq!(out.stdout, b"ONLY=1\n");
    });
}

#[test]
fn stdio_modes_piped_null_and_file() {
    run(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Piped stdin and stdout: cat echoes.
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cat");
        let mut stdin = child.take_stdin().expect("stdin");
        let mut stdout = child.take_stdout().expect("stdout");
        assert!(child.take_stderr().is_none(), "stderr is inherited");
        stdin.write_all(b"ping").await.expect("write");
        drop(stdin);
        let mut echoed = Vec::new();
        stdout.read_to_end(&mut echoed).await.expect("read");
        assert_eq!(echoed, b"ping");
        assert_eq!(child.wait().await.expect("wait"), Close::Exited(0));

        // Null stdin: cat sees EOF at once.
        let out = Command::new("cat")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("cat");
        assert_eq!((out.close, out.stdout.len()), (Close::Exited(0), 0));

        // A file as stdout.
        let path = std::env::temp_dir().join(format!("spawn-core-stdout-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("create");
        let close = Command::new("echo")
            .arg("to a file")
            .stdout(Stdio::from(file))
            .spawn()
            .expect("echo")
            .wait()
            .await
            .expect("wait");
        let written = std::fs::read_to_string(&path).expect("read back");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!((close, written.as_str()), (Close::Exited(0), "to a file\n"));
    });
}

#[test]
fn shell_arguments_arrive_literally_and_inject_nothing() {
    let dir = std::env::temp_dir().join(format!("spawn-core-shell-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    run(async {
        let nasty = [
            "'; touch pwned",
            "$(touch pwned)",
            "`touch pwned`",
            "a b\"c",
            "*",
        ];
        let out = Command::shell("for a in \"$@\"; do printf '%s\\n' \"$a\"; done")
            .args(nasty)
            .current_dir(&dir)
            .output()
            .await
            .expect("shell");
        assert_eq!(out.close, Close::Exited(0));
        let expected: String = nasty.iter().map(|a| format!("{a}\n")).collect();
        assert_eq!(String::from_utf8(out.stdout).expect("utf8"), expected);

        let out = Command::shell("echo \"$1\"")
            .arg("'; touch pwned")
            .current_dir(&dir)
            .output()
            .await
            .expect("shell");
        assert_eq!(out.stdout, b"'; touch pwned\n");
    });
    let pwned = dir.join("pwned").exists();
    std::fs::remove_dir_all(&dir).expect("rmdir");
    assert!(!pwned, "an argument was run as shell code");
}

#[test]
fn argv0_is_what_the_child_sees() {
    run(async {
        let out = Command::new("/bin/sh")
            .arg0("custom-name")
            .args(["-c", "echo \"$0\""])
            .output()
            .await
            .expect("sh");
        assert_eq!(out.stdout, b"custom-name\n");
    });
}

#[test]
fn blocking_status_reports_code_and_signal() {
    assert_eq!(
        Command::shell("exit 4").status_blocking().expect("exit 4"),
        Close::Exited(4)
    );
    let close = Command::shell("kill -TERM $$")
        .status_blocking()
        .expect("self kill");
    assert_eq!(close.signal(), Some(Signal::SIGTERM));
}

#[test]
fn uid_and_gid_of_the_parent_are_accepted() {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    run(async {
        let out = Command::new("id")
            .arg("-u")
            .uid(uid)
            .gid(gid)
            .output()
            .await
            .expect("id");
        assert_eq!(
            String::from_utf8(out.stdout).expect("utf8").trim(),
            uid.to_string()
        );
    });
}

/// A command that exits with `code`, forked on the spawner thread when
/// `pdeathsig` asks for a parent-death signal.
fn exiting(code: i32, pdeathsig: bool) -> Command {
    let mut command = Command::shell(format!("exit {code}"));
    if pdeathsig {
        command.parent_death_signal(Signal::SIGKILL);
    }
    command
}

#[test]
fn spawn_all_starts_every_command_in_order_whatever_fails() {
    run(async {
        let mut missing = Command::new("no-such-program-spawn-core");
        missing.parent_death_signal(Signal::SIGKILL);
        let commands = [
            // On the spawner thread (a parent-death signal), then not, then
            // a failure between them: each result in its place.
            exiting(3, true),
            exiting(4, false),
            missing,
            exiting(5, true),
            exiting(6, false),
        ];
        let mut results = spawn_core::spawn_all(commands).into_iter();
        let mut pids = Vec::new();
        for code in [3, 4] {
            let mut child = results.next().expect("a result").expect("spawned");
            pids.push(child.id().expect("running"));
            assert_eq!(child.wait().await.expect("wait"), Close::Exited(code));
        }
        match results.next().expect("a result") {
            Err(Error::NotFound { program, .. }) => {
                assert_eq!(program, "no-such-program-spawn-core");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        for code in [5, 6] {
            let mut child = results.next().expect("a result").expect("spawned");
            pids.push(child.id().expect("running"));
            assert_eq!(child.wait().await.expect("wait"), Close::Exited(code));
        }
        assert!(results.next().is_none());
        // Forked in the order of the commands: the kernel hands out pids in
        // increasing order (one wrap past pid_max aside).
        let descents = pids.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(descents <= 1, "forked out of order: pids {pids:?}");
        assert!(descents == 0 || pids.first() > pids.last(), "pids {pids:?}");
    });
}

#[test]
fn a_panicking_spawn_does_not_abandon_the_rest_of_the_batch() {
    // tokio panics inside a spawn in a runtime built without its I/O
    // driver; each command of the batch gets its own result.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("rt");
    let _entered = runtime.enter();
    let results = spawn_core::spawn_all([exiting(0, true), exiting(0, false), exiting(0, true)]);
    assert_eq!(results.len(), 3);
    for result in results {
        match result {
            Err(Error::SpawnPanicked { program, message }) => {
                assert_eq!(program, "/bin/sh");
                assert!(!message.is_empty());
            }
            other => panic!("expected SpawnPanicked, got {other:?}"),
        }
    }
}

#[test]
fn spawn_all_outside_a_runtime_fails_each_command() {
    let results = spawn_core::spawn_all([Command::new("/bin/true"), Command::new("/bin/false")]);
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(matches!(r, Err(Error::NoRuntime { .. })), "{r:?}");
    }
}
