//! The shim between procwork and a worker's program.
//!
//! systemd's convention wants `LISTEN_PID` (and `WATCHDOG_PID`) to be the
//! pid of the process that reads them, which procwork cannot know before
//! the fork, and must not learn by changing its own environment (it is
//! multi-threaded) or by code between fork and exec beyond what spawn-core
//! does. So each worker starts as procwork itself (`/proc/self/exe`, the
//! running binary even if the file was replaced), with the hidden first
//! argument [`SHIM_ARG`]: that process sets the two variables to its own
//! pid and `exec`s the program, keeping its pid, process group,
//! parent-death signal and descriptors. No shell is involved.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// The first argument that makes procwork the shim.
pub const SHIM_ARG: &str = "__procwork_exec";

/// Runs the shim: `args` is the program and its arguments. Only returns if
/// the `exec` failed, with the error.
pub fn exec(args: &[OsString]) -> std::io::Error {
    let Some((program, rest)) = args.split_first() else {
        return std::io::Error::new(std::io::ErrorKind::InvalidInput, "no program to run");
    };
    let pid = std::process::id().to_string();
    let mut command = std::process::Command::new(program);
    command.args(rest);
    if std::env::var_os("LISTEN_FDS").is_some() {
        command.env("LISTEN_PID", &pid);
    }
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        command.env("WATCHDOG_PID", &pid);
    }
    command.exec()
}
