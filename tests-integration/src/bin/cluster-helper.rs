//! Helper program of the integration tests and the bench: a worker whose
//! behaviour is chosen by `HELPER_MODE`, or, run directly as
//! `cluster-helper primary <n>`, a primary of `n` such workers.
//!
//! Worker modes: `echo` (answer every message, and a message that does not
//! decode with `Text("undecodable")`; exit 0 when disconnected),
//! `exit:<code>` (exit with the code once online), `hang` (block the runtime
//! once online), `stubborn` (ignore SIGTERM and disconnection),
//! `fail-if:<path>` (exit 3 before connecting when the file exists, else
//! `echo`), `hang-if:<path>` (block for good before connecting when the
//! file exists, else `echo`), `wait-while:<path>` (connect only once the
//! file is gone, then `echo`), `print` (print a line, then `echo`), `leave` (disconnect by
//! itself, exit 0), `garbage` (send a message the primary cannot decode,
//! then `echo`), `burst:<n>` (send `Pong { worker, n }` for n in `0..<n>`,
//! flush, exit 0), `outlive` (`echo`; once `recv` ends, await
//! `primary_gone`, print `primary gone`, exit 0), `tokio-main` (a worker written with `#[tokio::main]`:
//! before asking its role, and again once connected, it runs this program
//! as `cluster-helper report-role` and sends `Text("before: <line>")` and
//! `Text("after: <line>")` with the line it printed, then `echo`),
//! `stubborn` again: started without arguments, yet not a worker, it
//! sleeps 600 s (see `kill-while-starting`),
//! `wrong-token` (not through `Worker`: adopt the channel with
//! `cluster-ipc` and answer the handshake with another launch token, then
//! wait until the channel closes), `listen` (listen on 127.0.0.1:0, report it, then `echo`),
//! `serve` (listen through the primary on `HELPER_ADDR`, default
//! 127.0.0.1:0; answer each connection with `<worker id>\n`, keep it until
//! the client closes; when disconnected, finish the open connections and
//! exit 0), `serve-report` (`serve`, and send `Text("accepted")` for each
//! connection), `refuse` (listen through the primary, drop the listener, so
//! every connection handed over is refused, then `echo`), `listen-report` (listen on
//! `HELPER_ADDR` and send `Text("ok <addr>")` or
//! `Text("error <kind> <io kind>")`, then `echo`), `spew` (a thread prints
//! [`SPEW_LINES`] numbered lines `spew <id> <n> <x × (n % 97)>` to stdout
//! while the runtime serves connections on `HELPER_ADDR` like `serve` and
//! answers each `Ping` with `Pong { n: lines printed so far }`),
//! `spew-inline` (prints those lines from the runtime's only thread, so a
//! blocked write blocks the runtime and its heartbeat, then `echo`),
//! `listen-twice` (listen through the primary on `HELPER_ADDR`, then on
//! `HELPER_ADDR2`; exit 1 when that fails), `listen-gone` (ask for every
//! kind of listener at once and print `<call> <Error variant>` for each, as
//! the requests end).
//!
//! Operations (issue 14): `serve-alloc` (`serve`, and on each `Ping(n)`
//! allocate and touch `n` MiB more, kept, then answer `Pong { n }`),
//! `json-lines` (a thread prints `HELPER_LINES`, default 2000, JSON lines
//! `{"w":<id>,"n":<n>,"pad":"<x × (n × 37 % 3000)>"}` to stdout, then
//! `echo`). `supervise` takes `HELPER_OUTPUT` (`raw` or `json`: the
//! forwarding format).
//!
//! `versioned` (listen through the primary like `serve`; on each
//! connection answer every line with `<HELPER_VERSION> <worker id> <pid>`;
//! once draining, answer the next request with ` close` appended and close,
//! or close after 5 s without one; with `HELPER_UDP`, also bind that UDP
//! address and answer each datagram with the version; the version
//! `nolisten` exits 1 at start instead).
//!
//! Every kind of listener: the modes that listen (`serve`, `serve-report`,
//! `versioned`) listen on the primary's descriptor `HELPER_FD` when it is
//! set (a TCP or Unix-domain socket given to `Cluster::inherit_socket`),
//! else on the Unix-domain socket `HELPER_UNIX` when it is set (a path, or
//! an abstract name after `@`; with `HELPER_UNIX_MODE`, octal, as its file's
//! mode), else on the TCP address `HELPER_ADDR`: one generic loop over
//! `Listener<S>` serves them all. `listen-unix-report` (`listen-report` for
//! `HELPER_UNIX`; `HELPER_FD` set: for that descriptor of the primary),
//! `udp` (bind `HELPER_ADDR` as UDP through the primary and answer each
//! datagram with `<worker id> <source port>`, pausing 2 ms after each so the
//! others take their share; when disconnected, exit 0).
//!
//! The primary prints `fork <id> <pid>`, `online <id>`, `exit <id> <exit>`,
//! `reload started` and `reload done` (or `reload failed <error>`) lines,
//! handles SIGTERM/SIGINT with a 1 s deadline and reloads on SIGHUP, and
//! prints `done` when every worker has exited. With `setup` after `<n>`, it
//! turns the signal handling on through `Cluster::setup` rather than in the
//! settings given to `Cluster::new`. `cluster-helper supervise <n>` is a primary whose
//! stdout carries only the forwarded worker output (piped): it reports its
//! events on stderr (`fork`, `online`, `listening <id> <addr>`, `exit`,
//! `unresponsive <id>`, `restart <slot> <delay ms>`, `gave-up <slot>`, `pong <id> <n>`,
//! `done`) through `cluster_core::output`, broadcasts a `Ping` for each
//! `ping` line on stdin, takes a heartbeat from `HELPER_HEARTBEAT_MS`
//! (`<interval>,<timeout>`) and a crash-loop limit from
//! `HELPER_MAX_RESTARTS` (per minute). `cluster-helper raw` writes one byte to stdout
//! and exits (the bench's bare-process baseline). `cluster-helper
//! report-role` prints `<role> fd3=<socket|none>`: its role, and whether
//! it inherited a socket at descriptor 3 (the channel's number).
//!
//! `cluster-helper upgradable <n>` is a primary of `n` `versioned` workers
//! that can upgrade itself: its version is the first word of the file named
//! by `HELPER_VERSION_FILE` (read at start; the word `exit` makes it exit 7
//! at once, a broken new binary, and `hang` makes it print `<pid> hanging`
//! and sleep, one never ready; `nolisten` starts workers that never
//! listen), its workers listen on `HELPER_ADDR` (or `HELPER_UNIX`; or, with
//! `HELPER_INHERIT`, `<addr>` or `unix:<path>`, on a socket the primary
//! holds already — an upgrade handed it on — or opens and gives to
//! `Cluster::inherit_socket`), it writes `HELPER_PID_FILE` if set;
//! `HELPER_UPGRADE_TIMEOUT_MS` is its upgrade timeout (default 20 s),
//! `HELPER_READY_TIMEOUT_MS` its ready timeout (default 30 s). SIGUSR2
//! upgrades it through `Settings::upgrade_on_signal`, SIGUSR1 through
//! `Cluster::upgrade`, SIGWINCH reloads it, SIGTERM drains it. Each line it
//! prints starts with its pid: `<pid> ready <version> <addr>` (or
//! `unix:<path>`), `<pid> udp <addr>`, `<pid> upgraded <new pid>`,
//! `<pid> upgrade-failed <reason>`, `<pid> done`.
//!
//! `cluster-helper stall <n>` is a primary on a current-thread runtime that
//! measures the longest stall of its event loop through a kill storm, a
//! reload, `stats()` calls and an upgrade (see `src/helper/stall.rs`).
//!
//! `cluster-helper kill-while-starting <reps>` is the orphan test's harness
//! (issue 25): a child subreaper (so every orphan comes to it) that `reps`
//! times starts `cluster-helper primary 2` of `stubborn` workers (which only
//! a signal ends) and SIGKILLs it while they start (at once; at its first
//! `fork` line; a few hundred microseconds after it; or at that line with
//! `HELPER_ROLE_DELAY_MS=20`, so the workers ask for their role only after
//! their primary is gone), then waits until no descendant is left (10 s at
//! most per round). It prints `ok <reps>`, or `left <round> <pids>` and
//! exits 1. Any process of this program waits `HELPER_ROLE_DELAY_MS`
//! before it asks for its role.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cluster_core::output::Output;
use cluster_core::{Cluster, CrashLoopLimit, Event, Settings, Worker};
use serde::{Deserialize, Serialize};

