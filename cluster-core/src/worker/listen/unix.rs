//! Unix-domain stream listening in a worker: [`UnixListener`] and the
//! accepted [`UnixConnection`], the Unix-domain twins of `Listener` and
//! `Connection`, with the same hand-off (queued, acknowledged by `accept`,
//! refused when the listener drops or the worker drains) and the same
//! shared-socket mode under `none`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use cluster_ipc::{ControlMsg, Sender};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::{CloseNotice, Net, refuse_queued, take_handed};
use crate::endpoint::UnixAddr;

/// A Unix-domain connection handed over and not yet accepted.
#[derive(Debug)]
pub(super) struct HandedUnix {
    stream: UnixStream,
    conn_id: u64,
    /// The hand-off deadline (`CLOCK_MONOTONIC` ns): refused past it.
    deadline_ns: u64,
}

/// Where a Unix-domain listener's connections come from.
#[derive(Debug)]
enum Source {
    /// Handed over by the primary (distributed policies).
    Handed {
        queue: mpsc::UnboundedReceiver<HandedUnix>,
        tx: Sender,
    },
    /// Accepted here on the primary's listening socket (`none`).
    Shared {
        listener: tokio::net::UnixListener,
        draining: watch::Receiver<bool>,
    },
}

/// A Unix-domain stream socket a worker listens on through the primary: the
/// stream of its accepted connections. Made by
/// [`Worker::listen_unix`](crate::Worker::listen_unix).
///
/// It behaves like [`Listener`](crate::Listener): [`accept`](Self::accept)
/// returns `None` once the worker drains (after the connections it already
/// took over), and dropping it makes the worker refuse further connections
/// for it (the primary gives them to another worker).
#[derive(Debug)]
pub struct UnixListener {
    addr: UnixAddr,
    source: Source,
}

impl UnixListener {
    /// Made from the primary's answer: a listening socket attached (`none`)
    /// or connections to come by hand-off.
    pub(super) fn new(
        net: &Net,
        request_id: u64,
        addr: UnixAddr,
        fd: Option<OwnedFd>,
    ) -> io::Result<Self> {
        let source = match fd {
            Some(fd) => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true)?;
                Source::Shared {
                    listener: tokio::net::UnixListener::from_std(std)?,
                    draining: net.draining.subscribe(),
                }
            }
            None => {
                let (conn_tx, queue) = mpsc::unbounded_channel();
                if !*net.draining.borrow() {
                    net.lock().handed_unix.insert(request_id, conn_tx);
                }
                Source::Handed {
                    queue,
                    tx: net.tx.clone(),
                }
            }
        };
        Ok(UnixListener { addr, source })
    }

    /// The path or abstract name the primary listens on.
    pub fn local_addr(&self) -> &UnixAddr {
        &self.addr
    }

    /// Whether the primary hands connections over (a distributed policy),
    /// rather than sharing the listening socket (`none`).
    pub fn is_handed_over(&self) -> bool {
        matches!(self.source, Source::Handed { .. })
    }

    /// The next connection; `None` once the worker is draining. Under
    /// `none`, a failed `accept` is retried after a short pause rather
    /// than reported.
    pub async fn accept(&mut self) -> Option<UnixConnection> {
        match &mut self.source {
            Source::Handed { queue, tx } => loop {
                let h = queue.recv().await?;
                if !take_handed(tx, h.conn_id, h.deadline_ns) {
                    continue;
                }
                return Some(UnixConnection {
                    stream: h.stream,
                    _notice: Some(CloseNotice {
                        conn_id: h.conn_id,
                        tx: tx.clone(),
                    }),
                });
            },
            Source::Shared { listener, draining } => loop {
                if *draining.borrow() {
                    return None;
                }
                tokio::select! {
                    biased;
                    res = listener.accept() => match res {
                        Ok((stream, _)) => {
                            return Some(UnixConnection { stream, _notice: None });
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    },
                    changed = draining.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            },
        }
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        // What was handed over but never accepted goes back to the primary.
        if let Source::Handed { queue, tx } = &mut self.source {
            refuse_queued(queue, tx, |h| h.conn_id);
        }
    }
}

impl Net {
    /// The primary handed a Unix-domain connection over: queue it for its
    /// listener, or refuse it at once (listener gone, worker draining).
    pub(crate) async fn on_unix_connection(
        &self,
        conn_id: u64,
        listener_id: u64,
        deadline_ns: u64,
        fds: Vec<OwnedFd>,
    ) {
        let queue = self.lock().handed_unix.get(&listener_id).cloned();
        let queued = match (queue, fds.into_iter().next()) {
            (Some(queue), Some(fd)) => match adopt(fd) {
                Ok(stream) => queue
                    .send(HandedUnix {
                        stream,
                        conn_id,
                        deadline_ns,
                    })
                    .is_ok(),
                Err(_) => false,
            },
            _ => false,
        };
        if !queued {
            let refused = ControlMsg::ConnectionAck {
                conn_id,
                accepted: false,
            };
            let _ = self.tx.send_control(&refused, Vec::new()).await;
        }
    }
}

fn adopt(fd: OwnedFd) -> io::Result<UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}

/// An accepted Unix-domain connection of a worker: a [`UnixStream`] that
/// tells the primary when it is dropped, like
/// [`Connection`](crate::Connection) (`AsyncRead`, `AsyncWrite`, `Unpin`;
/// derefs to the stream; the peer's credentials are
/// `conn.peer_cred()`). Dropping one handed over by the primary shuts its
/// socket down both ways first, so the client sees the end at once.
#[derive(Debug)]
pub struct UnixConnection {
    stream: UnixStream,
    _notice: Option<CloseNotice>,
}

impl UnixConnection {
    /// The stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The stream, mutably.
    pub fn stream_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}

impl Drop for UnixConnection {
    fn drop(&mut self) {
        if self._notice.is_some() {
            // Through a duplicate of the descriptor: `shutdown` acts on the
            // socket, not on one descriptor of it.
            if let Ok(dup) = self.stream.as_fd().try_clone_to_owned() {
                let _ =
                    std::os::unix::net::UnixStream::from(dup).shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

super::stream_wrapper!(UnixConnection, UnixStream);
