//! [`spawn_all`]: a batch of spawns in one trip to the spawner thread, and
//! the one path every async spawn takes (a single [`Command::spawn`] is a
//! batch of one).

use std::any::Any;
use std::borrow::BorrowMut;
use std::ffi::OsString;
use std::os::fd::{OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use crate::command::{Defaults, Prepared};
use crate::{Child, Command, Error, spawner};

/// Starts every command, in order, like [`Command::spawn`] each, with one
/// trip to spawn-core's spawner thread for the whole batch when any command
/// asks for a [parent-death signal](Command::parent_death_signal), instead of
/// one trip each.
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
/// errors, and the descriptors the child takes.
struct Kept {
    program: OsString,
    cwd: Option<PathBuf>,
    fds: (Vec<(RawFd, OwnedFd)>, Vec<OwnedFd>),
    group_leader: bool,
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
                std,
                program,
                cwd,
                fds,
                group_leader,
            }) => {
                let mut tokio_cmd = tokio::process::Command::from(std);
                tokio_cmd.kill_on_drop(kill_on_drop);
                let kept = Kept {
                    program,
                    cwd,
                    fds,
                    group_leader,
                };
                ready.push((index, tokio_cmd, kept));
            }
            Err(error) => results[index] = Some(Err(error)),
        }
    }
    let (kept, tokio_cmds): (Vec<(usize, Kept)>, Vec<tokio::process::Command>) = ready
        .into_iter()
        .map(|(index, command, kept)| ((index, kept), command))
        .unzip();
    let n = tokio_cmds.len();
    let outcome = if on_spawner {
        let handle = handle.as_ref().map(Clone::clone).ok();
        spawner::run(move || {
            let _entered = handle.as_ref().map(tokio::runtime::Handle::enter);
            spawn_in_order(tokio_cmds)
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
        spawn_in_order(tokio_cmds)
    };
    for ((index, kept), result) in kept.into_iter().zip(outcome) {
        // The descriptors handed over are closed here, the child has them.
        drop(kept.fds);
        results[index] = Some(match result {
            Ok(child) => Ok(Child::new(child, kept.program, kept.group_leader)),
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

/// Spawns each command in order; a panic in one is caught and the batch
/// goes on.
fn spawn_in_order(
    commands: Vec<tokio::process::Command>,
) -> Vec<Result<tokio::process::Child, Spawned>> {
    commands
        .into_iter()
        .map(
            |mut command| match panic::catch_unwind(AssertUnwindSafe(|| command.spawn())) {
                Ok(spawned) => spawned.map_err(Spawned::Failed),
                Err(payload) => Err(Spawned::Panicked(panic_message(payload))),
            },
        )
        .collect()
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