/// The test's message type. The tests declare the same enum but for the
/// last variant, which differs on purpose: each side's variant 3 does not
/// decode on the other side (a unit there, a `u64` here), which is how each
/// sends the other a message it cannot decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Text(String),
    Ping(u64),
    Pong { worker: u64, n: u64 },
    HelperOnly(u64),
}

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[path = "../helper/stall.rs"]
mod stall;

fn main() -> BoxResult {
    if let Some(ms) = std::env::var("HELPER_ROLE_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("report-role") {
        println!("{:?} fd3={}", cluster_core::role(), fd3());
        return Ok(());
    }
    match std::env::var("HELPER_MODE").as_deref() {
        Ok("tokio-main") => return tokio_main(),
        Ok("wrong-token") => return wrong_token(),
        _ => {}
    }
    if cluster_core::is_worker() {
        // Socket activation and notify are the primary's alone.
        if [
            "LISTEN_FDS",
            "LISTEN_PID",
            "NOTIFY_SOCKET",
            "PROCWORK_UPGRADE_FD",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some())
        {
            std::process::exit(9);
        }
        let mode = std::env::var("HELPER_MODE").unwrap_or_else(|_| "echo".into());
        return worker(&mode);
    }
    match args.first().map(String::as_str) {
        // The bench's raw baseline: the bare process start of this binary.
        Some("raw") => {
            use std::io::Write;
            std::io::stdout().write_all(b"!")?;
            Ok(())
        }
        Some("primary") => {
            let n: usize = args.get(1).map_or(Ok(2), |s| s.parse())?;
            let via_setup = args.get(2).is_some_and(|a| a == "setup");
            tokio::runtime::Runtime::new()?.block_on(primary(n, via_setup))
        }
        Some("supervise") => {
            let n: usize = args.get(1).map_or(Ok(2), |s| s.parse())?;
            tokio::runtime::Runtime::new()?.block_on(supervise(n))
        }
        Some("stall") => stall::main(args.get(1).map_or(Ok(4), |s| s.parse())?),
        // A cluster of `Settings::new()`, whatever the environment says:
        // prints the settings in force (`Debug`), forks nothing.
        Some("bare-primary") => tokio::runtime::Runtime::new()?.block_on(async {
            let cluster = Cluster::<Msg>::new(Settings::new())?;
            println!("{:?}", cluster.settings());
            Ok(())
        }),
        Some("kill-while-starting") => {
            let reps: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
            kill_while_starting(reps)
        }
        Some("upgradable") => {
            let n: usize = args.get(1).map_or(Ok(2), |s| s.parse())?;
            let version = match std::env::var("HELPER_VERSION_FILE") {
                Ok(path) => std::fs::read_to_string(path)?
                    .split_whitespace()
                    .next()
                    .unwrap_or("v0")
                    .to_owned(),
                Err(_) => "v0".to_owned(),
            };
            if version == "exit" {
                std::process::exit(7);
            }
            if version == "hang" {
                println!("{} hanging", std::process::id());
                std::thread::sleep(Duration::from_secs(600));
            }
            tokio::runtime::Runtime::new()?.block_on(upgradable(n, version))
        }
        // Started as a `stubborn` worker, yet not a worker: the worker of a
        // primary that died before it asked for its role, had the library
        // let it run. It runs on, as a program that found itself a primary
        // would: the orphan test must see it die.
        None if std::env::var("HELPER_MODE").as_deref() == Ok("stubborn") => {
            std::thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        _ => {
            Err(
                "usage: cluster-helper primary <n> [setup] | supervise <n> | upgradable <n> | stall <n> | bare-primary"
                    .into(),
            )
        }
    }
}

fn worker(mode: &str) -> BoxResult {
    if let Some(path) = mode.strip_prefix("fail-if:")
        && std::path::Path::new(path).exists()
    {
        std::process::exit(3);
    }
    if let Some(path) = mode.strip_prefix("wait-while:") {
        // Come online only once the file is gone (bounded: a minute).
        for _ in 0..6000 {
            if !std::path::Path::new(path).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some(path) = mode.strip_prefix("hang-if:")
        && std::path::Path::new(path).exists()
    {
        std::thread::sleep(Duration::from_secs(600));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Caught and never read: SIGTERM does nothing to a stubborn worker.
        let _sigterm = if mode == "stubborn" {
            Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            )?)
        } else {
            None
        };
        let mut w = Worker::<Msg>::connect().await?;
        if let Some(code) = mode.strip_prefix("exit:") {
            std::process::exit(code.parse()?);
        }
        if let Some(n) = mode.strip_prefix("burst:") {
            for n in 0..n.parse()? {
                w.send(&Msg::Pong {
                    worker: w.id().0,
                    n,
                })
                .await?;
            }
            w.flush().await?;
            return Ok(());
        }
        if mode == "serve-alloc" {
            return serve_alloc(w).await;
        }
        if mode == "json-lines" {
            let id = w.id().0;
            let n: u64 = std::env::var("HELPER_LINES").map_or(Ok(2000), |v| v.parse())?;
            std::thread::spawn(move || {
                for i in 0..n {
                    println!("{}", json_line(id, i));
                }
            });
        }
        if mode.starts_with("serve") {
            return serve(w, mode).await;
        }
        if mode == "spew" {
            return spew(w).await;
        }
        if mode == "spew-inline" {
            // On the runtime's only thread: a blocked write blocks it all.
            for n in 0..SPEW_LINES {
                println!("{}", spew_line(w.id().0, n));
            }
        }
        if mode == "udp" {
            return other::udp(w).await;
        }
        if mode == "listen-gone" {
            return other::listen_gone(&w).await;
        }
        if mode == "versioned" {
            return versioned(w).await;
        }
        // Kept open while the worker runs.
        let mut _listener: Option<Box<dyn std::any::Any>> = None;
        match mode {
            // Block the runtime: the heartbeat task starves.
            "hang" => std::thread::sleep(Duration::from_secs(600)),
            "print" => println!("hello from worker {}", w.id()),
            "leave" => {
                w.disconnect().await?;
                return Ok(());
            }
            // The primary's `Msg` has a unit variant 3: not this.
            "garbage" => w.send(&Msg::HelperOnly(7)).await?,
            "refuse" => drop(w.listen(helper_addr()?).await?),
            // Listen (the primary binds), then fail to listen on
            // HELPER_ADDR2 (a port taken): exit 1 soon after listening.
            "listen-twice" => {
                let first = w.listen(helper_addr()?).await?;
                let second: std::net::SocketAddr = std::env::var("HELPER_ADDR2")?.parse()?;
                w.listen(second).await?;
                _listener = Some(Box::new(first));
            }
            "listen-report" => {
                let report = match w.listen(helper_addr()?).await {
                    Ok(l) => {
                        let report = format!("ok {}", l.local_addr());
                        _listener = Some(Box::new(l));
                        report
                    }
                    Err(cluster_core::Error::Listen { kind, source, .. }) => {
                        format!("error {kind:?} {:?}", source.kind())
                    }
                    Err(e) => return Err(e.into()),
                };
                w.send(&Msg::Text(report)).await?;
            }
            "listen-unix-report" => {
                let (report, l) = other::listen_report(&w).await?;
                _listener = l;
                w.send(&Msg::Text(report)).await?;
            }
            "listen" => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                w.listening(l.local_addr()?).await?;
                _listener = Some(Box::new(l));
            }
            _ => {}
        }
        echo(&mut w).await?;
        if mode == "outlive" {
            w.primary_gone().await;
            println!("primary gone");
        }
        if mode == "stubborn" {
            std::thread::sleep(Duration::from_secs(600));
        }
        Ok(())
    })
}

