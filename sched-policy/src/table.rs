//! The worker table: slots, their states and counters, and the eligible view
//! a policy chooses from.
//!
//! The cluster owns one [`WorkerTable`] and keeps it true (a worker came up, is
//! draining, was handed a connection, closed one); policies only read it,
//! through an [`Eligible`] view that already leaves out every worker that must
//! not be picked.

use std::fmt;

use crate::Error;

/// A worker's place in the cluster, stable across restarts.
///
/// A slot is not a process: when the worker in slot 3 dies and the cluster
/// starts a replacement, the replacement goes into slot 3 again and inherits
/// everything keyed by the slot (its sticky clients, its place in the
/// rotation). Slots are small integers chosen by the cluster, usually
/// `0..n_workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SlotId(u32);

impl SlotId {
    /// The slot with this number.
    pub const fn new(n: u32) -> Self {
        Self(n)
    }

    /// The slot's number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The slot after this one, wrapping from `u32::MAX` to 0; a rotation
    /// cursor's next position.
    pub const fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u32> for SlotId {
    fn from(n: u32) -> Self {
        Self(n)
    }
}

/// Whether a worker may be handed new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Availability {
    /// Started but not yet listening (or not yet acknowledged as online);
    /// never picked. A worker enters the table in this state.
    #[default]
    NotReady,
    /// Listening and taking connections.
    Ready,
    /// Finishing its open connections before it exits (graceful shutdown,
    /// rolling reload); never picked.
    Draining,
}

/// One worker's row: its slot, state, cap, hand-off window and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    slot: SlotId,
    state: Availability,
    open: u32,
    handed: u64,
    cap: Option<u32>,
    pending: u32,
    window: Option<u32>,
    stalled: bool,
}

impl WorkerInfo {
    fn new(slot: SlotId) -> Self {
        Self {
            slot,
            state: Availability::NotReady,
            open: 0,
            handed: 0,
            cap: None,
            pending: 0,
            window: None,
            stalled: false,
        }
    }

    /// The worker's slot.
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// The worker's state.
    pub fn state(&self) -> Availability {
        self.state
    }

    /// Connections handed to this worker and not yet closed.
    pub fn open(&self) -> u32 {
        self.open
    }

    /// Connections handed to the worker in this slot since it was added.
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// The most connections the worker may hold open at once; `None` (the
    /// default) for no cap.
    pub fn cap(&self) -> Option<u32> {
        self.cap
    }

    /// Whether the worker is below its cap (always, without one).
    pub fn below_cap(&self) -> bool {
        self.cap.is_none_or(|cap| self.open < cap)
    }

    /// Connections handed to the worker that it has not acknowledged yet
    /// (counted in [`open`](WorkerInfo::open) too).
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// The most connections the worker may have pending (handed, not yet
    /// acknowledged) at once; `None` (the default) for no window.
    pub fn window(&self) -> Option<u32> {
        self.window
    }

    /// Whether a hand-off to the worker expired unacknowledged and the
    /// worker has not acknowledged anything since: a worker that may be
    /// hung is not picked until it shows it is alive.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Whether the worker has room in its hand-off window (always, without
    /// one) and is not stalled.
    pub fn can_take_hand_off(&self) -> bool {
        !self.stalled && self.window.is_none_or(|w| self.pending < w)
    }

    /// Whether the worker may be picked: ready, below its cap, with room in
    /// its hand-off window and not stalled.
    pub fn is_eligible(&self) -> bool {
        self.state == Availability::Ready && self.below_cap() && self.can_take_hand_off()
    }
}

/// The workers of a cluster, by slot, with their counters.
///
/// Rows are kept sorted by slot, so every iteration (and so every decision)
/// is deterministic. Updates that name a missing slot return an [`Error`]
/// rather than panic.
///
/// ```
/// use sched_policy::{SlotId, Availability, WorkerTable};
///
/// let mut table = WorkerTable::new();
/// table.add(SlotId::new(0))?;
/// table.set_state(SlotId::new(0), Availability::Ready)?;
/// table.connection_handed(SlotId::new(0))?;
/// assert_eq!(table.get(SlotId::new(0)).map(|w| w.open()), Some(1));
/// # Ok::<(), sched_policy::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerTable {
    rows: Vec<WorkerInfo>,
}

