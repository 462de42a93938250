//! [`spawn_all`]: a batch of spawns in one trip to the spawner thread, and
//! the one path every async spawn takes (a single [`Command::spawn`] is a
//! batch of one).

use std::any::Any;
use std::borrow::BorrowMut;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use crate::command::{Defaults, Launch, ParentEnds, Prepared};
use crate::{Child, Command, Error, spawner};

/// Starts every command, in order, like [`Command::spawn`] each, with one
/// trip to spawn-core's spawner thread for the whole batch when any command
/// asks for a [parent-death signal](Command::parent_death_signal) or a
/// [lasting parent thread](Command::lasting_parent_thread), instead of one
/// trip each.
///
/// That trip costs the caller a thread switch there and back; on a busy
/// machine, being scheduled again after it can take as long as the spawn
/// itself (here up to 0.9 ms, while the children it just started take both
/// CPUs). Starting n such children together pays it once: this is how a
/// cluster starts its workers.
///
/// The children are forked in the order of the commands (all on the spawner
/// thread when one needs it, so the order holds across kinds), and the
/// results are in that order. A command that fails, even by a panic inside
/// the spawn (tokio panics in a runtime built without its I/O driver:
/// [`Error::SpawnPanicked`]), does not stop the others. Takes commands by
/// value or by `&mut`. Needs a tokio runtime (any flavour).
///
/// # Errors
/// Each result has the errors of [`Command::spawn`].
pub fn spawn_all<C>(commands: impl IntoIterator<Item = C>) -> Vec<Result<Child, Error>>
where
    C: BorrowMut<Command>,
{
    let mut commands: Vec<C> = commands.into_iter().collect();
    spawn_each(
        commands
            .iter_mut()
            .map(|command| (command.borrow_mut(), Defaults::SPAWN)),
    )
}

/// What a spawn keeps until it returned: the program and directory for its
/// errors, the descriptors the child takes, and the parent's pipe ends of
/// our own `posix_spawn`.
struct Kept {
    program: OsString,
    cwd: Option<PathBuf>,
    fds: Vec<OwnedFd>,
    group_leader: bool,
    kill_on_drop: bool,
    ends: ParentEnds,
}

/// One spawn as the spawner thread (or the caller) runs it.
enum Job {
    Tokio(tokio::process::Command),
    #[cfg(target_os = "linux")]
    Posix(crate::posix::Plan),
}

/// A child as the spawn gave it: tokio's, or a pid and its pidfd.
enum Started {
    Tokio(tokio::process::Child),
    #[cfg(target_os = "linux")]
    Posix(u32, OwnedFd),
}

