//! Integration tests of spawn-core: real processes, real signals, every test
//! bounded in time.

mod capture;
mod fds;
mod lifecycle;
mod pipe;
mod spawn;

use std::future::Future;
use std::time::Duration;

/// Runs `test` on a fresh current-thread runtime, failing it after 30 s.
fn run<F: Future<Output = ()>>(test: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), test)
            .await
            .expect("test timed out");
    });
}

/// Reads one line from a child's piped stdout.
async fn read_line(reader: &mut tokio::io::BufReader<tokio::process::ChildStdout>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read a line");
    line.trim_end().to_owned()
}
