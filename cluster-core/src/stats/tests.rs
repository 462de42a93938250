//! `/proc` parsing: odd command names, short or garbled lines, a process
//! that is gone.

use super::{parse_stat_cpu_ticks, parse_statm_rss_pages, read_proc};

#[test]
fn stat_fields_count_from_the_last_parenthesis() {
    let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 123 4096 300";
    assert_eq!(parse_stat_cpu_ticks(line), Some(22));
    assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
    assert_eq!(parse_stat_cpu_ticks("garbage"), None);
}

#[test]
fn statm_second_field_is_resident_pages() {
    assert_eq!(parse_statm_rss_pages("1000 250 30 1 0 90 0\n"), Some(250));
    assert_eq!(parse_statm_rss_pages("1000"), None);
    assert_eq!(parse_statm_rss_pages("a b"), None);
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
