//! Running one bench executable or Node script: bounded in time, its stdout
//! collected, its stderr passed through, its whole process group killed if it
//! overstays or leaves children behind.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How one run ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Everything the program printed on stdout, even when it failed.
    pub(crate) stdout: String,
    /// `None` when it exited with success, else why not.
    pub(crate) failure: Option<String>,
}

/// Runs `command` in its own process group, for at most `timeout`.
pub(crate) fn run(mut command: Command, timeout: Duration) -> Outcome {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Outcome {
                stdout: String::new(),
                failure: Some(format!("could not start: {e}")),
            };
        }
    };
    let pgid = child.id();
    let collected = Arc::new(Mutex::new(String::new()));
    let (done_tx, done_rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let collected = Arc::clone(&collected);
        std::thread::spawn(move || {
            // Bytes, not `lines()`: a non-UTF-8 line must not stop the
            // draining (the program would block on a full pipe).
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if let Ok(mut text) = collected.lock() {
                    text.push_str(&String::from_utf8_lossy(&line));
                }
                line.clear();
            }
            let _ = done_tx.send(());
        });
    }

    let started = Instant::now();
    let status: Result<ExitStatus, String> = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(pgid);
                let _ = child.wait();
                break Err(format!("timed out after {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group(pgid);
                let _ = child.wait();
                break Err(format!("could not wait: {e}"));
            }
        }
    };
    // A grandchild still holding stdout open must not keep us waiting.
    if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
        kill_group(pgid);
        let _ = done_rx.recv_timeout(Duration::from_secs(2));
    }
    let stdout = collected.lock().map(|s| s.clone()).unwrap_or_default();
    let failure = match status {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("exited with {status}")),
        Err(reason) => Some(reason),
    };
    Outcome { stdout, failure }
}

/// SIGKILLs the process group the run was started in (only ours).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}