/// Spawns each command with its defaults, in order; see [`spawn_all`].
pub(crate) fn spawn_each<'a>(
    commands: impl IntoIterator<Item = (&'a mut Command, Defaults)>,
) -> Vec<Result<Child, Error>> {
    let handle = tokio::runtime::Handle::try_current();
    let mut results: Vec<Option<Result<Child, Error>>> = Vec::new();
    // Ready to spawn: (index in `results`, the spawn, what to keep).
    let mut ready = Vec::new();
    let mut on_spawner = false;
    for (command, defaults) in commands {
        let index = results.len();
        results.push(None);
        if handle.is_err() {
            results[index] = Some(Err(Error::NoRuntime {
                program: command.get_program().to_owned(),
            }));
            continue;
        }
        on_spawner |= command.needs_spawner();
        let kill_on_drop = command.kill_on_drop_set();
        match command.prepare(defaults) {
            Ok(Prepared {
                launch,
                program,
                cwd,
                kept,
                group_leader,
            }) => {
                let (job, ends) = match launch {
                    Launch::Std(std) => {
                        let mut tokio_cmd = tokio::process::Command::from(std);
                        tokio_cmd.kill_on_drop(kill_on_drop);
                        (Job::Tokio(tokio_cmd), ParentEnds::default())
                    }
                    #[cfg(target_os = "linux")]
                    Launch::Posix(plan, ends) => (Job::Posix(plan), ends),
                };
                let kept = Kept {
                    program,
                    cwd,
                    fds: kept,
                    group_leader,
                    kill_on_drop,
                    ends,
                };
                ready.push((index, job, kept));
            }
            Err(error) => results[index] = Some(Err(error)),
        }
    }
    let (kept, jobs): (Vec<(usize, Kept)>, Vec<Job>) = ready
        .into_iter()
        .map(|(index, job, kept)| ((index, kept), job))
        .unzip();
    let n = jobs.len();
    let outcome = if on_spawner {
        let handle = handle.as_ref().map(Clone::clone).ok();
        spawner::run(move || {
            let _entered = handle.as_ref().map(tokio::runtime::Handle::enter);
            spawn_in_order(jobs)
        })
        .unwrap_or_else(|error| {
            (0..n)
                .map(|_| {
                    Err(Spawned::Failed(std::io::Error::new(
                        error.kind(),
                        error.to_string(),
                    )))
                })
                .collect()
        })
    } else {
        spawn_in_order(jobs)
    };
    for ((index, mut kept), result) in kept.into_iter().zip(outcome) {
        // The descriptors handed over are closed here, the child has them.
        drop(std::mem::take(&mut kept.fds));
        results[index] = Some(match result {
            Ok(Started::Tokio(child)) => {
                Ok(Child::from_tokio(child, kept.program, kept.group_leader))
            }
            #[cfg(target_os = "linux")]
            Ok(Started::Posix(pid, pidfd)) => adopt(pid, pidfd, kept),
            Err(Spawned::Failed(source)) => {
                Err(Error::from_spawn(kept.program, kept.cwd.as_ref(), source))
            }
            Err(Spawned::Panicked(message)) => Err(Error::SpawnPanicked {
                program: kept.program,
                message,
            }),
        });
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| unreachable!("every command has a result")))
        .collect()
}

/// Why one spawn of a batch gave no child.
enum Spawned {
    Failed(std::io::Error),
    Panicked(String),
}

/// Spawns each job in order; a panic in one is caught and the batch goes
/// on.
fn spawn_in_order(jobs: Vec<Job>) -> Vec<Result<Started, Spawned>> {
    jobs.into_iter()
        .map(|job| {
            let spawn = AssertUnwindSafe(move || match job {
                Job::Tokio(mut command) => command.spawn().map(Started::Tokio),
                #[cfg(target_os = "linux")]
                Job::Posix(plan) => {
                    crate::posix::spawn(&plan).map(|(pid, pidfd)| Started::Posix(pid, pidfd))
                }
            });
            match panic::catch_unwind(spawn) {
                Ok(spawned) => spawned.map_err(Spawned::Failed),
                Err(payload) => Err(Spawned::Panicked(panic_message(payload))),
            }
        })
        .collect()
}

/// The [`Child`] of a child our own `posix_spawn` started: its pidfd and
/// pipe ends registered with the caller's runtime. tokio panics there when
/// the runtime has no I/O driver: the child is then killed, reaped, and the
/// panic is the spawn's error.
#[cfg(target_os = "linux")]
fn adopt(pid: u32, pidfd: OwnedFd, kept: Kept) -> Result<Child, Error> {
    let Kept {
        program,
        group_leader,
        kill_on_drop,
        ends,
        ..
    } = kept;
    let registered = panic::catch_unwind(AssertUnwindSafe(|| {
        crate::pidfd::Process::new(pid, pidfd, kill_on_drop)
    }));
    let process = match registered {
        Ok(Ok(process)) => process,
        Ok(Err((source, pidfd))) => {
            crate::posix::kill(pid, libc::SIGKILL);
            crate::reaper::adopt(pid, pidfd);
            return Err(Error::Spawn { program, source });
        }
        Err(payload) => {
            crate::posix::kill(pid, libc::SIGKILL);
            crate::posix::reap_blocking(pid);
            return Err(Error::SpawnPanicked {
                program,
                message: panic_message(payload),
            });
        }
    };
    Child::from_posix(process, ends, program.clone(), group_leader)
        .map_err(|source| Error::Spawn { program, source })
}

/// The text of a caught panic; the payload is dropped without letting a
/// panicking `Drop` of it escape (it is leaked then).
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    };
    if let Err(nested) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        std::mem::forget(nested);
    }
    message
}
