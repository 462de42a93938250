//! `/proc` parsing: odd command names, short or garbled lines, a process
//! that is gone.

use super::{parse_stat_cpu_ticks, parse_stat_rss_pages, read_proc};

#[test]
fn stat_fields_count_from_the_last_parenthesis() {
    let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 123 4096 300";
    assert_eq!(parse_stat_cpu_ticks(line), Some(22));
    assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
    assert_eq!(parse_stat_cpu_ticks("garbage"), None);
}

#[test]
fn stat_field_24_is_resident_pages() {
    let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 123 4096 300 18446744073709551615\n";
    assert_eq!(parse_stat_rss_pages(line), Some(300));
    assert_eq!(parse_stat_rss_pages("4242 (x) S 1 2"), None);
    assert_eq!(parse_stat_rss_pages("garbage"), None);
}

#[test]
fn own_process_reads_and_a_vanished_one_is_none() {
    let me = read_proc(std::process::id());
    assert!(me.rss_bytes.is_some_and(|b| b > 0));
    assert!(me.cpu_time.is_some());
    // Above the kernel's pid_max (at most 2^22).
    let gone = read_proc(u32::MAX - 1);
    assert_eq!((gone.rss_bytes, gone.cpu_time), (None, None));
}

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::time::Duration;

    use crate::stats::{ClusterStats, WorkerStats};
    use crate::{ConnectionStats, SlotId, WorkerId, WorkerState};

    fn worker(id: u64, slot: u32, state: WorkerState, current: bool) -> WorkerStats {
        WorkerStats {
            id: WorkerId(id),
            slot: SlotId::new(slot),
            pid: 1000 + id as u32,
            state,
            current,
            uptime: Duration::from_millis(1500),
            restarts: id,
            connections: ConnectionStats::default(),
            messages: 2,
            rss_bytes: Some(4096),
            cpu_time: None,
        }
    }

    /// Samples (`name{labels} value`) of an exposition, comments aside.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn series_are_labelled_by_slot_and_count_every_worker() {
        let stats = ClusterStats {
            workers: vec![
                // Slot 0 mid-reload: its old worker drains, the new one is current.
                worker(1, 0, WorkerState::Disconnected, false),
                worker(3, 0, WorkerState::Listening, true),
                worker(2, 1, WorkerState::Listening, true),
            ],
            slots: 2,
        };
        let text = stats.render_prometheus();
        let samples = samples(&text);
        for s in &samples {
            assert!(!s.contains("pid=") && !s.contains("worker="), "{s}");
        }
        assert!(samples.contains(&"cluster_slots 2"));
        assert!(samples.contains(&r#"cluster_workers{state="listening"} 2"#));
        assert!(samples.contains(&r#"cluster_workers{state="disconnected"} 1"#));
        assert!(samples.contains(&r#"cluster_workers{state="online"} 0"#));
        let up: Vec<_> = samples
            .iter()
            .filter(|s| s.starts_with("cluster_worker_up{"))
            .collect();
        assert_eq!(
            up,
            [
                &r#"cluster_worker_up{slot="0",state="listening"} 1"#,
                &r#"cluster_worker_up{slot="1",state="listening"} 1"#
            ]
        );
        // The slot's current worker only: slot 0's is worker 3.
        assert!(samples.contains(&r#"cluster_worker_pid{slot="0"} 1003"#));
        assert!(samples.contains(&r#"cluster_worker_restarts{slot="0"} 3"#));
        assert!(samples.contains(&r#"cluster_worker_resident_memory_bytes{slot="1"} 4096"#));
        // No CPU time known: no sample, the family still typed.
        assert!(!text.contains("cluster_worker_cpu_seconds_total{"));
        assert!(text.contains("# TYPE cluster_worker_cpu_seconds_total counter"));
        // Each family is typed once, before its samples.
        for s in &samples {
            let name = s.split(['{', ' ']).next().unwrap();
            let typed = text
                .find(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("{name} untyped"));
            assert!(typed < text.find(s).unwrap(), "{name}");
        }
    }
}
