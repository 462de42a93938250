//! Unit tests of settings: defaults, cumulative merging, and the
//! operator's variables (`read_vars`).

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
    let choice = s.resolve_policy();
    assert!(choice.is_none());
    assert!(choice.build().is_none(), "none has no picker");

    s.scheduling_policy(PolicyKind::Sticky);
    let policy = s.resolve_policy().build().expect("a picker");
    assert_eq!(policy.name(), "sticky");
    // An unset patch keeps what is set.
    s.merge(&Settings::new());
    assert_eq!(s.resolve_policy().build().unwrap().name(), "sticky");
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
    let choice = s.resolve_policy();
    assert!(!choice.is_none());
    assert_eq!(choice.build().unwrap().name(), "lowest");
    assert_eq!(format!("{:?}", s.clone().scheduling), "Some(custom)");
}

/// `read_vars` on the defaults.
fn from_vars(vars: &[(&str, &str)]) -> crate::Result<Settings> {
    let mut s = Settings::new();
    s.read_vars(vars.iter().copied())?;
    Ok(s)
}

#[test]
fn no_variable_changes_nothing() {
    let s = from_vars(&[("PATH", "/bin"), ("HOME", "/root")]).unwrap();
    let d = Settings::new();
    assert_eq!(s.n_workers, d.n_workers);
    assert!(s.scheduling.is_none() && s.pid_file.is_none() && s.metrics.is_none());
    assert!(s.logs.is_none());
    assert_eq!(s.recycle, Recycle::default());
    assert_eq!(s.heartbeat, d.heartbeat);
    // Empty or blank counts as unset.
    let s = from_vars(&[("WORKERS", ""), ("MAX_AGE_SECS", "  ")]).unwrap();
    assert_eq!(s.n_workers, d.n_workers);
    assert_eq!(s.recycle.max_age, None);
}

#[test]
fn every_operator_variable_is_read() {
    let s = from_vars(&[
        ("WORKERS", "3"),
        ("CLUSTER_SCHED_POLICY", "least-conn"),
        ("MAX_REQUESTS", "1000"),
        ("MAX_REQUESTS_JITTER", "50"),
        ("MAX_MEMORY_MB", "256"),
        ("MAX_AGE_SECS", "3600"),
        ("PID_FILE", "/run/app.pid"),
        ("METRICS_PORT", "9100"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,cluster_core=debug"),
        ("CLUSTER_HANDOFF_WINDOW", "4"),
        ("CLUSTER_HANDOFF_DEADLINE_MS", "250"),
        ("CLUSTER_HEARTBEAT_INTERVAL_MS", "100"),
        ("CLUSTER_HEARTBEAT_TIMEOUT_MS", "900"),
        ("CLUSTER_CRASH_LOOP_LIMIT", "2"),
        ("CLUSTER_CRASH_LOOP_WINDOW_MS", "5000"),
    ])
    .unwrap();
    assert_eq!(s.n_workers, 3);
    assert_eq!(s.resolve_policy().build().unwrap().name(), "least-conn");
    assert_eq!(s.recycle.max_requests, Some(1000));
    assert_eq!(s.recycle.jitter, 50);
    assert_eq!(s.recycle.max_memory, Some(256 * 1024 * 1024));
    assert_eq!(s.recycle.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(s.pid_file.as_deref(), Some(Path::new("/run/app.pid")));
    assert_eq!(s.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(
        s.logs,
        Some(Logs {
            format: LogFormat::Json,
            filter: "info,cluster_core=debug".into()
        })
    );
    assert_eq!(s.handoff_window, 4);
    assert_eq!(s.handoff_deadline, Duration::from_millis(250));
    assert_eq!(
        s.heartbeat,
        Some(Heartbeat {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(900)
        })
    );
    assert_eq!(s.crash_loop.max_restarts, 2);
    assert_eq!(s.crash_loop.window, Duration::from_millis(5000));
}

#[test]
fn a_malformed_variable_is_an_error_naming_it_and_its_value() {
    for (name, value) in [
        ("WORKERS", "0"),
        ("WORKERS", "many"),
        ("MAX_REQUESTS", "-1"),
        ("MAX_MEMORY_MB", "1G"),
        ("MAX_AGE_SECS", "0"),
        ("METRICS_PORT", "70000"),
        ("LOG_FORMAT", "xml"),
        ("RUST_LOG", "cluster_core=[["),
        ("CLUSTER_HANDOFF_DEADLINE_MS", "1s"),
        ("CLUSTER_HEARTBEAT_TIMEOUT_MS", "soon"),
    ] {
        let err = from_vars(&[(name, value)]).unwrap_err();
        match &err {
            crate::Error::EnvVar {
                name: n, value: v, ..
            } => assert_eq!((*n, v.as_str()), (name, value)),
            other => panic!("{name}={value}: {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{name}={value:?}: expected ")),
            "{text}"
        );
    }
    let err = from_vars(&[("CLUSTER_SCHED_POLICY", "fastest")]).unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::SchedulingPolicy {
                name: "CLUSTER_SCHED_POLICY",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_variables_replace_what_was_set_before_and_code_after_wins() {
    let mut s = Settings::new();
    s.logs(LogFormat::Plain, "warn").n_workers(5);
    s.read_vars([("LOG_FORMAT", "json"), ("WORKERS", "2")])
        .unwrap();
    // The format changed, the program's filter stayed.
    assert_eq!(
        s.logs,
        Some(Logs {
            format: LogFormat::Json,
            filter: "warn".into()
        })
    );
    assert_eq!(s.n_workers, 2);
    s.n_workers(7);
    assert_eq!(s.n_workers, 7);
    // `RUST_LOG` alone turns plain logs on; `LOG_FORMAT=off` turns them off.
    let s = from_vars(&[("RUST_LOG", "debug")]).unwrap();
    assert_eq!(
        s.logs.map(|l| (l.format, l.filter)),
        Some((LogFormat::Plain, "debug".into()))
    );
    let s = from_vars(&[("RUST_LOG", "debug"), ("LOG_FORMAT", "off")]).unwrap();
    assert!(s.logs.is_none());
    // A heartbeat timeout of 0 turns the heartbeat off.
    let s = from_vars(&[("CLUSTER_HEARTBEAT_TIMEOUT_MS", "0")]).unwrap();
    assert!(s.heartbeat.is_none());
}

#[test]
fn the_operator_settings_merge_in() {
    let mut s = Settings::new();
    let mut patch = Settings::new();
    patch
        .metrics(([127, 0, 0, 1], 9100))
        .logs(LogFormat::Json, "info")
        .scale_on_signals();
    s.merge(&patch);
    assert_eq!(s.metrics, patch.metrics);
    assert_eq!(s.logs, patch.logs);
    assert!(s.scale_on_signals);
}
