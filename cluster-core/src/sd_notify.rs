//! The parts of systemd's notify protocol any service manager's client
//! needs: where `NOTIFY_SOCKET` points, how often `WATCHDOG=1` is due, and
//! the `MONOTONIC_USEC` a `RELOADING=1` carries. The cluster's primary
//! uses them, and so does a supervisor of programs that do not link this
//! crate (`procwork`).

use std::os::unix::net::SocketAddr;
use std::time::Duration;

/// The service manager's socket, parsed from a `NOTIFY_SOCKET` value: an
/// absolute path, or `@name` in the abstract namespace (Linux). Anything
/// else is `None`.
pub fn notify_addr(value: &str) -> Option<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt as _;
            return SocketAddr::from_abstract_name(name.as_bytes()).ok();
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return None;
        }
    }
    if value.starts_with('/') {
        return SocketAddr::from_pathname(value).ok();
    }
    None
}

/// How often `WATCHDOG=1` is due: half of `WATCHDOG_USEC` (`usec`), when
/// the watchdog is meant for process `me` (`WATCHDOG_PID`, `pid`, unset or
/// `me`). `None` when it is unset, zero, malformed or another process's.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC` wants it.
pub fn monotonic_usec() -> u64 {
    crate::clock::monotonic_ns() / 1_000
}

#[cfg(test)]
mod tests;
