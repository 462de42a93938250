//! Helper program of the integration tests and the bench: a worker whose
//! behaviour is chosen by `HELPER_MODE`, or, run directly as
//! `cluster-helper primary <n>`, a primary of `n` such workers.
//!
//! Worker modes: `echo` (answer every message, exit 0 when disconnected),
//! `exit:<code>` (exit with the code once online), `hang` (block the runtime
//! once online), `stubborn` (ignore SIGTERM and disconnection),
//! `fail-if:<path>` (exit 3 before connecting when the file exists, else
//! `echo`), `print` (print a line, then `echo`), `leave` (disconnect by
//! itself, exit 0), `garbage` (send a message the primary cannot decode, then
//! wait), `listen` (listen on 127.0.0.1:0, report it, then `echo`),
//! `serve` (listen through the primary on `HELPER_ADDR`, default
//! 127.0.0.1:0; answer each connection with `<worker id>\n`, keep it until
//! the client closes; when disconnected, finish the open connections and
//! exit 0), `serve-report` (`serve`, and send `Text("accepted")` for each
//! connection), `refuse` (listen through the primary, drop the listener, so
//! every connection handed over is refused, then `echo`), `listen-report` (listen on
//! `HELPER_ADDR` and send `Text("ok <addr>")` or
//! `Text("error <kind> <io kind>")`, then `echo`).
//!
//! `versioned` (listen through the primary on `HELPER_ADDR`; on each
//! connection answer every line with `<HELPER_VERSION> <worker id> <pid>`;
//! once draining, answer the next request with ` close` appended and close,
//! or close after 5 s without one).
//!
//! The primary prints `fork <id> <pid>`, `online <id>` and `exit <id> <exit>`
//! lines, handles SIGTERM/SIGINT with a 1 s deadline, and prints `done` when
//! every worker has exited. `cluster-helper raw` writes one byte to stdout
//! and exits (the bench's bare-process baseline).
//!
//! `cluster-helper upgradable <n>` is a primary of `n` `versioned` workers
//! that can upgrade itself: its version is the first word of the file named
//! by `HELPER_VERSION_FILE` (read at start; the word `exit` makes it exit 7
//! at once, a broken new binary, and `hang` makes it sleep, one never
//! ready), its workers listen on `HELPER_ADDR`, it writes `HELPER_PID_FILE`
//! if set; `HELPER_UPGRADE_TIMEOUT_MS` is its upgrade timeout (default
//! 20 s). SIGUSR2 upgrades it through
//! `Settings::upgrade_on_signal`, SIGUSR1 through `Cluster::upgrade`,
//! SIGWINCH reloads it, SIGTERM drains it. Each line it prints starts with
//! its pid: `<pid> ready <version> <addr>`, `<pid> upgraded <new pid>`,
//! `<pid> upgrade-failed <reason>`, `<pid> done`.

use std::time::Duration;

use cluster_core::{Cluster, Event, Settings, Worker};
use serde::{Deserialize, Serialize};

/// The test's message type (the tests declare the same enum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Text(String),
    Ping(u64),
    Pong { worker: u64, n: u64 },
}

/// Not `Msg`: its last variant has no counterpart there.
#[derive(Debug, Serialize, Deserialize)]
enum Garbage {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
}

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BoxResult {
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // The bench's raw baseline: the bare process start of this binary.
        Some("raw") => {
            use std::io::Write;
            std::io::stdout().write_all(b"!")?;
            Ok(())
        }
        Some("primary") => {
            let n: usize = args.get(1).map_or(Ok(2), |s| s.parse())?;
            tokio::runtime::Runtime::new()?.block_on(primary(n))
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
                std::thread::sleep(Duration::from_secs(600));
            }
            tokio::runtime::Runtime::new()?.block_on(upgradable(n, version))
        }
        _ => Err("usage: cluster-helper primary <n>".into()),
    }
}

