//! One child's output as the next child's input, a command spawned again,
//! and the child's id, which ends with the child.

use std::time::Duration;

use spawn_core::{Close, Command, Error, Signal, Stdio, Stream};

use crate::run;

#[test]
fn seq_piped_into_wc_counts_a_thousand_lines() {
    run(async {
        let mut seq = Command::new("seq")
            .args(["1", "1000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("seq");
        let wc = Command::new("wc")
            .arg("-l")
            .stdin(seq.take_stdout().expect("piped"))
            .output()
            .await
            .expect("wc");
        assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "1000");
        assert_eq!(wc.close, Close::Exited(0));
        assert_eq!(seq.wait().await.expect("seq"), Close::Exited(0));
    });
}

#[test]
fn a_stderr_pipes_into_the_next_stdin() {
    run(async {
        let mut writer = Command::shell("echo to-stderr >&2")
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        let cat = Command::new("cat")
            .stdin(writer.take_stderr().expect("piped"))
            .output()
            .await
            .expect("cat");
        assert_eq!(cat.stdout, b"to-stderr\n");
        assert_eq!(writer.wait().await.expect("sh"), Close::Exited(0));
    });
}

#[test]
fn the_writer_of_a_pipeline_sees_sigpipe_while_the_reader_command_lives() {
    run(async {
        let mut yes = Command::new("yes")
            .stdout(Stdio::piped())
            .spawn()
            .expect("yes");
        // The reader's command is kept (to spawn it again, say): the pipe's
        // read end must not stay open in it, or `yes` never sees SIGPIPE.
        let mut head = Command::new("head");
        head.args(["-n", "1"])
            .stdin(yes.take_stdout().expect("piped"))
            .stdout(Stdio::null());
        assert!(head.status().await.expect("head").success());
        let close = tokio::time::timeout(Duration::from_secs(20), yes.wait())
            .await
            .expect("yes still writes to a pipe nobody reads")
            .expect("wait");
        assert_eq!(close.signal(), Some(Signal::SIGPIPE));
        // The pipe went to that spawn; spawning again needs a new stream.
        let err = head.status().await.expect_err("stdin was handed over");
        assert!(
            matches!(
                err,
                Error::StdioHandedOver {
                    stream: Stream::Stdin,
                    ..
                }
            ),
            "{err:?}"
        );
        head.stdin(Stdio::null());
        assert!(head.status().await.expect("head again").success());
    });
}

#[test]
fn a_command_spawns_again_with_the_same_settings() {
    let path = std::env::temp_dir().join(format!("spawn-core-reuse-{}", std::process::id()));
    run(async {
        let mut command = Command::shell("echo \"$1\" \"$X\"");
        command.arg("one").env("X", "two");
        for _ in 0..2 {
            let out = command.output().await.expect("echo");
            assert_eq!(out.stdout, b"one two\n");
        }
        // A file stays with the command (std's rule): both children append.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        command.stdout(file);
        for _ in 0..2 {
            assert!(command.status().await.expect("echo").success());
        }
    });
    let written = std::fs::read_to_string(&path).expect("read back");
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(written, "one two\none two\n");
}

#[test]
fn the_id_ends_when_the_child_is_reaped() {
    run(async {
        let mut sleeper = Command::new("sleep").arg("100").spawn().expect("sleep");
        assert!(sleeper.id().is_some());
        let close = sleeper.kill().await.expect("kill");
        assert_eq!(close.signal(), Some(Signal::SIGKILL));
        assert_eq!(sleeper.id(), None, "reaped by wait");
        // Reaped by try_wait too (looked at in a bounded loop: no event says
        // when a child that exits by itself is ready to be reaped).
        let mut quick = Command::new("/bin/true").spawn().expect("true");
        for _ in 0..2000 {
            if quick.try_wait().expect("try_wait").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(quick.id(), None, "reaped by try_wait");
    });
}

#[test]
fn status_closes_a_piped_stdin_so_a_reader_ends() {
    run(async {
        let close = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .status()
            .await
            .expect("cat");
        assert_eq!(close, Close::Exited(0));
    });
}
