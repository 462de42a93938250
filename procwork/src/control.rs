//! The control socket: one JSON line each way per connection.
//!
//! `procwork run` listens on a Unix-domain stream socket (mode 0600, in a
//! directory only its user can enter) and serves each peer whose
//! credentials (`SO_PEERCRED`) show this user or root; the subcommands
//! `status`, `reload`, `scale` and `stop` connect, send one [`Request`] and
//! read one [`Reply`]. `reload` and `stop` are answered when they are done.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// The longest request line a server reads.
const MAX_LINE: u64 = 64 * 1024;

/// What a subcommand asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// The table of workers.
    Status,
    /// A rolling reload; answered when it ended.
    Reload,
    /// Keep this many slots.
    Scale {
        /// The number of workers wanted.
        workers: usize,
    },
    /// Stop every worker and exit; answered when they are gone.
    Stop,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Reply {
    /// The status snapshot.
    Status(Status),
    /// Done, with what happened.
    Done {
        /// A sentence for the user.
        message: String,
    },
    /// Refused or failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// A running procwork, as `procwork status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// procwork's pid.
    pub pid: u32,
    /// The instance name.
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The listening sockets.
    pub listen: Vec<String>,
    /// Where the Prometheus metrics are served (`--metrics`), if anywhere.
    pub metrics: Option<String>,
    /// How many slots are kept filled.
    pub slots: usize,
    /// Whether a rolling reload is running.
    pub reloading: bool,
    /// procwork's own resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Every live worker: the slots' current ones, reload successors and
    /// workers still stopping.
    pub workers: Vec<WorkerRow>,
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Its slot.
    pub slot: u64,
    /// Its id (counts up, never reused).
    pub worker: u64,
    /// Its pid.
    pub pid: u32,
    /// `starting`, `ready`, `stopping`.
    pub state: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Workers started in its slot before it.
    pub restarts: u64,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// CPU time used, milliseconds.
    pub cpu_ms: Option<u64>,
    /// Its last `STATUS=`.
    pub status: Option<String>,
}

/// Sends `request` to the procwork at `path` and waits for its reply
/// (blocking: for the subcommands, which run no runtime). `timeout` bounds
/// the wait for the reply (`None`: as long as it takes, for `reload`).
///
/// # Errors
/// [`Error::NotRunning`] if nothing answers at `path`, [`Error::Control`]
/// for a broken exchange.
pub fn request(path: &Path, request: &Request, timeout: Option<Duration>) -> Result<Reply, Error> {
    let control = |why: String| Error::Control {
        path: path.to_owned(),
        why,
    };
    let mut stream = StdUnixStream::connect(path).map_err(|source| Error::NotRunning {
        path: path.to_owned(),
        source,
    })?;
    stream
        .set_read_timeout(timeout)
        .map_err(|e| control(e.to_string()))?;
    let mut line = serde_json::to_string(request).map_err(|e| control(e.to_string()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| control(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| control(e.to_string()))?;
    if answer.is_empty() {
        return Err(control(
            "procwork closed the connection without answering".into(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| control(format!("bad reply: {e}")))
}

/// A request from a control connection, and where its answer goes.
pub type Incoming = (Request, oneshot::Sender<Reply>);

/// Serves one control connection: checks the peer's user, reads one
/// request, hands it to `to_supervisor`, writes the reply.
pub async fn serve_connection(stream: UnixStream, to_supervisor: mpsc::UnboundedSender<Incoming>) {
    let me = nix::unistd::geteuid().as_raw();
    let allowed = getsockopt(&stream, sockopt::PeerCredentials)
        .is_ok_and(|cred| cred.uid() == me || cred.uid() == 0);
    let (read, mut write) = stream.into_split();
    let reply = if allowed {
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
        let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
        match read {
            Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                Ok(request) => {
                    let (tx, rx) = oneshot::channel();
                    if to_supervisor.send((request, tx)).is_err() {
                        Reply::Failed {
                            error: "procwork is exiting".into(),
                        }
                    } else {
                        rx.await.unwrap_or_else(|_| Reply::Failed {
                            error: "procwork is exiting".into(),
                        })
                    }
                }
                Err(e) => Reply::Failed {
                    error: format!("bad request: {e}"),
                },
            },
            _ => return,
        }
    } else {
        Reply::Failed {
            error: "permission denied: another user".into(),
        }
    };
    if let Ok(mut line) = serde_json::to_string(&reply) {
        line.push('\n');
        let _ =
            tokio::time::timeout(Duration::from_secs(10), write.write_all(line.as_bytes())).await;
    }
}
