//! The primary as a process of its own (the helper binary run as
//! `cluster-helper primary <n>`): no orphans when it is SIGKILLed, graceful
//! shutdown on SIGTERM, a rolling reload on SIGHUP (signal handling turned
//! on in the settings or through `Cluster::setup`), piped worker output
//! prefixed per line.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{BOUND, HELPER};

struct Primary {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Primary {
    fn start(worker_mode: &str, n: usize) -> Primary {
        Self::start_with(worker_mode, &["primary", &n.to_string()])
    }

    fn start_with(worker_mode: &str, args: &[&str]) -> Primary {
        let mut child = Command::new(HELPER)
            .args(args)
            .env("HELPER_WORKER_MODE", worker_mode)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the helper primary");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Primary { child, lines }
    }

    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(BOUND, self.lines.next_line())
            .await
            .expect("timed out waiting for the primary's output")
            .expect("read the primary's output")
    }

    /// Read until `n` workers are online; returns their pids.
    async fn online(&mut self, n: usize) -> Vec<u32> {
        let mut pids = Vec::new();
        let mut online = 0;
        while online < n {
            let line = self.line().await.expect("the primary ended early");
            let words: Vec<_> = line.split(' ').collect();
            match words.as_slice() {
                ["fork", _, pid] => pids.push(pid.parse().unwrap()),
                ["online", _] => online += 1,
                _ => {}
            }
        }
        pids
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z" | "X" | "x"))
        }
    }
}

/// Poll until none of `pids` is alive, within `bound`.
async fn all_gone(pids: &[u32], bound: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_primary_leaves_no_worker_alive() {
    let mut primary = Primary::start("echo", 2);
    let pids = primary.online(2).await;
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));
    primary.signal(nix::sys::signal::Signal::SIGKILL);
    let status = tokio::time::timeout(BOUND, primary.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    // The parent-death signal is immediate; one second is the promise, and
    // the poll stops as soon as both are gone.
    assert!(
        all_gone(&pids, Duration::from_secs(1)).await,
        "workers {pids:?} outlived their primary"
    );
}

/// The window a worker start without `fork` opens (issue 25): a worker sets
/// its parent-death signal itself, at its role check, so a primary that
/// dies before that check must still take it along. 200 primaries of 2
/// `stubborn` workers, each SIGKILLed while its workers start (some before
/// they ask for their role): the harness, a child subreaper, sees every
/// orphan and waits until none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_sigkilled_while_its_workers_start_leaves_none_behind() {
    let out = tokio::time::timeout(
        Duration::from_secs(100),
        Command::new(HELPER)
            .args(["kill-while-starting", "200"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the harness timed out")
    .expect("run the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().last() == Some("ok 200"),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_by_the_deadline_despite_a_stubborn_worker() {
    let mut primary = Primary::start("stubborn", 2);
    let pids = primary.online(2).await;
    primary.signal(nix::sys::signal::Signal::SIGTERM);
    let mut exits = Vec::new();
    loop {
        match primary.line().await {
            Some(line) if line == "done" => break,
            Some(line) if line.starts_with("exit ") => exits.push(line),
            Some(_) => {}
            None => panic!("the primary ended without `done`"),
        }
    }
    exits.sort();
    assert_eq!(exits, ["exit 1 signal SIGKILL", "exit 2 signal SIGKILL"]);
    let status = tokio::time::timeout(BOUND, primary.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(pids.iter().all(|p| !alive(*p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_output_is_prefixed_per_line_and_sigint_is_graceful() {
    let mut primary = Primary::start("print", 2);
    let mut want = vec![
        "[worker 1] hello from worker 1".to_string(),
        "[worker 2] hello from worker 2".to_string(),
    ];
    while !want.is_empty() {
        let line = primary.line().await.expect("the primary ended early");
        want.retain(|w| *w != line);
    }
    primary.signal(nix::sys::signal::Signal::SIGINT);
    let mut exits = Vec::new();
    while let Some(line) = primary.line().await {
        if line.starts_with("exit ") {
            exits.push(line);
        }
    }
    exits.sort();
    assert_eq!(exits, ["exit 1 exit code 0", "exit 2 exit code 0"]);
    let status = tokio::time::timeout(BOUND, primary.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// SIGHUP reloads every worker, SIGTERM then shuts down and the primary
/// exits 0: with the handling turned on in the settings given to
/// `Cluster::new`, or through `Cluster::setup` (which used to be ignored:
/// SIGHUP then killed the primary).
async fn sighup_reloads_and_sigterm_shuts_down(args: &[&str]) {
    let mut primary = Primary::start_with("echo", args);
    let old = primary.online(2).await;
    primary.signal(nix::sys::signal::Signal::SIGHUP);
    let mut lines = Vec::new();
    loop {
        let line = primary.line().await.expect("the primary ended early");
        lines.push(line.clone());
        if line.starts_with("reload done") || line.starts_with("reload failed") {
            break;
        }
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("reload done"),
        "{lines:#?}"
    );
    assert_eq!(
        lines.first().map(String::as_str),
        Some("reload started"),
        "{lines:#?}"
    );
    for new in ["online 3", "online 4"] {
        assert!(lines.iter().any(|l| l == new), "{lines:#?}");
    }
    primary.signal(nix::sys::signal::Signal::SIGTERM);
    while let Some(line) = primary.line().await {
        if line == "done" {
            break;
        }
    }
    let status = tokio::time::timeout(BOUND, primary.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        all_gone(&old, BOUND).await,
        "the replaced workers {old:?} are still alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_with_signals_in_the_settings() {
    sighup_reloads_and_sigterm_shuts_down(&["primary", "2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_with_signals_turned_on_through_setup() {
    sighup_reloads_and_sigterm_shuts_down(&["primary", "2", "setup"]).await;
}