impl WorkerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table with `n` workers in slots `0..n`, all [`Availability::Ready`];
    /// handy in tests and benches.
    pub fn with_ready(n: u32) -> Self {
        let rows = (0..n)
            .map(|i| WorkerInfo {
                state: Availability::Ready,
                ..WorkerInfo::new(SlotId(i))
            })
            .collect();
        Self { rows }
    }

    /// Adds a worker in `slot`, [`Availability::NotReady`], with zeroed
    /// counters and no cap.
    pub fn add(&mut self, slot: SlotId) -> Result<(), Error> {
        match self.position(slot) {
            Ok(_) => Err(Error::SlotTaken { slot }),
            Err(at) => {
                self.rows.insert(at, WorkerInfo::new(slot));
                Ok(())
            }
        }
    }

    /// Removes the worker in `slot` (it exited), returning its last row.
    pub fn remove(&mut self, slot: SlotId) -> Result<WorkerInfo, Error> {
        let at = self
            .position(slot)
            .map_err(|_| Error::UnknownSlot { slot })?;
        Ok(self.rows.remove(at))
    }

    /// Sets the state of the worker in `slot`.
    pub fn set_state(&mut self, slot: SlotId, state: Availability) -> Result<(), Error> {
        self.row_mut(slot)?.state = state;
        Ok(())
    }

    /// Sets (or with `None` lifts) the connection cap of the worker in `slot`.
    pub fn set_cap(&mut self, slot: SlotId, cap: Option<u32>) -> Result<(), Error> {
        self.row_mut(slot)?.cap = cap;
        Ok(())
    }

    /// Sets (or with `None` lifts) the hand-off window of the worker in
    /// `slot`: how many connections it may have handed over and not yet
    /// acknowledged.
    pub fn set_window(&mut self, slot: SlotId, window: Option<u32>) -> Result<(), Error> {
        self.row_mut(slot)?.window = window;
        Ok(())
    }

    /// Records that a connection was handed to the worker in `slot`: one more
    /// open, one more handed, one more pending (until
    /// [`hand_off_acknowledged`](WorkerTable::hand_off_acknowledged),
    /// [`hand_off_failed`](WorkerTable::hand_off_failed) or
    /// [`hand_off_expired`](WorkerTable::hand_off_expired)).
    pub fn connection_handed(&mut self, slot: SlotId) -> Result<(), Error> {
        let row = self.row_mut(slot)?;
        row.open = row.open.saturating_add(1);
        row.handed = row.handed.saturating_add(1);
        row.pending = row.pending.saturating_add(1);
        Ok(())
    }

    /// Records that the worker in `slot` acknowledged a connection handed
    /// to it: one less pending (it stays open), and the worker is no longer
    /// stalled.
    pub fn hand_off_acknowledged(&mut self, slot: SlotId) -> Result<(), Error> {
        let row = self.row_mut(slot)?;
        row.pending = row
            .pending
            .checked_sub(1)
            .ok_or(Error::NoPendingConnection { slot })?;
        row.stalled = false;
        Ok(())
    }

    /// Records that a hand-off to the worker in `slot` failed (refused, or
    /// the worker died before acknowledging): one less pending, one less
    /// open; the connection goes elsewhere.
    pub fn hand_off_failed(&mut self, slot: SlotId) -> Result<(), Error> {
        let row = self.row_mut(slot)?;
        row.pending = row
            .pending
            .checked_sub(1)
            .ok_or(Error::NoPendingConnection { slot })?;
        row.open = row.open.saturating_sub(1);
        Ok(())
    }

    /// Records that a hand-off to the worker in `slot` was not acknowledged
    /// within its deadline and was taken back: like
    /// [`hand_off_failed`](WorkerTable::hand_off_failed), and the worker is
    /// stalled (not eligible) until it answers something
    /// ([`worker_responded`](WorkerTable::worker_responded)).
    pub fn hand_off_expired(&mut self, slot: SlotId) -> Result<(), Error> {
        self.hand_off_failed(slot)?;
        self.row_mut(slot)?.stalled = true;
        Ok(())
    }

    /// Records that the worker in `slot` answered (an acknowledgement or a
    /// refusal, even of a connection already taken back): it is not stalled.
    pub fn worker_responded(&mut self, slot: SlotId) -> Result<(), Error> {
        self.row_mut(slot)?.stalled = false;
        Ok(())
    }

    /// Records that a connection of the worker in `slot` closed (or that a
    /// hand-off failed and the connection went elsewhere).
    pub fn connection_closed(&mut self, slot: SlotId) -> Result<(), Error> {
        let row = self.row_mut(slot)?;
        row.open = row
            .open
            .checked_sub(1)
            .ok_or(Error::NoOpenConnection { slot })?;
        Ok(())
    }

    /// The row of the worker in `slot`, if any.
    pub fn get(&self, slot: SlotId) -> Option<&WorkerInfo> {
        self.position(slot).ok().map(|at| &self.rows[at])
    }

    /// Every worker, eligible or not, in slot order.
    pub fn workers(&self) -> &[WorkerInfo] {
        &self.rows
    }

    /// How many workers the table holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table holds no worker.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The workers a policy may pick: ready, below their cap, with room in
    /// their hand-off window and not stalled.
    pub fn eligible(&self) -> Eligible<'_> {
        Eligible {
            rows: &self.rows,
            exclude: &[],
        }
    }

    /// The workers a policy may pick, leaving out `exclude` as well: used to
    /// re-route a connection whose hand-off to one of them failed.
    pub fn eligible_except<'a>(&'a self, exclude: &'a [SlotId]) -> Eligible<'a> {
        Eligible {
            rows: &self.rows,
            exclude,
        }
    }

    fn position(&self, slot: SlotId) -> Result<usize, usize> {
        find(&self.rows, slot)
    }

    fn row_mut(&mut self, slot: SlotId) -> Result<&mut WorkerInfo, Error> {
        match self.position(slot) {
            Ok(at) => Ok(&mut self.rows[at]),
            Err(_) => Err(Error::UnknownSlot { slot }),
        }
    }
}

