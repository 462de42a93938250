//! [`Scheduler`]: a worker table and a policy kept in step.

use crate::{Availability, Connection, Eligible, Error, Policy, SlotId, WorkerTable};

/// A [`WorkerTable`] and a [`Policy`] updated together, so a policy's hooks
/// are never forgotten: the cluster reports worker and connection events
/// here and asks [`assign`](Scheduler::assign) for each new connection.
///
/// ```
/// use std::net::SocketAddr;
/// use sched_policy::{Connection, ListenerId, RoundRobin, Scheduler, SlotId, Availability};
///
/// let mut sched = Scheduler::new(RoundRobin::new());
/// for n in 0..2 {
///     sched.add_worker(SlotId::new(n))?;
///     sched.set_state(SlotId::new(n), Availability::Ready)?;
/// }
/// let conn = Connection::new("127.0.0.1:50000".parse::<SocketAddr>()?, ListenerId(0));
/// assert_eq!(sched.assign(&conn), Some(SlotId::new(0)));
/// assert_eq!(sched.assign(&conn), Some(SlotId::new(1)));
/// // SlotId 1 died before acknowledging: count the connection back and re-route it.
/// sched.hand_off_failed(SlotId::new(1))?;
/// assert_eq!(sched.reassign(&conn, &[SlotId::new(1)]), Some(SlotId::new(0)));
/// assert_eq!(sched.table().get(SlotId::new(0)).map(|w| w.open()), Some(2));
/// // With a window of 2 hand-offs not yet acknowledged, slot 0 is full…
/// sched.set_window(SlotId::new(0), Some(2))?;
/// sched.set_window(SlotId::new(1), Some(2))?;
/// assert_eq!(sched.table().get(SlotId::new(0)).map(|w| w.pending()), Some(2));
/// assert_eq!(sched.assign(&conn), Some(SlotId::new(1)));
/// // …until it acknowledges one.
/// sched.hand_off_acknowledged(SlotId::new(0))?;
/// assert!(sched.eligible().contains(SlotId::new(0)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Scheduler<P = Box<dyn Policy>> {
    table: WorkerTable,
    policy: P,
}

impl<P: Policy> Scheduler<P> {
    /// A scheduler with no worker yet.
    pub fn new(policy: P) -> Self {
        Self {
            table: WorkerTable::new(),
            policy,
        }
    }

    /// The table, to read counters.
    pub fn table(&self) -> &WorkerTable {
        &self.table
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// Adds a worker in `slot` (not ready yet).
    pub fn add_worker(&mut self, slot: SlotId) -> Result<(), Error> {
        self.table.add(slot)?;
        self.policy.worker_added(slot);
        Ok(())
    }

    /// Removes the worker in `slot`.
    pub fn remove_worker(&mut self, slot: SlotId) -> Result<(), Error> {
        self.table.remove(slot)?;
        self.policy.worker_removed(slot);
        Ok(())
    }

    /// Sets the state of the worker in `slot`.
    pub fn set_state(&mut self, slot: SlotId, state: Availability) -> Result<(), Error> {
        self.table.set_state(slot, state)
    }

    /// Sets or lifts the cap of the worker in `slot`.
    pub fn set_cap(&mut self, slot: SlotId, cap: Option<u32>) -> Result<(), Error> {
        self.table.set_cap(slot, cap)
    }

    /// The eligible workers now.
    pub fn eligible(&self) -> Eligible<'_> {
        self.table.eligible()
    }

    /// Picks a worker for `conn` and counts the connection as handed to it;
    /// `None` if no worker is eligible.
    pub fn assign(&mut self, conn: &Connection) -> Option<SlotId> {
        self.reassign(conn, &[])
    }

    /// Like [`assign`](Scheduler::assign), leaving out the `exclude` slots
    /// (those a hand-off of this connection already failed on).
    ///
    /// Answers `None` as well if the policy answers a slot that is not
    /// eligible (a bug in a user policy): the scheduler never hands a
    /// connection to a draining, capped or excluded worker.
    pub fn reassign(&mut self, conn: &Connection, exclude: &[SlotId]) -> Option<SlotId> {
        let eligible = self.table.eligible_except(exclude);
        let slot = self.policy.pick(eligible, conn)?;
        // A policy answering a slot outside its view is a bug in that
        // policy; never hand a connection to a draining, capped or excluded
        // worker because of it: treat it as "no worker".
        if !eligible.contains(slot) {
            return None;
        }
        self.table.connection_handed(slot).ok()?;
        self.policy.connection_handed(slot, conn);
        Some(slot)
    }

    /// Sets or lifts the hand-off window of the worker in `slot`: how many
    /// connections it may have handed over and not yet acknowledged before
    /// it is not eligible.
    pub fn set_window(&mut self, slot: SlotId, window: Option<u32>) -> Result<(), Error> {
        self.table.set_window(slot, window)
    }

    /// The worker in `slot` acknowledged a connection: it is no longer
    /// pending (it stays open), and the worker is not stalled.
    pub fn hand_off_acknowledged(&mut self, slot: SlotId) -> Result<(), Error> {
        self.table.hand_off_acknowledged(slot)
    }

    /// A hand-off to `slot` failed (the worker died or refused before
    /// acknowledging): the connection is no longer counted as pending nor
    /// open there.
    pub fn hand_off_failed(&mut self, slot: SlotId) -> Result<(), Error> {
        self.table.hand_off_failed(slot)?;
        self.policy.connection_closed(slot);
        Ok(())
    }

    /// A hand-off to `slot` was not acknowledged in time and was taken
    /// back: like [`hand_off_failed`](Scheduler::hand_off_failed), and the
    /// worker is not eligible until it answers something
    /// ([`worker_responded`](Scheduler::worker_responded)).
    pub fn hand_off_expired(&mut self, slot: SlotId) -> Result<(), Error> {
        self.table.hand_off_expired(slot)?;
        self.policy.connection_closed(slot);
        Ok(())
    }

    /// The worker in `slot` answered something (an acknowledgement or a
    /// refusal): it is not stalled any more.
    pub fn worker_responded(&mut self, slot: SlotId) -> Result<(), Error> {
        self.table.worker_responded(slot)
    }

    /// A connection of the worker in `slot` closed.
    pub fn connection_closed(&mut self, slot: SlotId) -> Result<(), Error> {
        self.table.connection_closed(slot)?;
        self.policy.connection_closed(slot);
        Ok(())
    }
}
