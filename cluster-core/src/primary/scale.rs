//! Scaling on signals ([`Settings::scale_on_signals`](crate::Settings::scale_on_signals),
//! Gunicorn's TTIN/TTOU): SIGTTIN adds a worker, SIGTTOU removes the newest
//! one (never below one), through `Cluster::scale_to`. Installing the
//! handlers also replaces the signals' default action, which would stop
//! the whole primary.

use std::sync::Weak;

use spawn_core::Signal;
use tokio::signal::unix::{SignalKind, signal};

use crate::Payload;
use crate::primary::Shared;

/// Install the SIGTTIN and SIGTTOU handlers; a task scales on each.
pub(crate) fn on_signals<M: Payload>(shared: Weak<Shared<M>>) -> std::io::Result<()> {
    let mut ttin = signal(SignalKind::from_raw(i32::from(Signal::SIGTTIN)))?;
    let mut ttou = signal(SignalKind::from_raw(i32::from(Signal::SIGTTOU)))?;
    tokio::spawn(async move {
        loop {
            let more = tokio::select! {
                Some(()) = ttin.recv() => true,
                Some(()) = ttou.recv() => false,
                else => return,
            };
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let now = shared.slots();
            let n = if more {
                now + 1
            } else {
                now.saturating_sub(1).max(1)
            };
            let signal = if more { "SIGTTIN" } else { "SIGTTOU" };
            match shared.scale_to(n) {
                Ok(()) => {
                    tracing::info!(target: crate::trace::TARGET, signal, from = now, to = n, "scaling");
                }
                Err(error) => {
                    tracing::warn!(target: crate::trace::TARGET, signal, error = %error, "scaling refused");
                }
            }
        }
    });
    Ok(())
}
