//! Unit tests of the restart state machine, over injected instants.

use std::time::{Duration, Instant};

use super::*;
use crate::event::Close;

const MS: Duration = Duration::from_millis(1);

fn guard(policy: RestartPolicy) -> RestartGuard {
    RestartGuard::new(
        policy,
        Backoff {
            initial: 100 * MS,
            factor: 2.0,
            cap: 1000 * MS,
            min_uptime: 500 * MS,
        },
        CrashLoopLimit {
            max_restarts: 5,
            window: 10_000 * MS,
        },
    )
}

/// Start at `t`, crash after `up`, return the decision and the exit time.
fn crash(g: &mut RestartGuard, t: Instant, up: Duration) -> (Decision, Instant) {
    g.started(t);
    let end = t + up;
    (g.exited(end, Close::Exited(1), false), end)
}

#[test]
fn backoff_grows_then_caps() {
    let b = Backoff {
        initial: 100 * MS,
        factor: 2.0,
        cap: 1000 * MS,
        min_uptime: MS,
    };
    let delays: Vec<_> = (0..7).map(|k| b.delay(k)).collect();
    assert_eq!(
        delays,
        [0, 100, 200, 400, 800, 1000, 1000].map(|m| m * MS).to_vec()
    );
    assert_eq!(b.delay(u32::MAX), 1000 * MS);
}

#[test]
fn nonsense_factor_is_treated_as_one() {
    for factor in [0.0, -3.0, f64::NAN] {
        let b = Backoff {
            initial: 100 * MS,
            factor,
            cap: 1000 * MS,
            min_uptime: MS,
        };
        assert_eq!(b.delay(5), 100 * MS);
    }
}

#[test]
fn policy_never_and_clean_exit_under_on_failure_stop() {
    let now = Instant::now();
    let mut g = guard(RestartPolicy::Never);
    g.started(now);
    assert_eq!(
        g.exited(now, Close::Exited(1), false),
        Decision::Stop(StopReason::Policy)
    );
    let mut g = guard(RestartPolicy::OnFailure);
    g.started(now);
    assert_eq!(
        g.exited(now, Close::Exited(0), false),
        Decision::Stop(StopReason::Policy)
    );
    g.started(now);
    assert_eq!(
        g.exited(now, Close::Signaled(9), false),
        Decision::Restart {
            delay: Duration::ZERO
        }
    );
    let mut g = guard(RestartPolicy::Always);
    g.started(now);
    assert_eq!(
        g.exited(now, Close::Exited(0), false),
        Decision::Restart {
            delay: Duration::ZERO
        }
    );
}

#[test]
fn exit_after_disconnect_is_never_restarted() {
    let now = Instant::now();
    for policy in [RestartPolicy::OnFailure, RestartPolicy::Always] {
        let mut g = guard(policy);
        g.started(now);
        assert_eq!(
            g.exited(now, Close::Signaled(9), true),
            Decision::Stop(StopReason::Disconnected)
        );
    }
}

#[test]
fn consecutive_crashes_back_off_and_long_uptime_resets() {
    let mut g = guard(RestartPolicy::OnFailure);
    let mut t = Instant::now();
    let mut delays = Vec::new();
    for _ in 0..3 {
        let (d, end) = crash(&mut g, t, 10 * MS);
        let Decision::Restart { delay } = d else {
            panic!("expected a restart, got {d:?}")
        };
        delays.push(delay);
        t = end + delay;
    }
    assert_eq!(delays, [Duration::ZERO, 100 * MS, 200 * MS]);
    // A healthy run (>= min_uptime) resets the sequence.
    let (d, _) = crash(&mut g, t, 600 * MS);
    assert_eq!(
        d,
        Decision::Restart {
            delay: Duration::ZERO
        }
    );
}

#[test]
fn crash_loop_gives_up_after_the_limit_within_the_window() {
    let mut g = guard(RestartPolicy::OnFailure);
    let mut t = Instant::now();
    for i in 0..5 {
        let (d, end) = crash(&mut g, t, MS);
        assert!(matches!(d, Decision::Restart { .. }), "restart {i}: {d:?}");
        t = end;
    }
    let (d, _) = crash(&mut g, t, MS);
    assert_eq!(d, Decision::GiveUp);
}

#[test]
fn restarts_outside_the_window_do_not_count() {
    let mut g = guard(RestartPolicy::OnFailure);
    let mut t = Instant::now();
    for _ in 0..5 {
        let (_, end) = crash(&mut g, t, MS);
        t = end;
    }
    // Eleven seconds later the window has slid past all five.
    let (d, _) = crash(&mut g, t + 11_000 * MS, MS);
    assert!(matches!(d, Decision::Restart { .. }), "{d:?}");
}

/// A worker killed from outside after it listened, however often: always
/// restarted (with the backoff), never given up.
#[test]
fn runs_that_were_ready_never_count_toward_the_limit() {
    let mut g = guard(RestartPolicy::OnFailure);
    let mut t = Instant::now();
    for i in 0..100 {
        g.started(t);
        g.online(t + MS);
        g.ready();
        t += 50 * MS;
        let d = g.exited(t, Close::Signaled(9), false);
        assert!(matches!(d, Decision::Restart { .. }), "run {i}: {d:?}");
        // The backoff still applies (these runs were short), capped.
        if let Decision::Restart { delay } = d {
            assert!(delay <= 1000 * MS);
            t += delay;
        }
    }
}

#[test]
fn a_worker_online_but_never_listening_is_ready_after_min_uptime() {
    let mut g = guard(RestartPolicy::OnFailure);
    let t = Instant::now();
    // Online, then dead within min_uptime (500 ms): a failed start, five
    // times restarted, the sixth given up.
    let mut at = t;
    for _ in 0..5 {
        g.started(at);
        g.online(at);
        assert!(matches!(
            g.exited(at + 100 * MS, Close::Exited(1), false),
            Decision::Restart { .. }
        ));
        at += 200 * MS;
    }
    g.started(at);
    g.online(at);
    // Up for min_uptime after online: ready, so restarted despite the limit.
    assert!(matches!(
        g.exited(at + 600 * MS, Close::Exited(1), false),
        Decision::Restart { .. }
    ));
    g.started(at + 700 * MS);
    g.online(at + 700 * MS);
    assert_eq!(
        g.exited(at + 750 * MS, Close::Exited(1), false),
        Decision::GiveUp
    );
}

/// Listening, then exiting by itself at once (a second port taken): a
/// failed start although it listened.
#[test]
fn an_early_exit_code_counts_even_after_listening() {
    let mut g = guard(RestartPolicy::OnFailure);
    let mut t = Instant::now();
    for _ in 0..5 {
        g.started(t);
        g.online(t);
        g.ready();
        assert!(matches!(
            g.exited(t + 10 * MS, Close::Exited(1), false),
            Decision::Restart { .. }
        ));
        t += 100 * MS;
    }
    g.started(t);
    g.ready();
    assert_eq!(
        g.exited(t + 10 * MS, Close::Exited(1), false),
        Decision::GiveUp
    );
}
