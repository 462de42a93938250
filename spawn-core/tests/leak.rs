//! 1,000 sequential spawns leave the count of open descriptors and of zombie
//! children unchanged.
//!
//! This is its own test binary, holding one test, because it counts
//! process-wide resources (`/proc/self/fd`, our children): under `cargo test`
//! the tests of one binary share a process and would disturb the counts.

use std::time::Duration;

use spawn_core::{Close, Command, Stdio};

const ROUNDS: usize = 1000;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Children of this process in state `Z`.
fn zombie_children() -> usize {
    let me = std::process::id().to_string();
    let mut zombies = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // not a pid, or gone meanwhile
        };
        // pid (comm) state ppid ...: comm may hold spaces, split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if state == Some("Z") && ppid == Some(me.as_str()) {
            zombies += 1;
        }
    }
    zombies
}

#[test]
fn a_thousand_spawns_leak_no_descriptor_and_no_zombie() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            // Warm-up: tokio's SIGCHLD pipe and the like are opened once.
            let out = Command::new("/bin/true").output().await.expect("warm-up");
            assert_eq!(out.close, Close::Exited(0));
            let (fds_before, zombies_before) = (open_fds(), zombie_children());

            for round in 0..ROUNDS {
                // Alternate plain spawns (posix_spawn path), piped captures,
                // and hooked spawns (fork path with an extra descriptor).
                let close = match round % 3 {
                    0 => Command::new("/bin/true")
                        .spawn()
                        .expect("spawn")
                        .wait()
                        .await
                        .expect("wait"),
                    1 => {
                        Command::new("/bin/true")
                            .stdin(Stdio::piped())
                            .output()
                            .await
                            .expect("output")
                            .close
                    }
                    _ => {
                        let (_read, write) = nix::unistd::pipe().expect("pipe");
                        Command::new("/bin/true")
                            .inherit_fd(3, write)
                            .spawn()
                            .expect("spawn")
                            .wait()
                            .await
                            .expect("wait")
                    }
                };
                assert_eq!(close, Close::Exited(0), "round {round}");
            }

            assert_eq!(open_fds(), fds_before, "descriptors leaked");
            assert_eq!(zombie_children(), zombies_before, "zombies left");
            assert_eq!(zombies_before, 0);
        })
        .await
        .expect("the leak test timed out");
    });
}
