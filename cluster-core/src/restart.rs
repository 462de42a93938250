//! Process guarding as pure logic: the restart policy, exponential backoff and
//! the crash-loop limit of one worker *slot*.
//!
//! Nothing here reads a clock or sleeps: every decision takes the current
//! [`Instant`] as an argument, so the state machine is unit-tested without
//! waiting. The primary's supervisor feeds it real instants.
//!
//! # The rules
//!
//! - [`RestartPolicy::Never`] never restarts; [`RestartPolicy::OnFailure`]
//!   restarts after a non-zero exit code or a signal; [`RestartPolicy::Always`]
//!   restarts after any exit. A worker that exited after `disconnect()` is never
//!   restarted, whatever the policy.
//! - Backoff: the first restart after a healthy run is immediate; each further
//!   consecutive restart waits `initial`, then `initial * factor`, … up to `cap`.
//!   A worker that stayed up for at least `min_uptime` resets the sequence.
//! - Crash-loop limit: it counts only *failed starts*: runs that ended
//!   before the worker was ready (listening, or online for `min_uptime`
//!   without listening), or that ended by themselves (an exit code, not a
//!   signal) within `min_uptime` of the start. If the slot already had `max_restarts` such
//!   runs restarted within the last `window`, the next one gives up instead:
//!   the slot stays empty and the primary reports it. A worker killed from
//!   outside after it was ready is always restarted (with the backoff), so a
//!   service under a kill storm keeps its slots. The primary never spins:
//!   the backoff applies to every restart.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::event::Close;

/// When a dead worker is replaced. The default is [`RestartPolicy::OnFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart (Node's behaviour without user code).
    Never,
    /// Restart after a non-zero exit code or death by a signal.
    #[default]
    OnFailure,
    /// Restart after any exit, even `exit(0)`.
    Always,
}

/// Exponential backoff between consecutive restarts of one slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the second consecutive restart (the first is immediate).
    /// Default: 100 ms.
    pub initial: Duration,
    /// Growth factor of the delay, at least 1. Default: 2.
    pub factor: f64,
    /// Largest delay. Default: 10 s.
    pub cap: Duration,
    /// A worker that stayed up this long resets the backoff. Default: 1 s.
    pub min_uptime: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_secs(10),
            min_uptime: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The delay before the restart that follows `consecutive` earlier
    /// consecutive restarts: zero, then `initial`, `initial * factor`, … capped.
    pub fn delay(&self, consecutive: u32) -> Duration {
        if consecutive == 0 {
            return Duration::ZERO;
        }
        let factor = if self.factor.is_finite() && self.factor >= 1.0 {
            self.factor
        } else {
            1.0
        };
        let exponent = i32::try_from(consecutive - 1).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * factor.powi(exponent);
        if !secs.is_finite() || secs >= self.cap.as_secs_f64() {
            return self.cap;
        }
        Duration::from_secs_f64(secs).min(self.cap)
    }
}

/// The crash-loop limit: at most `max_restarts` restarts of a slot after
/// failed starts within `window`. A failed start is a run that ended before
/// the worker was ready (listening, or online for [`Backoff::min_uptime`]
/// without listening), or that exited by itself (an exit code) within
/// `min_uptime` of its start; a worker killed by a signal after it was
/// ready never counts. Default: 10 per 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoopLimit {
    /// Restarts after failed starts allowed within the window; one more
    /// gives up.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for CrashLoopLimit {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// What to do after a worker of a slot exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a replacement after `delay`.
    Restart {
        /// How long to wait first.
        delay: Duration,
    },
    /// Leave the slot empty: the policy does not ask for a restart.
    Stop(StopReason),
    /// The crash-loop limit was reached: leave the slot empty and report it.
    GiveUp,
}

/// Why a slot is not restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The worker exited after `disconnect()`.
    Disconnected,
    /// The policy does not restart this exit.
    Policy,
}

/// The restart state of one slot.
#[derive(Debug, Clone)]
pub struct RestartGuard {
    policy: RestartPolicy,
    backoff: Backoff,
    limit: CrashLoopLimit,
    started_at: Option<Instant>,
    online_at: Option<Instant>,
    listening: bool,
    consecutive: u32,
    restarts: VecDeque<Instant>,
}

impl RestartGuard {
    /// A guard with no history.
    pub fn new(policy: RestartPolicy, backoff: Backoff, limit: CrashLoopLimit) -> Self {
        Self {
            policy,
            backoff,
            limit,
            started_at: None,
            online_at: None,
            listening: false,
            consecutive: 0,
            restarts: VecDeque::new(),
        }
    }

    /// Record that a worker of this slot started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started_at = Some(now);
        self.online_at = None;
        self.listening = false;
    }

    /// Record that the slot's worker came online at `now`: it is ready once
    /// it listens, or once it stayed up [`Backoff::min_uptime`] from now.
    pub fn online(&mut self, now: Instant) {
        self.online_at.get_or_insert(now);
    }

    /// Record that the slot's worker listens (or was otherwise found
    /// ready, like a reload's replacement): its end no longer counts toward
    /// the crash-loop limit.
    pub fn ready(&mut self) {
        self.listening = true;
    }

    /// Whether the current run was ready at `now`.
    fn was_ready(&self, now: Instant) -> bool {
        self.listening
            || self
                .online_at
                .is_some_and(|t| now.saturating_duration_since(t) >= self.backoff.min_uptime)
    }

    /// Decide what follows the exit of the slot's worker at `now`. A
    /// `Restart` after a run that was not ready is counted against the
    /// crash-loop limit.
    pub fn exited(&mut self, now: Instant, exit: Close, after_disconnect: bool) -> Decision {
        let ready = self.was_ready(now);
        self.online_at = None;
        self.listening = false;
        let uptime = self
            .started_at
            .take()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        // A failed start: it never got ready, or it ended by itself (an
        // exit code, not a signal from outside) within min_uptime, like a
        // worker that listens on one port and cannot on the next.
        let failed_start = !ready || (exit.code().is_some() && uptime < self.backoff.min_uptime);
        if uptime >= self.backoff.min_uptime {
            self.consecutive = 0;
        }
        if after_disconnect {
            return Decision::Stop(StopReason::Disconnected);
        }
        let wanted = match self.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Always => true,
        };
        if !wanted {
            return Decision::Stop(StopReason::Policy);
        }
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= self.limit.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if failed_start {
            if self.restarts.len() >= self.limit.max_restarts as usize {
                return Decision::GiveUp;
            }
            self.restarts.push_back(now);
        }
        let delay = self.backoff.delay(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        Decision::Restart { delay }
    }
}
