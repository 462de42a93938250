//! The spawner thread: one process-wide thread that lives as long as the
//! process and runs the spawns that ask for a parent-death signal.
//!
//! Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//! exits, not the process. A spawn from a short-lived thread (tokio's
//! blocking pool retires idle threads after ten seconds) would kill its child
//! soon after. Forking from this thread, which never exits, makes the signal
//! mean what the user meant: "the parent process died".

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Runs `job` on the spawner thread and returns its result. A panic in
/// `job` is caught there (the thread must outlive it: its exit would fire
/// the parent-death signal of every child it forked) and resumed here, in
/// the caller, as if the job had run on the calling thread.
pub(crate) fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let sender = sender()?;
    let (tx, rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let result = panic::catch_unwind(AssertUnwindSafe(job));
        // The receiver is only gone if the caller panicked: nothing to do.
        let _ = tx.send(result);
    });
    sender
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    match rx.recv() {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => Err(io::Error::other("the spawner thread dropped a spawn")),
    }
}

fn sender() -> io::Result<mpsc::Sender<Job>> {
    let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = slot.as_ref() {
        return Ok(sender.clone());
    }
    let (tx, rx) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("spawn-core-spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })?;
    *slot = Some(tx.clone());
    Ok(tx)
}
