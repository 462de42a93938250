//! Test helper (not a user tool): spawns `sleep 1000` with a parent-death
//! signal of SIGKILL from a thread that exits right after, prints the
//! child's pid, then waits for its own stdin to close. The integration tests
//! kill this process and check that the `sleep` dies with it.

use std::io::{Read, Write};

use spawn_core::{Command, Signal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::thread::spawn(|| -> Result<u32, spawn_core::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| spawn_core::Error::Spawn {
                program: "sleep".into(),
                source,
            })?;
        let _entered = runtime.enter();
        let child = Command::new("sleep")
            .arg("1000")
            .parent_death_signal(Signal::SIGKILL)
            .spawn()?;
        Ok(child.id().unwrap_or_default())
    })
    .join()
    .map_err(|_| "the spawning thread panicked")??;
    println!("{pid}");
    std::io::stdout().flush()?;
    // Block until the test closes our stdin or kills us.
    let _ = std::io::stdin().read(&mut [0u8; 1])?;
    Ok(())
}
