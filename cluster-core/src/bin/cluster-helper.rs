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
//! Other kinds of listener: `serve-unix` and `serve-unix-report` (`serve`
//! on the Unix-domain socket `HELPER_UNIX`, a path, or an abstract name
//! after `@`; with `HELPER_UNIX_MODE`, octal, as its file's mode),
//! `listen-unix-report` (`listen-report` for `HELPER_UNIX`; `HELPER_FD`
//! set: for that descriptor of the primary), `serve-fd` (`serve` on the
//! primary's descriptor `HELPER_FD`, a TCP or Unix-domain listener), `udp`
//! (bind `HELPER_ADDR` as UDP through the primary and answer each datagram
//! with `<worker id> <source port>`, pausing 2 ms after each so the others
//! take their share; when disconnected, exit 0).
//!
//! The primary prints `fork <id> <pid>`, `online <id>` and `exit <id> <exit>`
//! lines, handles SIGTERM/SIGINT with a 1 s deadline, and prints `done` when
//! every worker has exited. `cluster-helper raw` writes one byte to stdout
//! and exits (the bench's bare-process baseline).

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
        if mode.starts_with("serve-unix") || mode == "serve-fd" {
            return other::serve(w, mode).await;
        }
        if mode.starts_with("serve") {
            return serve(w, mode).await;
        }
        if mode == "udp" {
            return other::udp(w).await;
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

mod other {
    //! The modes of the other kinds of listener (Unix-domain, UDP,
    //! descriptors).

    use cluster_core::{FdListener, UnixAddr, Worker};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

    /// Answer a connection with the worker id, keep it until the client
    /// closes.
    async fn answer<C: AsyncRead + AsyncWrite + Unpin>(mut conn: C, id: u64) {
        let _ = conn.write_all(format!("{id}\n").as_bytes()).await;
        let mut sink = [0u8; 64];
        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
    }

    /// `serve` on a Unix-domain socket, or on the primary's descriptor.
    pub(super) async fn serve(w: Worker<Msg>, mode: &str) -> BoxResult {
        let id = w.id().0;
        let report = mode.ends_with("-report");
        let mut open = tokio::task::JoinSet::new();
        let mut unix = match helper_fd().filter(|_| mode == "serve-fd") {
            Some(fd) => match w.listen_fd(fd).await? {
                FdListener::Unix(l) => l,
                FdListener::Tcp(mut l) => {
                    while let Some((conn, _)) = l.accept().await {
                        open.spawn(answer(conn, id));
                    }
                    while open.join_next().await.is_some() {}
                    w.flush().await?;
                    return Ok(());
                }
                other => return Err(format!("not a stream listener: {other:?}").into()),
            },
            None => listen_unix(&w).await?,
        };
        while let Some(conn) = unix.accept().await {
            if report {
                w.send(&Msg::Text("accepted".into())).await?;
            }
            open.spawn(answer(conn, id));
        }
        while open.join_next().await.is_some() {}
        w.flush().await?;
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
                    if msg.is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }
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
