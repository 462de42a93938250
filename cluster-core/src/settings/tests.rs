//! Unit tests of settings: defaults and cumulative merging.

use std::time::Duration;

use super::*;

#[test]
fn defaults() {
    let s = Settings::new();
    assert!(s.program.is_none() && s.args.is_empty() && s.env.is_empty());
    assert!(s.n_workers >= 1);
    assert_eq!(s.stdio, WorkerStdio::Piped);
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert_eq!(s.heartbeat, Some(Heartbeat::default()));
    assert_eq!(s.handoff_window, DEFAULT_HANDOFF_WINDOW);
    assert_eq!(s.handoff_deadline, DEFAULT_HANDOFF_DEADLINE);
    assert!(!s.handle_signals);
    assert!(!s.reload_on_hangup);
}

#[test]
fn signal_handling_merges_in() {
    let mut s = Settings::new();
    let mut patch = Settings::new();
    patch.reload_on_hangup();
    s.merge(&patch);
    assert!(s.reload_on_hangup && !s.handle_signals);
    patch.handle_signals();
    s.merge(&patch);
    assert!(s.reload_on_hangup && s.handle_signals);
}

#[test]
fn env_later_value_wins_and_args_accumulate() {
    let mut s = Settings::new();
    s.arg("a")
        .env("K", "1")
        .args(["b", "c"])
        .env("K", "2")
        .env("L", "x");
    assert_eq!(s.args, ["a", "b", "c"]);
    assert_eq!(s.env, [("K".into(), "2".into()), ("L".into(), "x".into())]);
}

#[test]
fn merge_is_cumulative() {
    let mut s = Settings::new();
    s.program("/bin/first")
        .arg("one")
        .env("A", "1")
        .n_workers(3);
    let mut patch = Settings::new();
    patch
        .arg("two")
        .env("A", "2")
        .env("B", "3")
        .restart(RestartPolicy::Always)
        .heartbeat(Duration::from_millis(10), Duration::from_millis(50));
    s.merge(&patch);
    assert_eq!(s.program.as_deref(), Some(Path::new("/bin/first")));
    assert_eq!(s.args, ["one", "two"]);
    assert_eq!(s.env, [("A".into(), "2".into()), ("B".into(), "3".into())]);
    assert_eq!(s.n_workers, 3, "an unset field of the patch keeps ours");
    assert_eq!(s.restart, RestartPolicy::Always);
    assert_eq!(
        s.heartbeat,
        Some(Heartbeat {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(50)
        })
    );
}

#[test]
fn a_scheduling_policy_setting_wins_and_merges() {
    let mut s = Settings::new();
    assert!(s.scheduling.is_none());
    let mut patch = Settings::new();
    patch.scheduling_policy(PolicyKind::None);
    s.merge(&patch);
    let choice = s.resolve_policy().unwrap();
    assert!(choice.is_none());
    assert!(choice.build().is_none(), "none has no picker");

    s.scheduling_policy(PolicyKind::Sticky);
    let policy = s.resolve_policy().unwrap().build().expect("a picker");
    assert_eq!(policy.name(), "sticky");
    // An unset patch keeps what is set.
    s.merge(&Settings::new());
    assert_eq!(
        s.resolve_policy().unwrap().build().unwrap().name(),
        "sticky"
    );
}

#[test]
fn a_custom_policy_is_built_once_per_call() {
    #[derive(Debug)]
    struct Lowest;
    impl Policy for Lowest {
        fn name(&self) -> &'static str {
            "lowest"
        }
        fn pick(
            &mut self,
            workers: sched_policy::Eligible<'_>,
            _: &sched_policy::Connection,
        ) -> Option<sched_policy::SlotId> {
            workers.iter().next().map(|w| w.slot())
        }
    }
    let mut s = Settings::new();
    s.custom_policy(|| Lowest);
    let choice = s.resolve_policy().unwrap();
    assert!(!choice.is_none());
    assert_eq!(choice.build().unwrap().name(), "lowest");
    assert_eq!(format!("{:?}", s.clone().scheduling), "Some(custom)");
}
