//! Output capture: large output without deadlock, and the cap.

use spawn_core::{Close, Command, Error, Stdio, Stream};

use crate::run;

#[test]
fn ten_megabytes_on_both_streams_are_captured() {
    run(async {
        // 10 MiB on stdout and 1 MiB on stderr, written interleaved: reading
        // one stream to its end before the other would deadlock.
        let out =
            Command::shell("head -c 1048576 /dev/zero >&2 & head -c 10485760 /dev/zero; wait")
                .output()
                .await
                .expect("capture");
        assert_eq!(out.close, Close::Exited(0));
        assert_eq!(out.stdout.len(), 10 << 20);
        assert_eq!(out.stderr.len(), 1 << 20);
    });
}

#[test]
fn past_the_cap_the_child_is_killed_and_the_error_says_so() {
    run(async {
        let err = Command::new("yes")
            .output_capped(64 * 1024)
            .await
            .expect_err("yes never ends");
        match err {
            Error::OutputTooLarge {
                stream,
                cap,
                close,
                program,
                ..
            } => {
                assert_eq!((stream, cap), (Stream::Stdout, 64 * 1024));
                assert_eq!(program, "yes");
                // Killed by us, or by SIGPIPE if it wrote after the pipe closed.
                assert!(close.signal().is_some(), "{close}");
            }
            other => panic!("expected OutputTooLarge, got {other:?}"),
        }
    });
}

#[test]
fn exactly_the_cap_is_fine() {
    run(async {
        let out = Command::shell("head -c 1000 /dev/zero")
            .output_capped(1000)
            .await
            .expect("at cap");
        assert_eq!(out.stdout.len(), 1000);
    });
}

#[test]
fn a_piped_stdin_is_closed_before_the_capture_so_a_reader_ends() {
    run(async {
        // `cat` writes nothing until its stdin ends: the capture must close
        // the stdin nobody took, or both sides wait for each other forever.
        let out = Command::new("cat")
            .stdin(Stdio::piped())
            .output()
            .await
            .expect("capture");
        assert_eq!(out.close, Close::Exited(0));
        assert!(out.stdout.is_empty());
    });
}
