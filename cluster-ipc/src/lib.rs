//! The typed, framed wire between a cluster's primary process and its workers.
//!
//! One Unix socketpair per worker carries length-prefixed [postcard] frames:
//! a versioned [`Handshake`] first, then [`ControlMsg`]s (what the cluster
//! machinery says: listen requests, connection hand-offs, heartbeats,
//! shutdown) and user messages of any serde type, kept apart by the frame
//! kind so user types never touch the control grammar. Frames may carry file
//! descriptors (`SCM_RIGHTS`), which arrive with their frame as [`OwnedFd`]s.
//!
//! The main pieces:
//!
//! - [`channel_pair`], [`pass_to_child`] and [`from_env`]: create the pair,
//!   hand one end to a child at a descriptor named by [`CHANNEL_FD_ENV`], and
//!   adopt it in the worker.
//! - [`handshake`]: open an async endpoint on a channel end and exchange
//!   handshakes; gives a clonable [`Sender`] and a [`Receiver`].
//! - [`Sender::send`] / [`Sender::try_send`] (backpressure: a bounded queue;
//!   `try_send` hands the message back in [`TrySendError::Full`]), and
//!   [`Receiver::recv`] / [`Receiver::recv_raw`], which yield [`Incoming`].
//! - [`BlockingChannel`]: the same wire without a runtime (buffered sends,
//!   blocking receives), for simple workers and tools.
//! - [`frame`]: the header, the encoder and the I/O-free [`frame::Decoder`].
//! - [`Error`]: every way a channel fails.
//!
//! # Example: a primary and a worker talking
//!
//! Both ends live in one process here; in a cluster the child end goes to
//! the worker through [`pass_to_child`] and comes back out of [`from_env`].
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
//!                 Incoming::Control(ControlMsg::Disconnect, _) => return Ok(()),
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
//!     tx.send_control(&ControlMsg::Disconnect, Vec::new()).await?;
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
//! for its payload, so the read buffer never exceeds `8 + cap` bytes.
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
//! - [`from_env`] is `unsafe`: it removes an environment variable (call it
//!   first thing in `main`, before threads exist) and takes ownership of a
//!   descriptor named by a number.
//! - A sent descriptor is closed on the sending side once it is on the
//!   socket; if the peer dies before reading it, it is gone. To re-route a
//!   connection whose hand-off may fail, send a `try_clone()` and keep the
//!   original until the peer acknowledges it.
//! - Dropping every [`Sender`] clone flushes the queue and shuts down the
//!   write side; the peer's [`Receiver`] then reports [`Error::PeerClosed`].
//!
//! [postcard]: https://docs.rs/postcard
//! [`OwnedFd`]: std::os::fd::OwnedFd
#![deny(missing_docs)]

mod blocking;
mod channel;
mod control;
mod endpoint;
mod error;
pub mod frame;
mod sys;

pub use blocking::BlockingChannel;
pub use channel::{CHANNEL_FD_ENV, DEFAULT_CHILD_FD, channel_pair, from_env, pass_to_child};
pub use control::{
    Bound, ControlMsg, Handshake, ListenErrorKind, ListenFailure, ListenMode, ListenOk, ListenOnOk,
    ListenOnReply, ListenOnRequest, ListenReply, ListenRequest, ListenTarget, PROTOCOL_VERSION,
    SocketKind, UnixAddr,
};
pub use endpoint::{Config, Incoming, Receiver, Sender, UserFrame, handshake};
pub use error::{Error, TrySendError};
pub use frame::{DEFAULT_MAX_FRAME_LEN, MAX_FDS_PER_FRAME};