/// Answer every message until disconnected; a message that does not decode
/// is answered with `Text("undecodable")`.
async fn echo(w: &mut Worker<Msg>) -> BoxResult {
    loop {
        let reply = match w.recv().await {
            Ok(Some(Msg::Ping(n))) => Msg::Pong {
                worker: w.id().0,
                n,
            },
            Ok(Some(other)) => other,
            Ok(None) => return Ok(()),
            Err(cluster_core::Error::Ipc(_)) => Msg::Text("undecodable".into()),
            Err(e) => return Err(e.into()),
        };
        w.send(&reply).await?;
    }
}

/// A worker written the way most tokio programs start: a multi-threaded
/// runtime is running before anything asks for the role.
#[tokio::main]
async fn tokio_main() -> BoxResult {
    let before = report_role()?;
    if !cluster_core::is_worker() {
        return Err("tokio-main: not a worker".into());
    }
    let mut w = Worker::<Msg>::connect().await?;
    let after = report_role()?;
    w.send(&Msg::Text(format!("before: {before}"))).await?;
    w.send(&Msg::Text(format!("after: {after}"))).await?;
    echo(&mut w).await
}

/// Pass for the worker the primary launched, but with another token.
fn wrong_token() -> BoxResult {
    use cluster_ipc::{Config, Handshake};
    let env = std::env::var(cluster_core::WORKER_ENV)?;
    let id: u64 = env.split(':').next().ok_or("no worker id")?.parse()?;
    // SAFETY: this mode only runs as a worker the test's primary launched
    // (this process is the one the channel was handed to), before anything
    // else here adopted the descriptor.
    let fd = unsafe { cluster_ipc::from_env() }?.ok_or("no channel")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ours = Handshake::for_this_process(id).with_token(0xbad);
        let (_tx, mut rx, _) = cluster_ipc::handshake(fd, ours, Config::default()).await?;
        while rx.recv_raw().await.is_ok() {}
        Ok(())
    })
}

