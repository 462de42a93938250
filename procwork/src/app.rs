//! What each subcommand does, from its parsed arguments to its outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cluster_core::WorkerOutput;
use tokio::sync::mpsc;

use crate::cli::{LogFormatArg, RunArgs, Target, WorkerOutputArg};
use crate::control::{self, Reply, Request, Status};
use crate::error::Error;
use crate::listen::{self, ListenAddr, ListenSocket, ListenSpec};
use crate::log::{Log, LogFormat};
use crate::paths::{self, Paths};
use crate::supervisor::{Outcome, RunConfig, Supervisor};
use crate::worker::WorkerSpec;

/// `procwork run`: opens the sockets, the control socket and the pid file,
/// supervises until stopped, and cleans up (unless it handed everything to
/// a new procwork). Says how it ended.
///
/// # Errors
/// Whatever keeps it from starting: a socket, the runtime directory, the
/// control socket taken by another procwork, a program that is not found.
pub fn run(args: RunArgs) -> Result<Outcome, Error> {
    let paths = paths::resolve(
        args.name.as_deref(),
        args.control.as_deref(),
        args.pid_file.as_deref(),
    )?;
    check_program(&args.command[0])?;
    paths::ensure_private_dir(&paths.dir)?;
    paths::ensure_private_dir(&paths.notify_dir)?;
    let name = paths
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::File {
            what: "could not start the runtime for",
            path: paths.dir.clone(),
            source,
        })?;
    let cfg = RunConfig {
        name,
        workers: args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        spec: WorkerSpec {
            command: args.command.clone(),
            ready_after: args.ready_after,
            ready_timeout: args.ready_timeout,
            watchdog: args.watchdog,
            output: match args.worker_output {
                WorkerOutputArg::Prefixed => WorkerOutput::Prefixed,
                WorkerOutputArg::Raw => WorkerOutput::Raw,
                WorkerOutputArg::Json => WorkerOutput::Json,
            },
        },
        stop_signal: args.stop_signal,
        grace: args.grace,
        reload_parallel: args.reload_parallel.max(1),
        max_memory: args.max_memory,
        max_age: args.max_age,
        paths: paths.clone(),
        log: Log::new(match args.log_format {
            LogFormatArg::Plain => LogFormat::Plain,
            LogFormatArg::Json => LogFormat::Json,
        }),
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        args: std::env::args_os().skip(1).collect(),
        metrics: None,
    };
    let outcome = runtime.block_on(serve(cfg, &args, &paths));
    if !matches!(outcome, Ok(Outcome::HandedOver)) {
        let _ = std::fs::remove_file(&paths.pid_file);
        let _ = std::fs::remove_dir(&paths.notify_dir);
        let _ = std::fs::remove_dir(&paths.dir);
    }
    outcome
}

async fn serve(mut cfg: RunConfig, args: &RunArgs, paths: &Paths) -> Result<Outcome, Error> {
    let inherited = crate::upgrade::split(cluster_core::inherited_sockets());
    let upgrading = inherited.handover.is_some();
    // The control socket first: a second procwork for the same instance
    // stops here, before it binds anything else. A procwork started by an
    // upgrade takes over the old one's.
    let control_socket = match inherited.control {
        Some(fd) => {
            let mut socket = ListenSocket::inherited(None, fd);
            socket.addr = ListenAddr::Unix(paths.control.clone());
            socket.adopt_file();
            socket
        }
        None => {
            let control_spec = ListenSpec {
                name: None,
                addr: ListenAddr::Unix(paths.control.clone()),
            };
            ListenSocket::open(&control_spec, 0o600).map_err(|e| match e {
                Error::SocketInUse { path } => Error::AlreadyRunning { path },
                other => other,
            })?
        }
    };
    let sockets = listen::open_all(&args.listen, args.socket_mode, inherited.sockets, upgrading)?;
    if !upgrading {
        paths::write_pid_file(&paths.pid_file, std::process::id())?;
    }
    let (to_supervisor, from_control) = mpsc::unbounded_channel();
    let control_listener = control_socket
        .fd
        .try_clone()
        .map(std::os::unix::net::UnixListener::from)
        .and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(l)
        })
        .map_err(|source| Error::Listen {
            addr: format!("unix:{}", paths.control.display()),
            source,
        })?;
    let tx = to_supervisor.clone();
    // Control connections still writing their answer (`stop`'s comes as
    // the supervisor returns): waited for, bounded, before exiting.
    let open_connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::clone(&open_connections);
    let control_closed = Arc::new(tokio::sync::Notify::new());
    let closed = Arc::clone(&control_closed);
    let control_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = control_listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let open = Arc::clone(&open);
                        open.fetch_add(1, Ordering::SeqCst);
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            control::serve_connection(stream, tx).await;
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                () = closed.notified() => return,
            }
        }
    });
    let metrics_task = match args.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen {
                    addr: format!("tcp://{addr}"),
                    source,
                })?;
            cfg.metrics = listener.local_addr().ok();
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                to_supervisor.clone(),
            )))
        }
        None => None,
    };
    drop(to_supervisor);
    let log = cfg.log;
    let outcome = Supervisor::new(
        cfg,
        sockets,
        control_socket,
        control_closed,
        inherited.handover,
    )
    .run(from_control)
    .await;
    control_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while open_connections.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = log;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        cluster_core::output::Output::stdout().flush().await;
        cluster_core::output::Output::stderr().flush().await;
    })
    .await;
    outcome
}

/// Fails early when `program` cannot be run: a path that is not an
/// executable file, or a name not found on `PATH`.
fn check_program(program: &std::ffi::OsStr) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let path = Path::new(program);
    let found = if program.as_encoded_bytes().contains(&b'/') {
        executable(path)
    } else {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| executable(&dir.join(path)))
        })
    };
    if found {
        Ok(())
    } else {
        Err(Error::ProgramNotFound {
            program: program.to_string_lossy().into_owned(),
        })
    }
}

/// The control socket of the instance `target` names.
///
/// # Errors
/// [`Error::File`] if the working directory cannot be read.
pub fn control_path(target: &Target) -> Result<PathBuf, Error> {
    Ok(paths::resolve(target.name.as_deref(), target.control.as_deref(), None)?.control)
}

/// Sends `request` to the instance of `target` (see [`control::request`]).
///
/// # Errors
/// [`Error::NotRunning`], [`Error::Control`], or [`Error::Refused`] when it
/// answered with a failure.
pub fn ask(target: &Target, request: &Request, timeout: Option<Duration>) -> Result<Reply, Error> {
    let path = control_path(target)?;
    match control::request(&path, request, timeout)? {
        Reply::Failed { error } => Err(Error::Refused { reason: error }),
        reply => Ok(reply),
    }
}

/// `procwork status`: the running instance's status.
///
/// # Errors
/// As [`ask`].
pub fn status(target: &Target) -> Result<Status, Error> {
    match ask(target, &Request::Status, Some(Duration::from_secs(10)))? {
        Reply::Status(status) => Ok(status),
        _ => Err(Error::Control {
            path: control_path(target)?,
            why: "status answered with something else".into(),
        }),
    }
}
