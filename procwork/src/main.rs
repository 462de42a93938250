//! The `procwork` binary: parses the command line and runs the subcommand
//! (see the library's docs and `docs/procwork.md`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use procwork::cli::{Cli, CliCommand};
use procwork::control::{Reply, Request};

fn main() -> ExitCode {
    // A worker starting: set LISTEN_PID to this pid and exec the program.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == procwork::shim::SHIM_ARG) {
        let err = procwork::shim::exec(&args[2..]);
        let program = args
            .get(2)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        eprintln!("procwork: cannot run `{program}`: {err}");
        return ExitCode::from(127);
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("procwork: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        CliCommand::Run(args) => {
            let outcome = procwork::app::run(*args).context("run")?;
            Ok(match outcome {
                procwork::supervisor::Outcome::GaveUp => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            })
        }
        CliCommand::Status(args) => {
            let status = procwork::app::status(&args.target)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", procwork::status::render(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Reload(target) => done(procwork::app::ask(&target, &Request::Reload, None)?),
        CliCommand::Scale(args) => done(procwork::app::ask(
            &args.target,
            &Request::Scale {
                workers: args.workers,
            },
            Some(std::time::Duration::from_secs(10)),
        )?),
        CliCommand::Stop(target) => done(procwork::app::ask(&target, &Request::Stop, None)?),
    }
}

fn done(reply: Reply) -> anyhow::Result<ExitCode> {
    if let Reply::Done { message } = reply {
        println!("{message}");
    }
    Ok(ExitCode::SUCCESS)
}
