//! The supervisor: the one task that orders events, keeps the slots filled
//! (restart policy, backoff, crash-loop limit), enforces the heartbeat
//! timeout (and the start-up allowance before it), tells the program when
//! every slot gave up, and runs the graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spawn_core::Signal;
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use cluster_ipc::Credit;

use crate::Payload;
use crate::error::Error;
use crate::event::{Close, Event, SlotId, WorkerId};
use crate::primary::driver::Notice;
use crate::primary::{Command, EventSender, Placement, Shared, unused};
use crate::restart::Decision;
use crate::settings::Heartbeat;
use crate::state::WorkerState;

/// How a worker that could not be started counts for its slot's guard (the
/// shell's "command not found").
const SPAWN_FAILED: Close = Close::Exited(127);

/// How long an upgraded primary waits for the connections it accepted to be
/// taken by its workers before it drains them, beyond the hand-off deadline
/// and its margin (`Balancer::handed_over`).
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// The least delay before retrying a slot whose worker could not be started.
const SPAWN_RETRY_FLOOR: Duration = Duration::from_millis(100);

/// The signals the user asked the primary to handle: SIGTERM and SIGINT
/// (`Settings::handle_signals`), SIGHUP (`Settings::reload_on_hangup`).
pub(crate) struct Signals {
    shutdown: Option<(UnixSignal, UnixSignal)>,
    hangup: Option<UnixSignal>,
}

/// What a caught signal asks for.
enum SignalAction {
    Shutdown,
    Reload,
}