/// Where `slot` is (`Ok`) or would be inserted (`Err`) in `rows`, sorted by
/// slot. Slots are usually dense (`0..n`), so row `slot` is tried first: one
/// look instead of a binary search on the per-connection path.
fn find(rows: &[WorkerInfo], slot: SlotId) -> Result<usize, usize> {
    let guess = slot.get() as usize;
    if rows.get(guess).is_some_and(|w| w.slot == slot) {
        return Ok(guess);
    }
    rows.binary_search_by_key(&slot, |w| w.slot)
}

/// The workers a policy may pick from: a borrowed, allocation-free view of a
/// [`WorkerTable`] that yields only ready workers below their cap, with room
/// in their hand-off window, not stalled and not excluded, in slot order.
#[derive(Debug, Clone, Copy)]
pub struct Eligible<'a> {
    rows: &'a [WorkerInfo],
    exclude: &'a [SlotId],
}

impl<'a> Eligible<'a> {
    /// Whether the row `w` (one of [`all`](Eligible::all)) may be picked:
    /// eligible and not excluded.
    pub fn admits(&self, w: &WorkerInfo) -> bool {
        w.is_eligible() && !self.exclude.contains(&w.slot)
    }

    /// The eligible workers in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &'a WorkerInfo> + 'a {
        let this = *self;
        self.rows.iter().filter(move |w| this.admits(w))
    }

    /// The eligible workers in rotation order: first the slots at or after
    /// `cursor`, then, wrapping around, those before it.
    pub fn rotation_from(&self, cursor: SlotId) -> impl Iterator<Item = &'a WorkerInfo> + 'a {
        let this = *self;
        let at = find(self.rows, cursor).unwrap_or_else(|at| at);
        let (before, after) = self.rows.split_at(at);
        after.iter().chain(before).filter(move |w| this.admits(w))
    }

    /// How many workers are eligible.
    pub fn count(&self) -> usize {
        self.iter().count()
    }

    /// How many connections could be handed over now before no worker is
    /// eligible: summed over the eligible workers, the room left in each
    /// one's hand-off window and under its cap (a worker with neither
    /// counts `u32::MAX`), saturating.
    pub fn room(&self) -> u64 {
        self.iter()
            .map(|w| {
                let window = w.window.map_or(u32::MAX, |n| n.saturating_sub(w.pending));
                let cap = w.cap.map_or(u32::MAX, |n| n.saturating_sub(w.open));
                u64::from(window.min(cap))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Whether no worker is eligible.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Whether the worker in `slot` is eligible.
    pub fn contains(&self, slot: SlotId) -> bool {
        find(self.rows, slot).is_ok_and(|at| self.admits(&self.rows[at]))
    }

    /// Every worker of the table, eligible or not (to let a policy see
    /// draining or capped workers, e.g. to log them).
    pub fn all(&self) -> &'a [WorkerInfo] {
        self.rows
    }
}

#[cfg(test)]
mod tests;