/// Run this program as `report-role` (inheriting this process's
/// environment) and return the line it printed.
fn report_role() -> BoxResult<String> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("report-role")
        .stderr(std::process::Stdio::inherit())
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// What descriptor 3 is in this process: `socket` or `none` (closed, or not
/// a socket). Read through `/proc` (Linux), which opens no descriptor.
fn fd3() -> &'static str {
    match std::fs::read_link("/proc/self/fd/3") {
        Ok(target) if target.to_string_lossy().starts_with("socket:") => "socket",
        _ => "none",
    }
}

fn helper_addr() -> BoxResult<std::net::SocketAddr> {
    Ok(std::env::var("HELPER_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:0".into())
        .parse()?)
}

/// Serve connections from the primary until disconnected, then finish the
/// open ones and return (exit 0). On whatever the environment names
/// (`other::listen_any`): one generic loop for every kind of listener.
async fn serve(w: Worker<Msg>, mode: &str) -> BoxResult {
    let report = mode == "serve-report";
    let chatty = match mode.strip_prefix("serve-chatty:") {
        Some(n) => n.parse()?,
        None => 0,
    };
    match other::listen_any(&w).await? {
        cluster_core::FdListener::Tcp(l) => serve_on(&w, l, report, chatty).await,
        cluster_core::FdListener::Unix(l) => serve_on(&w, l, report, chatty).await,
        other => Err(format!("not a stream listener: {other:?}").into()),
    }
}

