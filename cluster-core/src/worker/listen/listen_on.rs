//! A worker's `ListenOn` requests (Unix-domain, UDP, a descriptor the
//! primary holds) and their answers: [`FdListener`], the listener of
//! whatever kind the primary's socket turned out to be.

use std::io;
use std::os::fd::OwnedFd;

use cluster_ipc::{Bound, ListenOnReply};
use tokio::sync::{mpsc, oneshot};

use super::unix::UnixListener;
use super::{Listener, Net, Source, shared_listener};
use crate::endpoint::{ListenTarget, UnixAddr};
use crate::error::{Error, Result};

/// A `ListenOn` request waiting for its answer.
pub(super) struct Waiting {
    target: ListenTarget,
    answer: oneshot::Sender<Result<FdListener>>,
}

/// What a worker listens on through a descriptor the primary holds
/// ([`Worker::listen_fd`](crate::Worker::listen_fd)): the descriptor's kind
/// decides.
#[derive(Debug)]
#[non_exhaustive]
pub enum FdListener {
    /// A TCP listener.
    Tcp(Listener),
    /// A Unix-domain stream listener.
    Unix(UnixListener),
    /// A UDP socket, shared with every worker that binds it.
    Udp(tokio::net::UdpSocket),
}

impl Net {
    /// Register a `ListenOn` request; its id and the answer to wait for.
    pub(crate) fn request_on(
        &self,
        target: ListenTarget,
    ) -> (u64, oneshot::Receiver<Result<FdListener>>) {
        let (answer, rx) = oneshot::channel();
        let mut st = self.lock();
        let id = st.next_request;
        st.next_request += 1;
        st.waiting_on.insert(id, Waiting { target, answer });
        (id, rx)
    }

    /// The primary answered a `ListenOn` request.
    pub(crate) fn on_listen_on_reply(&self, reply: ListenOnReply, fds: Vec<OwnedFd>) {
        let Some(Waiting { target, answer }) = self.lock().waiting_on.remove(&reply.request_id)
        else {
            return;
        };
        let fail = |kind, source| Error::ListenOn {
            target: target.clone(),
            kind,
            source,
        };
        let result = match reply.result {
            Ok(ok) => {
                let fd = fds.into_iter().next();
                if ok.fd_attached && fd.is_none() {
                    Err(fail(
                        cluster_ipc::ListenErrorKind::Other,
                        io::Error::other("the socket was not attached"),
                    ))
                } else {
                    self.opened(reply.request_id, ok.bound, fd)
                        .map_err(|e| fail(cluster_ipc::ListenErrorKind::Other, e))
                }
            }
            Err(f) => Err(fail(
                f.kind,
                f.errno.map_or_else(
                    || io::Error::other(f.message.clone()),
                    io::Error::from_raw_os_error,
                ),
            )),
        };
        let _ = answer.send(result);
    }

    /// The listener of what the primary bound: fed by the hand-off, or on
    /// the attached socket.
    fn opened(&self, request_id: u64, bound: Bound, fd: Option<OwnedFd>) -> io::Result<FdListener> {
        Ok(match bound {
            Bound::Tcp(addr) => {
                let source = match fd {
                    Some(fd) => Source::Shared {
                        listener: shared_listener(fd).map_err(io::Error::other)?,
                        draining: self.draining.subscribe(),
                    },
                    None => {
                        let (conn_tx, queue) = mpsc::unbounded_channel();
                        if !*self.draining.borrow() {
                            self.lock().handed.insert(request_id, conn_tx);
                        }
                        Source::Handed {
                            queue,
                            tx: self.tx.clone(),
                        }
                    }
                };
                FdListener::Tcp(Listener {
                    addr,
                    drain: self.drain_signal(),
                    accepting: Some(self.drain.open.track_listener()),
                    source,
                })
            }
            Bound::Unix(addr) => FdListener::Unix(UnixListener::new(
                self,
                request_id,
                UnixAddr::from_wire(addr),
                fd,
            )?),
            Bound::Udp(_) => {
                let fd = fd.ok_or_else(|| io::Error::other("the socket was not attached"))?;
                let std = std::net::UdpSocket::from(fd);
                std.set_nonblocking(true)?;
                FdListener::Udp(tokio::net::UdpSocket::from_std(std)?)
            }
            _ => return Err(io::Error::from(io::ErrorKind::Unsupported)),
        })
    }
}
