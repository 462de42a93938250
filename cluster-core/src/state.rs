//! The life of one worker as the primary sees it: [`WorkerState`].
//!
//! `None → Online → Listening → Disconnected → Dead`, only forward: a late
//! `Online` after `Listening` changes nothing, and nothing leaves `Dead`.

#[cfg(test)]
mod tests;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkerState {
    /// Started, channel not yet confirmed.
    None,
    /// Its channel is up.
    Online,
    /// It listens (at least once).
    Listening,
    /// Its channel was disconnected (by either side); it is winding down.
    Disconnected,
    /// Its process ended.
    Dead,
}

impl WorkerState {
    /// The state after `next` was observed: the later of the two, so state
    /// only moves forward.
    #[must_use]
    pub fn advance(self, next: WorkerState) -> WorkerState {
        self.max(next)
    }

    /// Whether the process is still running.
    pub fn is_alive(self) -> bool {
        self != WorkerState::Dead
    }

    /// Whether it counts as ready for a rolling reload: online or listening.
    pub fn is_ready(self) -> bool {
        matches!(self, WorkerState::Online | WorkerState::Listening)
    }
}