async fn serve_on<S: cluster_core::ListenStream>(
    w: &Worker<Msg>,
    mut listener: cluster_core::Listener<S>,
    report: bool,
    chatty: u64,
) -> BoxResult {
    let id = w.id().0;
    // Messages the primary may not read for a while, sent before any
    // connection is served (`serve-chatty:<n>`).
    for n in 0..chatty {
        w.send(&Msg::Pong { worker: id, n }).await?;
    }
    let mut open = tokio::task::JoinSet::new();
    while let Some((conn, _peer)) = listener.accept().await {
        if report {
            w.send(&Msg::Text("accepted".into())).await?;
        }
        open.spawn(answer(conn, id));
    }
    while open.join_next().await.is_some() {}
    w.flush().await?;
    Ok(())
}

/// Answer a connection with the worker id, keep it until the client
/// closes.
async fn answer<C>(mut conn: C, id: u64)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = conn.write_all(format!("{id}\n").as_bytes()).await;
    let mut sink = [0u8; 64];
    while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// `json-lines`' line `n` of worker `id` (the tests rebuild it).
fn json_line(id: u64, n: u64) -> String {
    format!(
        "{{\"w\":{id},\"n\":{n},\"pad\":\"{}\"}}",
        "x".repeat((n * 37 % 3000) as usize)
    )
}

/// `serve`, and grow by `n` MiB on each `Ping(n)`.
async fn serve_alloc(mut w: Worker<Msg>) -> BoxResult {
    let mut listener = w.listen(helper_addr()?).await?;
    let id = w.id().0;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    let mut open = tokio::task::JoinSet::new();
    let mut recv_open = true;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((conn, _peer)) = accepted else { break };
                open.spawn(answer(conn, id));
            }
            msg = w.recv(), if recv_open => match msg {
                Ok(Some(Msg::Ping(mib))) => {
                    // Written, so resident.
                    hoard.push(vec![1u8; (mib as usize) << 20]);
                    w.send(&Msg::Pong { worker: id, n: mib }).await?;
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => recv_open = false,
            },
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    while open.join_next().await.is_some() {}
    drop(hoard);
    w.flush().await?;
    Ok(())
}

/// How many lines a `spew` worker prints.
const SPEW_LINES: u64 = 20_000;

/// The `n`th line of worker `id`'s spew: its length varies with `n`.
fn spew_line(id: u64, n: u64) -> String {
    format!("spew {id} {n} {}", "x".repeat((n % 97) as usize))
}

/// Print from a thread of its own while serving connections and answering
/// pings with the count of lines printed.
async fn spew(mut w: Worker<Msg>) -> BoxResult {
    let id = w.id().0;
    let printed = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&printed);
    std::thread::spawn(move || {
        for n in 0..SPEW_LINES {
            println!("{}", spew_line(id, n));
            count.store(n + 1, Ordering::SeqCst);
        }
    });
    let mut listener = w.listen(helper_addr()?).await?;
    let mut open = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((conn, _peer)) = accepted else { break };
                open.spawn(answer(conn, id));
            }
            msg = w.recv() => match msg {
                Ok(Some(Msg::Ping(_))) => {
                    let n = printed.load(Ordering::SeqCst);
                    w.send(&Msg::Pong { worker: id, n }).await?;
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            },
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    Ok(())
}

/// A primary whose stdout is only the forwarded worker output; events go to
/// stderr, through the non-blocking [`Output`].
async fn supervise(n: usize) -> BoxResult {
    // The operator's variables (`CLUSTER_SCHED_POLICY`, `CLUSTER_*`), then
    // ours; no logs on stderr, whatever `RUST_LOG` says (the tests read it).
    let mut settings = Settings::from_env()?;
    settings
        .no_logs()
        .n_workers(n)
        .handle_signals()
        .shutdown_deadline(Duration::from_secs(1));
    if let Ok(mode) = std::env::var("HELPER_WORKER_MODE") {
        settings.env("HELPER_MODE", mode);
    }
    if let Ok(ms) = std::env::var("HELPER_HEARTBEAT_MS") {
        let (interval, timeout) = ms.split_once(',').ok_or("HELPER_HEARTBEAT_MS")?;
        settings.heartbeat(
            Duration::from_millis(interval.parse()?),
            Duration::from_millis(timeout.parse()?),
        );
    }
    match std::env::var("HELPER_OUTPUT").as_deref() {
        Ok("raw") => {
            settings.worker_output(cluster_core::WorkerOutput::Raw);
        }
        Ok("json") => {
            settings.worker_output(cluster_core::WorkerOutput::Json);
        }
        _ => {}
    }
    if let Ok(max) = std::env::var("HELPER_MAX_RESTARTS") {
        settings.crash_loop_limit(CrashLoopLimit {
            max_restarts: max.parse()?,
            window: Duration::from_secs(60),
        });
    }
    let mut cluster = Cluster::<Msg>::new(settings)?;
    cluster.start()?;
    // stdin on a thread of its own: one `ping` per line.
    let (pings_tx, mut pings) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if pings_tx.send(line).is_err() {
                return;
            }
        }
    });
    let err = Output::stderr();
    let mut seq = 0;
    loop {
        let ev = tokio::select! {
            ev = cluster.next_event() => match ev {
                Some(ev) => ev,
                None => break,
            },
            Some(cmd) = pings.recv() => {
                if cmd.trim() == "ping" {
                    seq += 1;
                    cluster.broadcast(&Msg::Ping(seq)).await;
                }
                continue;
            }
        };
        let line = match ev {
            Event::Fork { worker, pid, .. } => format!("fork {worker} {pid}"),
            Event::Online { worker, .. } => format!("online {worker}"),
            Event::Listening { worker, addr, .. } => format!("listening {worker} {addr}"),
            Event::Exit { worker, exit, .. } => format!("exit {worker} {exit}"),
            Event::Unresponsive { worker, .. } => format!("unresponsive {worker}"),
            Event::RestartScheduled { slot, delay } => {
                format!("restart {slot} {}", delay.as_millis())
            }
            Event::GaveUp { slot, .. } => format!("gave-up {slot}"),
            Event::Message(m) => match m.value() {
                Msg::Pong { worker, n } => format!("pong {worker} {n}"),
                other => format!("message {other:?}"),
            },
            _ => continue,
        };
        err.line_wait(line).await;
    }
    err.line_wait("done").await;
    err.flush().await;
    Ok(())
}

