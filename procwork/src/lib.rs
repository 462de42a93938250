//! procwork: cluster any program from the command line.
//!
//! `procwork run -w 2 --listen tcp://127.0.0.1:3000 -- node app.js` opens
//! the listening socket once and runs two copies of the program, each given
//! the socket by systemd's convention (descriptor 3, `LISTEN_FDS=1`,
//! `LISTEN_FDNAMES`, `LISTEN_PID` = the worker's own pid) and a
//! `NOTIFY_SOCKET` of its own; it restarts a worker that dies (with
//! backoff and cluster-core's crash-loop rule), replaces them one by one on
//! SIGHUP or `procwork reload` (the new one ready before the old one
//! stops, so no request fails), scales on SIGTTIN/SIGTTOU or `procwork
//! scale N`, and stops them all on SIGTERM, leaving no process behind.
//! See `docs/procwork.md` for the user's guide.
//!
//! This library is the binary's parts, public so they are documented and
//! tested: [`cli`] (the command line), [`listen`] (the sockets procwork
//! owns), [`notify`] (the notify protocol both ways), [`worker`] (starting
//! and driving one worker, through the [`shim`] that sets `LISTEN_PID`),
//! [`supervisor`] (slots, readiness, restarts, reloads, scaling,
//! recycling, stopping), [`control`] (the control socket and its
//! protocol), [`status`] and [`metrics`] (the table and the Prometheus
//! text), [`paths`] (where an instance keeps its files), [`units`]
//! (durations and sizes), [`upgrade`] (procwork's own upgrade on SIGUSR2),
//! [`log`], and [`app`] (each subcommand). Errors
//! are [`Error`] and [`ValueError`].
//!
//! # Caveats
//! - A program must *close* its copy of a listening socket when it stops
//!   accepting, never `shutdown()` it: on Linux, `shutdown` of a listening
//!   socket stops it listening for every process that shares it.
//! - The parent-death signal reaches a worker's main process if procwork
//!   is SIGKILLed; what that process started in its process group is
//!   SIGKILLed by procwork whenever the worker ends, but not if procwork
//!   itself was SIGKILLed first.
//! - Linux only (parent-death signal, `SO_PASSCRED`, `/proc`).
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("procwork supports Linux only (the parent-death signal, SO_PASSCRED, /proc)");

pub mod app;
pub mod cli;
pub mod control;
mod error;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod shim;
pub mod status;
pub mod supervisor;
pub mod units;
pub mod upgrade;
pub mod worker;

pub use error::{Error, Result, ValueError};

// The Rust snippets of docs/procwork.md are compiled as doc tests, so the
// guide cannot drift; `cargo xtask tidy` checks the file is included.
#[cfg(doctest)]
#[doc = include_str!("../../docs/procwork.md")]
struct ProcworkDocDoctests;
