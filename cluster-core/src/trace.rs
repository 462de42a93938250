//! The cluster's `tracing` events: one per lifecycle [`Event`], with
//! structured fields, emitted by the supervisor as it emits the event (so
//! in the same order), under the target `cluster_core`. Free when no
//! subscriber is installed (the facade's static level check).
//!
//! Field names are stable (see `docs/operations.md`): `worker`, `slot`,
//! `pid`, `code`, `signal`, `after_disconnect`, `delay_ms`, `reason`,
//! `addr`, `error`.

use crate::event::{Close, Event};

/// The target of every cluster-core tracing event.
pub(crate) const TARGET: &str = "cluster_core";

/// Trace `ev`.
pub(crate) fn event<M>(ev: &Event<M>) {
    match ev {
        Event::Fork { worker, slot, pid } => {
            tracing::info!(target: TARGET, worker = worker.0, slot = slot.get(), pid, "worker forked");
        }
        Event::Online { worker, pid } => {
            tracing::info!(target: TARGET, worker = worker.0, pid, "worker online");
        }
        Event::Listening { worker, pid, addr } => {
            tracing::info!(target: TARGET, worker = worker.0, pid, addr = %addr, "worker listening");
        }
        Event::ListeningOn {
            worker,
            pid,
            endpoint,
        } => {
            tracing::info!(target: TARGET, worker = worker.0, pid, addr = %endpoint, "worker listening");
        }
        Event::Message(_) => {}
        Event::Disconnect { worker, pid } => {
            tracing::info!(target: TARGET, worker = worker.0, pid, "worker disconnected");
        }
        Event::Exit {
            worker,
            pid,
            slot,
            exit,
            exited_after_disconnect,
        } => {
            let (code, signal) = match exit {
                Close::Exited(c) => (Some(*c), None),
                Close::Signaled(s) => (None, Some(*s)),
            };
            if exit.success() || *exited_after_disconnect {
                tracing::info!(target: TARGET, worker = worker.0, slot = slot.get(), pid, code, signal,
                    after_disconnect = exited_after_disconnect, "worker exited");
            } else {
                tracing::warn!(target: TARGET, worker = worker.0, slot = slot.get(), pid, code, signal,
                    after_disconnect = exited_after_disconnect, "worker exited");
            }
        }
        Event::Unresponsive { worker, pid } => {
            tracing::warn!(target: TARGET, worker = worker.0, pid, "worker unresponsive: killed");
        }
        Event::ChannelError { worker, pid, error } => {
            tracing::warn!(target: TARGET, worker = worker.0, pid, error = %error, "worker channel error");
        }
        Event::MessageError { worker, pid, error } => {
            tracing::warn!(target: TARGET, worker = worker.0, pid, error = %error, "message did not decode");
        }
        Event::ForkError { slot, error } => {
            tracing::error!(target: TARGET, slot = slot.get(), error = %error, "fork failed");
        }
        Event::RestartScheduled { slot, delay } => {
            tracing::info!(target: TARGET, slot = slot.get(), delay_ms = delay.as_millis() as u64, "restart scheduled");
        }
        Event::ReloadStarted => tracing::info!(target: TARGET, "rolling reload started"),
        Event::ReloadFinished { error: None } => {
            tracing::info!(target: TARGET, "rolling reload finished");
        }
        Event::ReloadFinished { error: Some(error) } => {
            tracing::warn!(target: TARGET, error = %error, "rolling reload failed");
        }
        Event::GaveUp { slot, last_exit } => {
            tracing::error!(target: TARGET, slot = slot.get(), reason = %last_exit, "slot gave up (crash loop)");
        }
        Event::AllSlotsGaveUp => tracing::error!(target: TARGET, "every slot gave up"),
        Event::Upgraded { pid } => {
            tracing::info!(target: TARGET, pid, "upgraded: the new primary serves");
        }
        Event::UpgradeFailed { reason } => {
            tracing::warn!(target: TARGET, reason = %reason, "upgrade failed");
        }
        Event::Recycling {
            worker,
            pid,
            slot,
            reason,
        } => {
            tracing::info!(target: TARGET, worker = worker.0, slot = slot.get(), pid,
                reason = reason.name(), detail = %reason, "worker recycling");
        }
        Event::SlotRemoved { slot, worker } => {
            tracing::info!(target: TARGET, slot = slot.get(), worker = worker.map(|w| w.0), "slot removed");
        }
        Event::UnusedSocket { addr, name } => {
            tracing::error!(target: TARGET, addr = %addr, name = name.as_deref(), "inherited socket not listened on by any worker: not ready");
        }
    }
}