async fn primary(n: usize, via_setup: bool) -> BoxResult {
    // The operator's variables (`CLUSTER_SCHED_POLICY`, `CLUSTER_*`), then
    // ours; no logs on stderr, whatever `RUST_LOG` says (the tests read it).
    let mut settings = Settings::from_env()?;
    settings
        .no_logs()
        .n_workers(n)
        .shutdown_deadline(Duration::from_secs(1));
    if !via_setup {
        settings.handle_signals().reload_on_hangup();
    }
    if let Ok(mode) = std::env::var("HELPER_WORKER_MODE") {
        settings.env("HELPER_MODE", mode);
    }
    let mut cluster = Cluster::<Msg>::new(settings)?;
    if via_setup {
        cluster.setup(|s| {
            s.handle_signals().reload_on_hangup();
        })?;
    }
    cluster.start()?;
    while let Some(ev) = cluster.next_event().await {
        match ev {
            Event::Fork { worker, pid, .. } => println!("fork {worker} {pid}"),
            Event::Online { worker, .. } => println!("online {worker}"),
            Event::Exit { worker, exit, .. } => println!("exit {worker} {exit}"),
            Event::ReloadStarted => println!("reload started"),
            Event::ReloadFinished { error: None } => println!("reload done"),
            Event::ReloadFinished { error: Some(e) } => println!("reload failed {e}"),
            _ => {}
        }
    }
    println!("done");
    Ok(())
}

/// The orphan test's harness (see the module docs): `reps` primaries
/// SIGKILLed while their workers start, each round ended only once every
/// descendant is gone.
fn kill_while_starting(reps: usize) -> BoxResult {
    use std::io::BufRead;

    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::Pid;

    // Every orphan below us is re-parented to us, so we can wait for it.
    nix::sys::prctl::set_child_subreaper(true)?;
    let exe = std::env::current_exe()?;
    for round in 0..reps {
        let mut command = std::process::Command::new(&exe);
        command
            .args(["primary", "2"])
            .env("HELPER_WORKER_MODE", "stubborn")
            .env_remove("HELPER_ROLE_DELAY_MS")
            .stdout(std::process::Stdio::piped());
        if round % 4 == 3 {
            command.env("HELPER_ROLE_DELAY_MS", "20");
        }
        let mut primary = command.spawn()?;
        if round % 4 != 0 {
            let stdout = primary.stdout.take().ok_or("no stdout")?;
            let mut lines = std::io::BufReader::new(stdout).lines();
            // The first worker is spawned (both are, in one batch).
            while let Some(line) = lines.next().transpose()? {
                if line.starts_with("fork ") {
                    break;
                }
            }
            if round % 4 == 2 {
                std::thread::sleep(Duration::from_micros(200 * (round as u64 / 4 % 5)));
            }
        }
        kill(Pid::from_raw(primary.id() as i32), Signal::SIGKILL)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    if std::time::Instant::now() > deadline {
                        let left = children_of(std::process::id());
                        // What each one is: its command line, state and own
                        // children, for the failure's message.
                        let what: Vec<String> = left.iter().map(|pid| describe(*pid)).collect();
                        println!("left {round} {left:?} {what:?}");
                        for pid in left {
                            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        }
                        std::process::exit(1);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(_) => {}
                Err(nix::errno::Errno::ECHILD) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    println!("ok {reps}");
    Ok(())
}

/// A process's command line, state, environment's role variables and
/// children, in one line.
fn describe(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_owned()))
        .unwrap_or_default();
    let env: Vec<String> = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .filter(|v| v.starts_with("CLUSTER") || v.starts_with("HELPER"))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{pid} [{state}] {cmdline} {env:?} children {:?}",
        children_of(pid)
    )
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

mod other {
    //! The modes of the other kinds of listener (Unix-domain, UDP,
    //! descriptors).