fn worker(mode: &str) -> BoxResult {
    if let Some(path) = mode.strip_prefix("fail-if:")
        && std::path::Path::new(path).exists()
    {
        std::process::exit(3);
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
        if mode == "garbage" {
            // A type the primary cannot decode as `Msg` (variant 7).
            let w = Worker::<Garbage>::connect().await?;
            w.send(&Garbage::H).await?;
            w.flush().await?;
            std::future::pending::<()>().await;
        }
        let mut w = Worker::<Msg>::connect().await?;
        if let Some(code) = mode.strip_prefix("exit:") {
            std::process::exit(code.parse()?);
        }
        if mode.starts_with("serve") {
            return serve(w, mode).await;
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
            "refuse" => drop(w.listen(helper_addr()?).await?),
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
            "listen" => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                w.listening(l.local_addr()?).await?;
                _listener = Some(Box::new(l));
            }
            _ => {}
        }
        while let Some(msg) = w.recv().await {
            let reply = match msg {
                Msg::Ping(n) => Msg::Pong {
                    worker: w.id().0,
                    n,
                },
                other => other,
            };
            w.send(&reply).await?;
        }
        if mode == "stubborn" {
            std::thread::sleep(Duration::from_secs(600));
        }
        Ok(())
    })
}

fn helper_addr() -> BoxResult<std::net::SocketAddr> {
    Ok(std::env::var("HELPER_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:0".into())
        .parse()?)
}

/// Serve connections from the primary until disconnected, then finish the
/// open ones and return (exit 0).
async fn serve(w: Worker<Msg>, mode: &str) -> BoxResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut listener = w.listen(helper_addr()?).await?;
    let id = w.id().0;
    let mut open = tokio::task::JoinSet::new();
    while let Some((mut conn, _peer)) = listener.accept().await {
        if mode == "serve-report" {
            w.send(&Msg::Text("accepted".into())).await?;
        }
        open.spawn(async move {
            let _ = conn.write_all(format!("{id}\n").as_bytes()).await;
            // Held until the client closes.
            let mut sink = [0u8; 64];
            while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
        });
    }
    while open.join_next().await.is_some() {}
    w.flush().await?;
    Ok(())
}

async fn primary(n: usize) -> BoxResult {
    let mut settings = Settings::new();
    settings
        .n_workers(n)
        .handle_signals()
        .shutdown_deadline(Duration::from_secs(1));
    if let Ok(mode) = std::env::var("HELPER_WORKER_MODE") {
        settings.env("HELPER_MODE", mode);
    }
    let mut cluster = Cluster::<Msg>::new(settings)?;
    cluster.start()?;
    while let Some(ev) = cluster.next_event().await {
        match ev {
            Event::Fork { worker, pid, .. } => println!("fork {worker} {pid}"),
            Event::Online { worker } => println!("online {worker}"),
            Event::Exit { worker, exit, .. } => println!("exit {worker} {exit}"),
            _ => {}
        }
    }
    println!("done");
    Ok(())
}

/// The `versioned` worker: a line protocol with keep-alive and a clean
/// close when draining (see the module docs).
async fn versioned(w: Worker<Msg>) -> BoxResult {
    let mut listener = w.listen(helper_addr()?).await?;
    let version = std::env::var("HELPER_VERSION").unwrap_or_else(|_| "v0".into());
    let hello: std::sync::Arc<str> = format!("{version} {} {}", w.id(), std::process::id()).into();
    let mut open = tokio::task::JoinSet::new();
    while let Some((conn, _peer)) = listener.accept().await {
        open.spawn(versioned_conn(conn, hello.clone(), w.drain_signal()));
    }
    while open.join_next().await.is_some() {}
    w.flush().await?;
    Ok(())
}

async fn versioned_conn(
    conn: cluster_core::Connection,
    hello: std::sync::Arc<str>,
    mut drain: cluster_core::DrainSignal,
) {
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

/// The `upgradable` primary (see the module docs).
async fn upgradable(n: usize, version: String) -> BoxResult {
    use tokio::signal::unix::{SignalKind, signal};
    let me = std::process::id();
    let mut settings = Settings::new();
    settings
        .n_workers(n)
        .handle_signals()
        .upgrade_on_signal()
        .upgrade_timeout(Duration::from_millis(
            std::env::var("HELPER_UPGRADE_TIMEOUT_MS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(20_000),
        ))
        .shutdown_deadline(Duration::from_secs(10))
        .env("HELPER_MODE", "versioned")
        .env("HELPER_VERSION", &version);
    if let Ok(path) = std::env::var("HELPER_PID_FILE") {
        settings.pid_file(path);
    }
    let mut cluster = Cluster::<Msg>::new(settings)?;
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
