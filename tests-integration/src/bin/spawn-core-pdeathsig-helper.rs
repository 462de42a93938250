//! Test helper (not a user tool): spawns a child with a parent-death signal
//! of SIGKILL from a thread that exits right after, prints the child's pid,
//! then waits for its own stdin to close. The integration tests kill this
//! process and check that the child dies with it.
//!
//! Without arguments the child is `sleep 1000` with spawn-core's
//! `parent_death_signal`. With `lasting`, the child is this program run as
//! `sets-own`, which sets its own parent-death signal (as a cluster worker
//! does), says `set` and sleeps; it is spawned with
//! `lasting_parent_thread`, and the spawning thread exits only once the
//! child said `set`.

use std::io::{BufRead, Read, Write};

use spawn_core::{Command, Signal, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1);
    if mode.as_deref() == Some("sets-own") {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        println!("set");
        std::io::stdout().flush()?;
        std::thread::sleep(std::time::Duration::from_secs(1000));
        return Ok(());
    }
    let lasting = mode.as_deref() == Some("lasting");
    let pid = std::thread::spawn(
        move || -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let _entered = runtime.enter();
            let child = if lasting {
                let mut child = Command::new(std::env::current_exe()?)
                    .arg("sets-own")
                    .stdout(Stdio::piped())
                    .lasting_parent_thread()
                    .spawn()?;
                let stdout = child.take_stdout().ok_or("no stdout")?.into_owned_fd()?;
                let mut line = String::new();
                std::io::BufReader::new(std::fs::File::from(stdout)).read_line(&mut line)?;
                if line.trim_end() != "set" {
                    return Err(format!("the child said {line:?}").into());
                }
                child
            } else {
                Command::new("sleep")
                    .arg("1000")
                    .parent_death_signal(Signal::SIGKILL)
                    .spawn()?
            };
            Ok(child.id().unwrap_or_default())
        },
    )
    .join()
    .map_err(|_| "the spawning thread panicked")?
    .map_err(|e| e.to_string())?;
    println!("{pid}");
    std::io::stdout().flush()?;
    // Block until the test closes our stdin or kills us.
    let _ = std::io::stdin().read(&mut [0u8; 1])?;
    Ok(())
}