    use cluster_core::{FdListener, UnixAddr, Worker};

    use super::{BoxResult, Msg};

    fn unix_addr() -> BoxResult<UnixAddr> {
        let v = std::env::var("HELPER_UNIX")?;
        Ok(match v.strip_prefix('@') {
            Some(name) => UnixAddr::abstract_name(name),
            None => UnixAddr::from(v.as_str()),
        })
    }

    async fn listen_unix(w: &Worker<Msg>) -> cluster_core::Result<cluster_core::UnixListener> {
        let addr = unix_addr().map_err(|_| cluster_core::Error::NotAWorker)?;
        match std::env::var("HELPER_UNIX_MODE") {
            Ok(m) => {
                let mode = u32::from_str_radix(&m, 8).unwrap_or(0o600);
                w.listen_unix_with_mode(addr, mode).await
            }
            Err(_) => w.listen_unix(addr).await,
        }
    }

    fn helper_fd() -> Option<i32> {
        std::env::var("HELPER_FD").ok()?.parse().ok()
    }

    /// `ok <what>` or `error <kind> <io kind>`, and the listener to keep.
    pub(super) async fn listen_report(
        w: &Worker<Msg>,
    ) -> BoxResult<(String, Option<Box<dyn std::any::Any>>)> {
        let res = match helper_fd() {
            Some(fd) => w
                .listen_fd(fd)
                .await
                .map(|l| -> Box<dyn std::any::Any> { Box::new(l) }),
            None => listen_unix(w)
                .await
                .map(|l| -> Box<dyn std::any::Any> { Box::new(l) }),
        };
        Ok(match res {
            Ok(l) => ("ok".into(), Some(l)),
            Err(cluster_core::Error::ListenOn { kind, source, .. }) => {
                (format!("error {kind:?} {:?}", source.kind()), None)
            }
            Err(e) => return Err(e.into()),
        })
    }

    /// The listener the environment names: the primary's descriptor
    /// `HELPER_FD`, else the Unix-domain socket `HELPER_UNIX`, else the TCP
    /// address `HELPER_ADDR`.
    pub(super) async fn listen_any(w: &Worker<Msg>) -> BoxResult<FdListener> {
        if let Some(fd) = helper_fd() {
            return Ok(w.listen_fd(fd).await?);
        }
        if std::env::var_os("HELPER_UNIX").is_some() {
            return Ok(FdListener::Unix(listen_unix(w).await?));
        }
        Ok(FdListener::Tcp(w.listen(super::helper_addr()?).await?))
    }

    /// Ask for every kind of listener at once and print how each request
    /// ended: `<call> <Error variant>` (or `<call> ok`).
    pub(super) async fn listen_gone(w: &Worker<Msg>) -> BoxResult {
        fn outcome<T>(call: &str, r: cluster_core::Result<T>) -> String {
            match r {
                Ok(_) => format!("{call} ok"),
                Err(cluster_core::Error::PrimaryGone) => format!("{call} PrimaryGone"),
                Err(e) => format!("{call} {e:?}"),
            }
        }
        let local: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        let (tcp, unix, udp, fd) = tokio::join!(
            w.listen(local),
            w.listen_unix("/nonexistent/gone.sock"),
            w.bind_udp(local),
            w.listen_fd(1000),
        );
        println!("{}", outcome("listen", tcp));
        println!("{}", outcome("listen_unix", unix));
        println!("{}", outcome("bind_udp", udp));
        println!("{}", outcome("listen_fd", fd));
        Ok(())
    }

    /// Answer each datagram on the shared UDP socket with
    /// `<worker id> <source port>`.
    pub(super) async fn udp(mut w: Worker<Msg>) -> BoxResult {
        let socket = w.bind_udp(super::helper_addr()?).await?;
        let id = w.id().0;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                res = socket.recv_from(&mut buf) => {
                    let (_, peer) = res?;
                    socket.send_to(format!("{id} {}", peer.port()).as_bytes(), peer).await?;
                    // Busy for a moment: the other workers take the next ones.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                msg = w.recv() => {
                    if matches!(msg, Ok(None)) {
                        return Ok(());
                    }
                }
            }
        }
    }
}
/// The `versioned` worker: a line protocol with keep-alive and a clean
/// close when draining (see the module docs).
async fn versioned(w: Worker<Msg>) -> BoxResult {
    let version = std::env::var("HELPER_VERSION").unwrap_or_else(|_| "v0".into());
    if version == "nolisten" {
        // A new binary whose workers cannot serve.
        std::process::exit(1);
    }
    match other::listen_any(&w).await? {
        cluster_core::FdListener::Tcp(l) => versioned_on(&w, l, &version).await,
        cluster_core::FdListener::Unix(l) => versioned_on(&w, l, &version).await,
        other => Err(format!("not a stream listener: {other:?}").into()),
    }
}

