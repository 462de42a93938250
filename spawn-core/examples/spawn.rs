//! Runs a program with inherited stdio, then prints its close as one JSON
//! line like the seed's `{code, signal}`, and exits like the child did (its
//! exit code, or 128 + the signal number).
//!
//! ```sh
//! cargo run -p spawn-core --example spawn -- sh -c 'echo hello; exit 3'
//! cargo run -p spawn-core --example spawn -- --shell 'echo "$1"' 'literal; arg'
//! ```

use std::process::ExitCode;

use anyhow::{Context, bail};
use spawn_core::Command;

const USAGE: &str = "usage: spawn PROGRAM [ARGS...] | spawn --shell SCRIPT [ARGS...]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("spawn: {err:#}");
            ExitCode::from(127)
        }
    }
}

fn run() -> anyhow::Result<u8> {
    let mut args = std::env::args_os().skip(1);
    let Some(first) = args.next() else {
        bail!("{USAGE}");
    };
    let mut command = if first == "--shell" {
        Command::shell(args.next().context(USAGE)?)
    } else {
        Command::new(first)
    };
    command.args(args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let close = runtime.block_on(command.status())?;
    println!("{}", close.to_json());
    Ok(u8::try_from(close.mirror_exit_code() & 0xff).unwrap_or(u8::MAX))
}
