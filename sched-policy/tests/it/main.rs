//! Integration tests of sched-policy: properties of every built-in policy,
//! snapshots of decision sequences, and an allocation-free pick path.

mod alloc;
mod props;
mod scheduler;
mod snapshots;