impl Signals {
    /// Install the handlers asked for; `None` if none is.
    pub(crate) fn install(shutdown: bool, reload: bool) -> std::io::Result<Option<Self>> {
        if !shutdown && !reload {
            return Ok(None);
        }
        // tokio's `signal` needs a runtime (and panics without one).
        tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let shutdown = if shutdown {
            Some((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        } else {
            None
        };
        let hangup = if reload {
            Some(signal(SignalKind::hangup())?)
        } else {
            None
        };
        Ok(Some(Self { shutdown, hangup }))
    }

    /// Add the handlers of `more` (installed later, by `Cluster::setup`).
    fn merge(signals: &mut Option<Self>, more: Self) {
        match signals {
            Some(s) => {
                if more.shutdown.is_some() {
                    s.shutdown = more.shutdown;
                }
                if more.hangup.is_some() {
                    s.hangup = more.hangup;
                }
            }
            None => *signals = Some(more),
        }
    }

    async fn recv(signals: &mut Option<Self>) -> SignalAction {
        let Some(s) = signals else {
            return std::future::pending().await;
        };
        let shutdown = async {
            match &mut s.shutdown {
                Some((term, int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                None => std::future::pending().await,
            }
        };
        let hangup = async {
            match &mut s.hangup {
                Some(hup) => {
                    hup.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => SignalAction::Shutdown,
            () = hangup => SignalAction::Reload,
        }
    }
}

/// The rolling reload asked for by SIGHUP (reloads run one at a time: a
/// second SIGHUP waits for the first reload to end); the reload reports
/// itself as events, through the supervisor.
async fn reload_on_hangup<M: Payload>(shared: Arc<Shared<M>>) {
    let _ = shared.reload().await;
}

struct Supervisor<M> {
    shared: Arc<Shared<M>>,
    events: EventSender<M>,
    /// The heartbeat in force, read again at every fork (the settings may
    /// change until the first one).
    heartbeat: Option<Heartbeat>,
    /// Per live worker: when it was last heard of, and how long it may stay
    /// silent from then (the ready timeout until it is online, then the
    /// heartbeat timeout).
    last_seen: HashMap<WorkerId, (Instant, Duration)>,
    deadline: Option<tokio::time::Instant>,
    waiters: Vec<oneshot::Sender<()>>,
    /// A check of the unused inherited sockets is scheduled.
    unused_check: bool,
    /// The unused inherited sockets already reported.
    unused_reported: Vec<unused::Unused>,
}

impl<M> Drop for Supervisor<M> {
    /// Also when the user's runtime drops this task: the accept loops run
    /// on the network thread, which outlives it, and must not keep the
    /// listeners open.
    fn drop(&mut self) {
        self.shared.balancer.close();
    }
}

pub(crate) async fn run<M: Payload>(
    shared: Arc<Shared<M>>,
    mut notices: mpsc::UnboundedReceiver<Notice<M>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: EventSender<M>,
    mut signals: Option<Signals>,
) {
    let heartbeat = shared.lock().settings.heartbeat;
    let mut tick = heartbeat_tick(heartbeat);
    let mut sup = Supervisor {
        shared,
        events,
        heartbeat,
        last_seen: HashMap::new(),
        deadline: None,
        waiters: Vec::new(),
        unused_check: false,
        unused_reported: Vec::new(),
    };
    let mut commands_open = true;
    loop {
        tokio::select! {
            Some(notice) = notices.recv() => {
                let forked = matches!(notice, Notice::Forked(_));
                sup.on_notice(notice).await;
                if forked {
                    let heartbeat = sup.shared.lock().settings.heartbeat;
                    if heartbeat != sup.heartbeat {
                        sup.heartbeat = heartbeat;
                        tick = heartbeat_tick(heartbeat);
                    }
                }
            }
            cmd = commands.recv(), if commands_open => match cmd {
                Some(Command::Shutdown(reply)) => {
                    sup.waiters.push(reply);
                    sup.begin_shutdown();
                }
                Some(Command::Signals(more)) => Signals::merge(&mut signals, more),
                None => {
                    // The Cluster was dropped: no worker outlives it.
                    commands_open = false;
                    sup.shared.lock().stopping = true;
                    sup.kill_all();
                }
            },
            action = Signals::recv(&mut signals) => match action {
                SignalAction::Shutdown => sup.begin_shutdown(),
                SignalAction::Reload => {
                    if !sup.shared.lock().stopping {
                        tokio::spawn(reload_on_hangup(Arc::clone(&sup.shared)));
                    }
                }
            },
            _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                sup.check_heartbeats();
            }
            () = async { tokio::time::sleep_until(sup.deadline.expect("guarded")).await }, if sup.deadline.is_some() => {
                sup.deadline = None;
                sup.kill_all();
            }
        }
        let (stopping, live) = {
            let st = sup.shared.lock();
            (st.stopping, st.workers.len())
        };
        if (stopping || !commands_open) && live == 0 {
            break;
        }
    }
    sup.shared.balancer.close();
    for w in sup.waiters.drain(..) {
        let _ = w.send(());
    }
}

/// The tick that checks the heartbeats: four times per timeout.
fn heartbeat_tick(heartbeat: Option<Heartbeat>) -> Option<tokio::time::Interval> {
    heartbeat.map(|h| {
        let mut t = tokio::time::interval((h.timeout / 4).max(Duration::from_millis(5)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    })
}

impl<M: Payload> Supervisor<M> {
    /// The one place every event leaves: traced (`trace.rs`), then sent.
    fn emit(&self, ev: Event<M>) {
        crate::trace::event(&ev);
        let _ = self.events.send((ev, Credit::none()));
    }

    /// [`Supervisor::emit`] an event that holds room in a worker's window
    /// (a message that did not decode) until the program takes it.
    fn emit_holding(&self, ev: Event<M>, credit: Credit) {
        crate::trace::event(&ev);
        let _ = self.events.send((ev, credit));
    }

    /// The pid of a live worker (every worker event comes between its
    /// `Fork` and its `Exit`, while it is in the table; 0 otherwise).
    fn pid(&self, id: WorkerId) -> u32 {
        self.shared.lock().workers.get(&id).map_or(0, |w| w.pid())
    }

    /// Handle one notice. It awaits only the pid file's write (bounded,
    /// on the blocking pool) before readiness and the hand-over are told.
    async fn on_notice(&mut self, notice: Notice<M>) {
        let now = Instant::now();
        match notice {
            Notice::Forked(handle) => {
                let ready_timeout = self.shared.lock().settings.ready_timeout;
                self.last_seen.insert(handle.id(), (now, ready_timeout));
                self.emit(Event::Fork {
                    worker: handle.id(),
                    slot: handle.slot(),
                    pid: handle.pid(),
                });
                self.service(&format!("worker {} started", handle.id()))
                    .await;
            }
            Notice::Online(id) => {
                if let Some(h) = self.heartbeat {
                    self.last_seen.insert(id, (now, h.timeout));
                }
                self.with_guard(id, |g| g.online(now));
                self.advance(id, WorkerState::Online);
                let pid = self.pid(id);
                self.emit(Event::Online { worker: id, pid });
            }
            Notice::Listening(id, addr) => {
                self.with_guard(id, |g| g.ready());
                self.advance(id, WorkerState::Listening);
                // The service manager, pid file and upgrade hear of
                // readiness before the event stream does.
                self.service(&format!("worker {id} listening on {addr}"))
                    .await;
                let pid = self.pid(id);
                self.emit(Event::Listening {
                    worker: id,
                    pid,
                    addr,
                });
            }
            Notice::ListeningOn(id, endpoint) => {
                self.with_guard(id, |g| g.ready());
                self.advance(id, WorkerState::Listening);
                self.service(&format!("worker {id} listening on {endpoint}"))
                    .await;
                let pid = self.pid(id);
                self.emit(Event::ListeningOn {
                    worker: id,
                    pid,
                    endpoint,
                });
            }
            Notice::Heartbeat(id) => {
                if let Some((t, _)) = self.last_seen.get_mut(&id) {
                    *t = now;
                }
            }
            Notice::WorkerDisconnect(id) => {
                if let Some(w) = self.shared.lock().workers.get(&id) {
                    w.mark_disconnected();
                }
                self.advance(id, WorkerState::Disconnected);
            }
            Notice::Message(m) => {
                if let Some(w) = self.shared.lock().workers.get(&m.worker()) {
                    w.inner
                        .messages
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // The message holds its own credit until its value is taken.
                let _ = self.events.send((Event::Message(m), Credit::none()));
            }
            Notice::Recycling(worker, slot, reason) => self.emit(Event::Recycling {
                worker,
                pid: self.pid(worker),
                slot,
                reason,
            }),
            Notice::SlotRemoved(slot, worker) => self.emit(Event::SlotRemoved { slot, worker }),
            Notice::MessageError(id, error, credit) => {
                let pid = self.pid(id);
                let ev = Event::MessageError {
                    worker: id,
                    pid,
                    error,
                };
                self.emit_holding(ev, credit);
            }
            Notice::ReloadStarted => self.emit(Event::ReloadStarted),
            Notice::ReloadFinished(error) => self.emit(Event::ReloadFinished { error }),
            Notice::ChannelError(id, error) => {
                self.kill(id, Signal::SIGKILL);
                self.emit(Event::ChannelError {
                    worker: id,
                    pid: self.pid(id),
                    error,
                });
            }
            Notice::ChannelClosed(id) => {
                self.advance(id, WorkerState::Disconnected);
                self.emit(Event::Disconnect {
                    worker: id,
                    pid: self.pid(id),
                });
            }
            Notice::Exited(id, exit) => {
                self.shared.balancer.worker_gone(id);
                self.on_exit(id, exit, now);
                self.service(&format!("worker {id} exited ({exit})")).await;
            }
            Notice::RestartDue(slot) => self.restart(slot),
            Notice::ForkFailed(slot, error) => self.fork_failed(slot, error),
            Notice::Watchdog => self.shared.service.watchdog(),
            Notice::Upgrade(Ok(pid)) => {
                self.shared.service.handed_over(pid).await;
                self.emit(Event::Upgraded { pid });
                // The new primary accepts from now on; what this one already
                // accepted still goes to its own workers, which drain only
                // once it is handed over (bounded), so none is dropped.
                let stopped = self.shared.balancer.stop_accepting();
                let balancer = std::sync::Arc::clone(&self.shared.balancer);
                let notices = self.shared.notices.clone();
                tokio::spawn(async move {
                    balancer.handed_over(stopped, HANDOVER_WAIT).await;
                    let _ = notices.send(Notice::HandedOver);
                });
            }
            Notice::HandedOver => self.begin_shutdown(),
            Notice::CheckUnused => self.check_unused().await,
            Notice::Upgrade(Err(reason)) => {
                self.shared.service.upgrade_failed(&reason);
                self.emit(Event::UpgradeFailed { reason });
            }
        }
    }

    /// Apply `f` to the guard of `id`'s slot, if `id` is its current worker.
    fn with_guard(&self, id: WorkerId, f: impl FnOnce(&mut crate::restart::RestartGuard)) {
        let mut st = self.shared.lock();
        let Some(slot) = st.workers.get(&id).map(|w| w.slot()) else {
            return;
        };
        if let Some(s) = st.slots.get_mut(&slot)
            && s.current == Some(id)
        {
            f(&mut s.guard);
        }
    }

    /// Tell the service manager (`notify.rs`): workers ready of total, the
    /// last event, and readiness once every slot's worker listens and no
    /// inherited socket is left unused (`unused.rs`; if one is, it is
    /// checked again after a grace, then reported). Awaits only the pid
    /// file's write (bounded, on the blocking pool).
    async fn service(&mut self, last: &str) {
        let (ready, total) = {
            let st = self.shared.lock();
            let ready = st
                .slots
                .values()
                .filter_map(|s| st.workers.get(&s.current?))
                .filter(|w| w.state() == WorkerState::Listening)
                .count();
            (ready, st.slots.len())
        };
        let unused = if total > 0 && ready == total && !self.shared.service.is_ready() {
            unused::unused(&self.shared.balancer)
        } else {
            Vec::new()
        };
        if !unused.is_empty() && !self.unused_check {
            self.unused_check = true;
            let notices = self.shared.notices.clone();
            tokio::spawn(async move {
                tokio::time::sleep(unused::GRACE).await;
                let _ = notices.send(Notice::CheckUnused);
            });
        }
        self.shared
            .service
            .progress(ready, total, last, unused.first().map(|u| u.addr.as_str()))
            .await;
    }

    /// The grace after readiness has passed: report each inherited socket
    /// still unused (once), or send the readiness it held back.
    async fn check_unused(&mut self) {
        self.unused_check = false;
        if self.shared.lock().stopping {
            return;
        }
        let unused = unused::unused(&self.shared.balancer);
        if unused.is_empty() {
            self.service("every inherited socket is listened on").await;
            return;
        }
        for u in unused {
            if !self.unused_reported.contains(&u) {
                self.unused_reported.push(u.clone());
                self.emit(Event::UnusedSocket {
                    addr: u.addr,
                    name: u.name,
                });
            }
        }
    }

    fn advance(&self, id: WorkerId, next: WorkerState) {
        if let Some(w) = self.shared.lock().workers.get(&id) {
            w.advance(next);
        }
    }

    fn kill(&self, id: WorkerId, signal: Signal) {
        if let Some(w) = self.shared.lock().workers.get(&id) {
            let _ = w.kill(signal);
        }
    }

    fn on_exit(&mut self, id: WorkerId, exit: Close, now: Instant) {
        self.last_seen.remove(&id);
        let (handle, decision) = {
            let mut st = self.shared.lock();
            let Some(handle) = st.workers.remove(&id) else {
                return;
            };
            handle.advance(WorkerState::Dead);
            let stopping = st.stopping;
            let after_disconnect = handle.exited_after_disconnect();
            let decision = st.slots.get_mut(&handle.slot()).and_then(|slot| {
                if slot.current != Some(id) {
                    // A replacement that never took over, or a worker already
                    // replaced by a reload: its slot does not depend on it.
                    return None;
                }
                slot.current = None;
                if stopping {
                    return None;
                }
                Some(slot.guard.exited(now, exit, after_disconnect))
            });
            (handle, decision)
        };
        self.emit(Event::Exit {
            worker: id,
            pid: handle.pid(),
            slot: handle.slot(),
            exit,
            exited_after_disconnect: handle.exited_after_disconnect(),
        });
        if let Some(decision) = decision {
            self.apply(handle.slot(), decision, exit);
        }
    }

    fn apply(&mut self, slot: SlotId, decision: Decision, exit: Close) {
        match decision {
            Decision::Restart { delay } => {
                // A program that cannot even be started is retried after a
                // floor delay, never in a tight loop, whatever the backoff.
                let delay = if exit == SPAWN_FAILED {
                    delay.max(SPAWN_RETRY_FLOOR)
                } else {
                    delay
                };
                self.emit(Event::RestartScheduled { slot, delay });
                if delay.is_zero() {
                    self.restart(slot);
                } else {
                    let notices = self.shared.notices.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = notices.send(Notice::RestartDue(slot));
                    });
                }
            }
            Decision::GiveUp => {
                self.emit(Event::GaveUp {
                    slot,
                    last_exit: exit,
                });
                self.gave_up(slot);
            }
            Decision::Stop(_) => {}
        }
    }

    /// Start `slot`'s worker again, in a task: the spawn is done off the
    /// runtime's threads (`Shared::start_worker_async`) and this loop goes
    /// on meanwhile; the worker reports its `Fork` (or the task a
    /// [`Notice::ForkFailed`]).
    fn restart(&mut self, slot: SlotId) {
        {
            let st = self.shared.lock();
            let vacant = st.slots.get(&slot).is_some_and(|s| s.current.is_none());
            if st.stopping || !vacant {
                return;
            }
        }
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            match shared.start_worker_async(slot, Placement::Current).await {
                Ok(started) => drop(started.keep()),
                // The shutdown began meanwhile: nothing to restart.
                Err(Error::Stopped) => {}
                Err(error) => {
                    let _ = shared.notices.send(Notice::ForkFailed(slot, error));
                }
            }
        });
    }

    /// `slot`'s worker could not be started: reported, and counted as a
    /// failed run of the slot, so the backoff and the crash-loop limit apply.
    fn fork_failed(&mut self, slot: SlotId, error: Error) {
        self.emit(Event::ForkError { slot, error });
        let now = Instant::now();
        let exit = SPAWN_FAILED;
        let decision = {
            let mut st = self.shared.lock();
            st.slots.get_mut(&slot).map(|s| {
                s.guard.started(now);
                s.guard.exited(now, exit, false)
            })
        };
        if let Some(d) = decision {
            self.apply(slot, d, exit);
        }
    }

    /// `slot` gave up; when every slot has, the cluster cannot run: its
    /// listeners close (clients are refused), nothing restarts, and
    /// `AllSlotsGaveUp` is the last event (the loop ends with the last
    /// worker).
    fn gave_up(&mut self, slot: SlotId) {
        {
            let mut st = self.shared.lock();
            if let Some(s) = st.slots.get_mut(&slot) {
                s.gave_up = true;
            }
            if st.gave_up || !st.slots.values().all(|s| s.gave_up) {
                return;
            }
            st.gave_up = true;
            st.stopping = true;
            self.shared.balancer.close();
        }
        self.emit(Event::AllSlotsGaveUp);
    }

    fn check_heartbeats(&mut self) {
        if self.heartbeat.is_none() {
            return;
        }
        let now = Instant::now();
        let silent: Vec<WorkerId> = self
            .last_seen
            .iter()
            .filter(|(_, (t, allowed))| now.saturating_duration_since(*t) > *allowed)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            // Killed once; its exit removes it for good. What it had not
            // acknowledged goes to other workers now, not when its exit is
            // reaped (a stopped process is reaped only once it is
            // continued or killed, which may take a while).
            self.last_seen.remove(&id);
            self.kill(id, Signal::SIGKILL);
            self.shared.balancer.worker_gone(id);
            let pid = self.pid(id);
            self.emit(Event::Unresponsive { worker: id, pid });
        }
    }

    fn begin_shutdown(&mut self) {
        let (workers, deadline) = {
            let mut st = self.shared.lock();
            if st.stopping {
                return;
            }
            st.stopping = true;
            // New connections are refused from now on.
            self.shared.balancer.close();
            let w: Vec<_> = st.workers.values().cloned().collect();
            (w, st.settings.shutdown_deadline)
        };
        self.shared.service.stopping();
        self.deadline = Some(saturating_deadline(deadline));
        for w in workers {
            w.mark_disconnected();
            tokio::spawn(async move {
                let _ = w.disconnect().await;
            });
        }
    }

    fn kill_all(&self) {
        let workers: Vec<_> = self.shared.lock().workers.values().cloned().collect();
        for w in workers {
            let _ = w.kill_group(Signal::SIGKILL);
        }
    }
}

/// Ask the supervisor every `every` to send `WATCHDOG=1`: a supervisor that
/// no longer runs its loop sends none, and the service manager steps in.
pub(crate) fn watchdog<M: Payload>(notices: mpsc::UnboundedSender<Notice<M>>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if notices.send(Notice::Watchdog).is_err() {
                return;
            }
        }
    });
}

/// `now + after`, or a deadline so far away that it never comes (30 years)
/// when that overflows: `Settings::shutdown_deadline(Duration::MAX)` means
/// "wait for ever", not a panic.
fn saturating_deadline(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}
