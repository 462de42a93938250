//! Node's `worker_threads` for Rust: [`Worker`]s with a parent port and
//! events, typed [`MessageChannel`]s between threads, and a task [`Pool`]
//! for CPU-bound work with what piscina adds (queue cap with backpressure,
//! cancellation, timeouts, stats).
//!
//! Node's example, where a worker answers the data it was started with:
//!
//! ```
//! use worker_threads::{Event, SendError, Worker, is_main_thread};
//!
//! # fn main() -> Result<(), worker_threads::Error> {
//! assert!(is_main_thread());
//! let worker = Worker::<(), String>::spawn("hello", |ctx| {
//!     assert!(!is_main_thread());
//!     let data = ctx.worker_data();
//!     ctx.parent_port().post_message(format!("You said \"{data}\"."))?;
//!     Ok::<(), SendError<String>>(())
//! })?;
//! for event in worker.events() {
//!     match event {
//!         Event::Online => {}
//!         Event::Message(msg) => println!("Worker message received: {msg}"),
//!         Event::Error(err) => eprintln!("{err}"),
//!         Event::Exit(code) => println!("Worker exited with code {code}."),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The main types:
//! - [`Worker`], [`WorkerOptions`], [`Event`]: start a thread running an entry
//!   function and see its life as events; [`WorkerContext`] and
//!   [`ParentPort`] are what the entry function is given.
//! - [`MessageChannel`] and [`MessagePort`]: typed pairs of ports; messages
//!   move by ownership.
//! - [`Pool`], [`PoolBuilder`], [`TaskHandle`], [`PoolStats`]: a task pool on
//!   a dedicated rayon thread pool. From async code one await gives a task's
//!   value (`pool.run(|| work()).await`: the handle is the future, and it
//!   never blocks the runtime); from sync code the handle is joined.
//! - [`CancelToken`]: the cooperative stop signal of workers and tasks.
//!
//! Stopping a thread is cooperative in Rust; see [`worker`]'s and [`pool`]'s
//! caveats.

//!
//! # Platforms
//!
//! Any platform with threads: no OS code of its own (std threads, rayon,
//! crossbeam and tokio's `sync`).
#![deny(missing_docs)]

mod cancel;
mod channel;
mod error;
mod identity;
mod panic_message;
pub mod pool;
mod wait;
pub mod worker;

pub use crossbeam_channel::SendError;

pub use crate::cancel::CancelToken;
pub use crate::channel::{MessageChannel, MessagePort};
pub use crate::error::{Error, RecvError, TaskError, TryRunError};
pub use crate::identity::{ThreadId, is_main_thread};
pub use crate::pool::{Pool, PoolBuilder, PoolStats, TaskHandle};
pub use crate::worker::{
    Event, IntoExitCode, ParentPort, Worker, WorkerContext, WorkerFailure, WorkerOptions,
};

// The Rust snippets of the README and of docs/worker-threads.md are compiled (and run,
// unless marked `no_run`) as doc tests, so the documentation cannot drift
// from the API; `cargo xtask tidy` checks that every such file is included.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/worker-threads.md")]
struct WorkerThreadsDocDoctests;
