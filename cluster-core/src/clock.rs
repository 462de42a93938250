//! `CLOCK_MONOTONIC` as a number: on Linux one clock for every process of
//! the machine, so a deadline the primary writes in a `NewConnection` means
//! the same instant to the worker that reads it.

/// Nanoseconds of `CLOCK_MONOTONIC` now (the clock behind `Instant`);
/// 0 if it could not be read, which no Linux system does.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    })
}

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
