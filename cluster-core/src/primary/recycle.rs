//! Recycling (`Settings::max_requests`, `max_memory`, `max_age`): a task
//! that checks the slots' current workers every `check_every` and replaces
//! the first one past a limit through the rolling path
//! (`Shared::recycle`: successor ready before the old worker drains, one
//! slot at a time, serialised with reloads). The supervisor reports each
//! one as `Event::Recycling` before its replacement forks.

use std::sync::Weak;
use std::time::Duration;

use crate::Payload;
use crate::event::{RecycleReason, SlotId, WorkerId};
use crate::primary::driver::Notice;
use crate::primary::{Shared, WorkerHandle};
use crate::settings::Recycle;

/// The check interval when none is set.
const DEFAULT_EVERY: Duration = Duration::from_secs(1);

/// A number in `0..=jitter` for worker `id`, different per worker and per
/// run (a splitmix64 of the id, the pid and the clock).
pub(crate) fn jitter(id: WorkerId, jitter: u64) -> u64 {
    if jitter == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into());
    let mut z =
        id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(u64::from(std::process::id()) << 32)
            .wrapping_add(nanos);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % jitter.saturating_add(1)
}

/// Run until the cluster is gone or stopping.
pub(crate) async fn run<M: Payload>(shared: Weak<Shared<M>>) {
    loop {
        let every = match shared.upgrade() {
            Some(s) => {
                let st = s.lock();
                // Settings freeze at the first fork: with no limit set by
                // then there is nothing to check, ever (an idle cluster
                // arms no timer).
                let frozen = st.next_id > 1 || st.program.is_some();
                if st.stopping || (frozen && !st.settings.recycle.any()) {
                    return;
                }
                match st.settings.recycle.check_every {
                    d if d.is_zero() => DEFAULT_EVERY,
                    d => d,
                }
            }
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some((slot, old, reason)) = candidate(&shared).await else {
            continue;
        };
        let _ = shared
            .notices
            .send(Notice::Recycling(old.id(), slot, reason));
        if let Err(error) = shared.recycle(slot, old).await {
            tracing::warn!(target: crate::trace::TARGET, slot = slot.get(), error = %error, "recycling failed; the worker keeps serving");
        }
    }
}

/// The first ready current worker past a limit, with the limit (memory
/// read from `/proc` off the runtime's threads, only with `max_memory`).
async fn candidate<M: Payload>(
    shared: &Shared<M>,
) -> Option<(SlotId, WorkerHandle<M>, RecycleReason)> {
    let (limits, workers): (Recycle, Vec<WorkerHandle<M>>) = {
        let st = shared.lock();
        if st.stopping || !st.settings.recycle.any() {
            return None;
        }
        let workers = st
            .slots
            .values()
            .filter(|s| !s.gave_up)
            .filter_map(|s| st.workers.get(&s.current?).cloned())
            .filter(|w| w.state().is_ready())
            .collect();
        (st.settings.recycle, workers)
    };
    let rss: Vec<Option<u64>> = if limits.max_memory.is_some() {
        crate::stats::read_procs(workers.iter().map(WorkerHandle::pid).collect())
            .await
            .into_iter()
            .map(|p| p.rss_bytes)
            .collect()
    } else {
        vec![None; workers.len()]
    };
    for (w, rss) in workers.into_iter().zip(rss) {
        if let Some(limit) = w.inner.request_limit {
            let handed = w.connections().handed;
            if handed >= limit {
                return Some((w.slot(), w, RecycleReason::Requests { handed, limit }));
            }
        }
        if let Some(limit) = limits.max_age {
            let age = w.uptime();
            if age >= limit {
                return Some((w.slot(), w, RecycleReason::Age { age, limit }));
            }
        }
        if let Some(limit) = limits.max_memory
            && let Some(rss) = rss
            && rss > limit
        {
            return Some((w.slot(), w, RecycleReason::Memory { rss, limit }));
        }
    }
    None
}