async fn versioned_on<S: cluster_core::ListenStream>(
    w: &Worker<Msg>,
    mut listener: cluster_core::Listener<S>,
    version: &str,
) -> BoxResult {
    let hello: std::sync::Arc<str> = format!("{version} {} {}", w.id(), std::process::id()).into();
    if let Ok(addr) = std::env::var("HELPER_UDP") {
        // Each datagram is answered with the version.
        let udp = w.bind_udp(addr.parse()?).await?;
        let version = version.to_owned();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((_, peer)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(version.as_bytes(), peer).await;
            }
        });
    }
    let mut open = tokio::task::JoinSet::new();
    while let Some((conn, _peer)) = listener.accept().await {
        open.spawn(versioned_conn(conn, hello.clone(), w.drain_signal()));
    }
    while open.join_next().await.is_some() {}
    w.flush().await?;
    Ok(())
}

async fn versioned_conn<C>(
    conn: C,
    hello: std::sync::Arc<str>,
    mut drain: cluster_core::DrainSignal,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = tokio::io::split(conn);
    let mut lines = tokio::io::BufReader::new(read).lines();
    loop {
        let line = if drain.is_draining() {
            match tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
                Ok(line) => line,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                line = lines.next_line() => line,
                () = drain.wait() => continue,
            }
        };
        if !matches!(line, Ok(Some(_))) {
            return;
        }
        let closing = drain.is_draining();
        let answer = if closing {
            format!("{hello} close\n")
        } else {
            format!("{hello}\n")
        };
        if write.write_all(answer.as_bytes()).await.is_err() || closing {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// `HELPER_INHERIT` (`<addr>` or `unix:<path>`): the socket the primary
/// holds for it already (an upgrade handed it on), or one opened now and
/// given to the cluster; its descriptor number, for the workers.
fn inherit(cluster: &Cluster<Msg>, what: &str) -> BoxResult<i32> {
    use cluster_core::{InheritedSocket, ListenTarget, UnixAddr};
    let target = match what.strip_prefix("unix:") {
        Some(path) => ListenTarget::Unix(UnixAddr::from(path)),
        None => ListenTarget::Tcp(what.parse()?),
    };
    if let Some(fd) = cluster.inherited_fd(&target) {
        return Ok(fd);
    }
    let socket = match what.strip_prefix("unix:") {
        Some(path) => InheritedSocket::Unix(std::os::unix::net::UnixListener::bind(path)?),
        None => InheritedSocket::Tcp(std::net::TcpListener::bind(what)?),
    };
    Ok(cluster.inherit_socket(socket))
}

/// The `upgradable` primary (see the module docs).
async fn upgradable(n: usize, version: String) -> BoxResult {
    use tokio::signal::unix::{SignalKind, signal};
    let me = std::process::id();
    // The operator's variables (`CLUSTER_SCHED_POLICY`, `CLUSTER_*`), then
    // ours; no logs on stderr, whatever `RUST_LOG` says (the tests read it).
    let mut settings = Settings::from_env()?;
    settings
        .no_logs()
        .n_workers(n)
        .handle_signals()
        .upgrade_on_signal()
        .upgrade_timeout(Duration::from_millis(
            std::env::var("HELPER_UPGRADE_TIMEOUT_MS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(20_000),
        ))
        .ready_timeout(Duration::from_millis(
            std::env::var("HELPER_READY_TIMEOUT_MS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30_000),
        ))
        .shutdown_deadline(Duration::from_secs(10))
        .env("HELPER_MODE", "versioned")
        .env("HELPER_VERSION", &version);
    if let Ok(path) = std::env::var("HELPER_PID_FILE") {
        settings.pid_file(path);
    }
    let mut cluster = Cluster::<Msg>::new(settings)?;
    if let Ok(what) = std::env::var("HELPER_INHERIT") {
        let fd = inherit(&cluster, &what)?;
        cluster.setup(|s| {
            s.env("HELPER_FD", fd.to_string());
        })?;
    }
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut winch = signal(SignalKind::window_change())?;
    cluster.start()?;
    let mut listening = 0;
    loop {
        tokio::select! {
            ev = cluster.next_event() => match ev {
                Some(Event::Listening { addr, .. }) => {
                    listening += 1;
                    if listening == n {
                        println!("{me} ready {version} {addr}");
                    }
                }
                Some(Event::ListeningOn { endpoint: cluster_core::Endpoint::Udp(addr), .. }) => {
                    println!("{me} udp {addr}");
                }
                Some(Event::ListeningOn { endpoint: cluster_core::Endpoint::Unix(addr), .. }) => {
                    listening += 1;
                    if listening == n {
                        println!("{me} ready {version} unix:{addr}");
                    }
                }
                Some(Event::Upgraded { pid }) => println!("{me} upgraded {pid}"),
                Some(Event::UpgradeFailed { reason }) => println!("{me} upgrade-failed {reason}"),
                Some(_) => {}
                None => break,
            },
            // The API path; its outcome comes as an event too.
            _ = usr1.recv() => {
                let _ = cluster.upgrade().await;
            }
            _ = winch.recv() => {
                let _ = cluster.reload().await;
            }
        }
    }
    println!("{me} done");
    Ok(())
}
