//! The typed, framed wire between a cluster's primary process and its workers.
//!
//! One Unix socketpair per worker carries length-prefixed [postcard] frames:
//! a versioned [`Handshake`] first, then [`ControlMsg`]s (what the cluster
//! machinery says: listen requests, connection hand-offs, heartbeats,
//! disconnect) and user messages of any serde type, kept apart by the frame
//! kind so user types never touch the control grammar. Frames may carry file
//! descriptors (`SCM_RIGHTS`), which arrive with their frame as [`OwnedFd`]s.
//!
//! The main pieces:
//!
//! - [`channel_pair`] and [`from_env`]: create the pair, and adopt in the
//!   worker the end found at the descriptor named by [`CHANNEL_FD_ENV`].
//!   Placing that end in the child is the spawner's job (in this workspace,
//!   `spawn_core::Command::inherit_fd`; any `dup2` before `exec` will do),
//!   so descriptor placement has one implementation.
//! - [`handshake`]: open an async endpoint on a channel end and exchange
//!   handshakes; gives a clonable [`Sender`] and a [`Receiver`].
//! - [`Sender::send`] / [`Sender::try_send`] (backpressure: the peer's
//!   receive window, granted back as its program consumes messages, and a
//!   bounded queue; `try_send` hands the message back in
//!   [`TrySendError::Full`]; control frames take neither and go first, see
//!   `docs/ipc.md`, "Flow control"), and
//!   [`Receiver::recv`] / [`Receiver::recv_raw`], which yield [`Incoming`].
//! - [`BlockingChannel`]: the same wire without a runtime (buffered sends,
//!   blocking receives), for simple workers and tools.
//! - [`frame`]: the header, the encoder and the I/O-free [`frame::Decoder`].
//! - [`Error`]: every way a channel fails.
//!
//! # Example: a primary and a worker talking
//!
//! Both ends live in one process here; in a cluster the child end goes to
//! the worker at descriptor [`DEFAULT_CHILD_FD`] (placed there by the
//! spawner, with [`CHANNEL_FD_ENV`] set to the number) and comes back out
//! of [`from_env`].
//!
//! ```
//! use cluster_ipc::{channel_pair, handshake, Config, ControlMsg, Handshake, Incoming};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Greeting { text: String }
//!
//! # fn main() -> Result<(), cluster_ipc::Error> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let (primary_end, worker_end) = channel_pair()?;
//!
//!     let worker = tokio::spawn(async move {
//!         let (tx, mut rx, primary) =
//!             handshake(worker_end, Handshake::for_this_process(1), Config::default()).await?;
//!         assert_eq!(primary.worker_id, 1);
//!         tx.send_control(&ControlMsg::Online, Vec::new()).await?;
//!         // One loop dispatches control and user frames.
//!         loop {
//!             match rx.recv::<Greeting>().await? {
//!                 Incoming::User(greeting, _fds) => {
//!                     tx.send(&Greeting { text: format!("{} back", greeting.text) }).await?;
//!                 }
//!                 Incoming::Control(ControlMsg::Disconnect { .. }, _) => return Ok(()),
//!                 Incoming::Control(_, _) => {}
//!             }
//!         }
//!     });
//!
//!     let (tx, mut rx, peer) =
//!         handshake(primary_end, Handshake::for_this_process(1), Config::default()).await?;
//!     assert_eq!(peer.pid, std::process::id());
//!     assert!(matches!(rx.recv_raw().await?, Incoming::Control(ControlMsg::Online, _)));
//!
//!     tx.send(&Greeting { text: "hello worker".into() }).await?;
//!     match rx.recv_raw().await? {
//!         Incoming::User(frame, _) => {
//!             assert_eq!(frame.decode::<Greeting>()?.text, "hello worker back");
//!         }
//!         other => panic!("unexpected {other:?}"),
//!     }
//!     tx.send_disconnect().await?;
//!     worker.await.unwrap()
//! })
//! # }
//! ```
//!
//! # Why a byte stream with a descriptor queue, not `SOCK_SEQPACKET`
//!
//! The channel is an `AF_UNIX`/`SOCK_STREAM` socket, framed by an 8-byte
//! header, with received descriptors kept in a queue beside the byte stream;
//! each header says how many descriptors its frame takes from the queue.
//! This is how Wayland's connection code does it. `ipc-channel` took the
//! other road, `SOCK_SEQPACKET`, where each datagram is one message.
//!
//! - **Throughput comes from batching.** The writer puts every frame queued
//!   since its last write into one `sendmsg`. With a stream that is free;
//!   with packets, a batch of frames is one packet, and a packet must fit the
//!   socket's send buffer.
//! - **Large messages just flow.** A frame just under the 64 MiB cap streams
//!   through a ~200 KiB socket buffer. With packets it must be cut into
//!   fragments and put back together: a second framing layer.
//! - **The cost is one rule on each side.** The kernel delivers descriptors
//!   with the first byte of the `sendmsg` that carried them. So the writer
//!   attaches a frame's descriptors to a `sendmsg` that starts at or before
//!   that frame's first byte, and the reader queues descriptors as they
//!   arrive (with `MSG_CMSG_CLOEXEC`) and hands a frame exactly the count its
//!   header names. They are then always queued by the time the header is
//!   parsed; fewer is a protocol error ([`Error::MissingDescriptors`]), and
//!   `MSG_CTRUNC` is an error ([`Error::DescriptorsTruncated`]).
//!
//! # Safety under faults
//!
//! Any byte sequence from the peer yields a frame or one [`Error`] (then the
//! receiver is closed), never a panic. A header is checked (kind, reserved
//! bytes, descriptor count, length against the cap) before the buffer grows
//! for its payload, so the read buffer never exceeds the larger of `8 + cap`
//! bytes and 256 KiB; and the buffer grows as the bytes arrive (8 KiB at
//! first, doubling when a read fills it: up to 256 KiB for small frames, up
//! to the frame for a large one), so a header announcing 64 MiB costs
//! nothing until the bytes come: the buffer holds at most twice what
//! arrived (or 8 KiB). A buffer grown for a large frame is kept (up to
//! 4 MiB) while large frames come; once 4 small reads in a row drained the
//! socket after small frames, the buffer is 8 KiB again, so an idle
//! channel holds little.
//! Descriptors are owned from the moment they arrive: a frame dropped unread
//! closes them.
//!
//! The property tests in `src/frame/tests.rs` feed arbitrary byte sequences,
//! in arbitrary read sizes, to the [`frame::Decoder`] and check that each
//! gives frames or an error within the memory bound.
//!
//! The wire format (header table, control variants, versioning rules) is in
//! `docs/ipc.md` at the workspace root.
//!
//! # Caveats
//!
//! - [`from_env`] is `unsafe`: it takes ownership of a descriptor named by a
//!   number, which only the process launched with the channel may do (a
//!   program that process starts inherits the variable, not the descriptor;
//!   see its safety contract). It reads the environment without changing
//!   it, so any thread may call it.
//! - A sent descriptor is closed on the sending side once it is on the
//!   socket; if the peer dies before reading it, it is gone. To re-route a
//!   connection whose hand-off may fail, send a `try_clone()` and keep the
//!   original until the peer acknowledges it.
//! - Dropping every [`Sender`] clone flushes the queue and shuts down the
//!   write side; the peer's [`Receiver`] then reports [`Error::PeerClosed`].
//!
//! [postcard]: https://docs.rs/postcard
//! [`OwnedFd`]: std::os::fd::OwnedFd
//!
//! # Platforms
//!
//! Linux only (a `compile_error!` elsewhere): the wire relies on
//! `SOCK_CLOEXEC`, `MSG_NOSIGNAL` and `MSG_CMSG_CLOEXEC`, which not every
//! Unix has, and is tested on Linux alone.
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "cluster-ipc supports Linux only (it relies on SOCK_CLOEXEC, MSG_NOSIGNAL and MSG_CMSG_CLOEXEC)"
);

mod blocking;
mod channel;
mod control;
mod depth;
mod endpoint;
mod error;
pub mod frame;
mod sys;

pub use blocking::BlockingChannel;
pub use channel::{
    CHANNEL_FD_ENV, DEFAULT_CHILD_FD, InheritedPeer, channel_pair, from_env, inherited_peer,
};
pub use control::{
    Bound, ControlMsg, Handshake, ListenErrorKind, ListenFailure, ListenOk, ListenOnOk,
    ListenOnReply, ListenOnRequest, ListenReply, ListenRequest, ListenTarget, PROTOCOL_VERSION,
    SocketKind, UnixAddr,
};
pub use endpoint::{
    Config, Credit, DEFAULT_RECEIVE_SPIN, DEFAULT_RECEIVE_WINDOW, Incoming, Receiver, Sender,
    UserFrame, handshake,
};
pub use error::{Error, TrySendError};
pub use frame::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_LEN, Encoded, MAX_FDS_PER_FRAME};

// The Rust snippets of the README and of docs/ipc.md are compiled (and run,
// unless marked `no_run`) as doc tests, so the documentation cannot drift
// from the API; `cargo xtask tidy` checks that every such file is included.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/ipc.md")]
struct IpcDocDoctests;
