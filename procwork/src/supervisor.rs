//! The primary's one supervising task: it owns the slots and the workers,
//! and every decision about them is taken here, in the order events come.
//!
//! - **Slots** are the places kept filled (`-w N`); a slot's *current*
//!   worker drives its [`RestartGuard`] (cluster-core's rule: restart with
//!   backoff, give the slot up after too many failed starts), and a slot
//!   may have a *successor* being started to replace it.
//! - **Readiness** comes from the workers' drivers ([`crate::worker`]). A
//!   worker not ready at `--ready-timeout` is stopped, and counts as a
//!   failed start.
//! - **Replacing a slot** (rolling reload, recycling, a worker that said
//!   `STOPPING=1` by itself) starts the successor, waits until it is
//!   ready, makes it current, and only then stops the old worker (stop
//!   signal, grace, SIGKILL of its group). A successor that fails leaves
//!   the old worker serving; a reload stops at the first failure.
//! - **Scaling** adds slots, or removes the newest (their workers stop and
//!   are not replaced).
//! - **Stopping** stops every worker, then returns; a second SIGTERM or
//!   SIGINT SIGKILLs every group at once.
//!
//! Nothing here blocks: `/proc` is read on tokio's blocking pool, output
//! goes through cluster-core's writer threads, spawning is spawn-core's.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cluster_core::restart::{Backoff, CrashLoopLimit, Decision, RestartGuard, RestartPolicy};
use serde_json::json;
use spawn_core::{Close, Signal};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::control::{Incoming, Reply, Request, Status, WorkerRow};
use crate::error::Error;
use crate::listen::ListenSocket;
use crate::log::Log;
use crate::notify::{NotifySocket, ServiceNotifier};
use crate::paths::Paths;
use crate::worker::{self, Order, Report, WorkerSpec};

/// Everything `procwork run` was told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The instance name.
    pub name: String,
    /// How many slots to keep filled at the start.
    pub workers: usize,
    /// How each worker is started.
    pub spec: WorkerSpec,
    /// `--stop-signal`.
    pub stop_signal: Signal,
    /// `--grace`.
    pub grace: Duration,
    /// `--reload-parallel`.
    pub reload_parallel: usize,
    /// `--max-memory`, bytes.
    pub max_memory: Option<u64>,
    /// `--max-age`.
    pub max_age: Option<Duration>,
    /// The instance's files.
    pub paths: Paths,
    /// procwork's own lines.
    pub log: Log,
    /// procwork's own program (for an upgrade: the file now at this path).
    pub exe: std::path::PathBuf,
    /// procwork's arguments after its name (an upgrade passes them on).
    pub args: Vec<std::ffi::OsString>,
    /// Where the metrics are served, once bound.
    pub metrics: Option<std::net::SocketAddr>,
}

/// How [`Supervisor::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped (SIGTERM, SIGINT, `procwork stop`): every worker is gone.
    Stopped,
    /// Every slot gave up (a crash loop): every worker is gone.
    GaveUp,
    /// A new procwork took over every socket; this one's workers are gone.
    HandedOver,
}

/// A stop signal this soon after the first is the same stop, delivered
/// twice; a later one kills every worker at once.
const REPEAT_STOP: Duration = Duration::from_secs(1);

/// How often recycling limits are checked.
const RECYCLE_EVERY: Duration = Duration::from_secs(1);

struct Slot {
    guard: RestartGuard,
    current: Option<u64>,
    successor: Option<u64>,
    restart_pending: bool,
    gave_up: bool,
    removed: bool,
    /// Workers started in this slot so far.
    starts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    Stopping,
}

struct Worker {
    slot: u64,
    pid: u32,
    started: Instant,
    state: State,
    /// Asked to stop by procwork (reload, scale, recycle, shutdown): its
    /// exit is never restarted.
    deliberate: bool,
    restarts: u64,
    status: Option<String>,
    orders: mpsc::UnboundedSender<Order>,
}

struct Reload {
    queue: VecDeque<u64>,
    /// Successor worker → its slot.
    in_flight: BTreeMap<u64, u64>,
    waiters: Vec<oneshot::Sender<Reply>>,
    started: Instant,
    replaced: usize,
}

/// Internal wake-ups.
enum Wake {
    RestartDue(u64),
    /// The new procwork of an upgrade said it is ready (or did not).
    Upgraded(bool),
    /// RSS of (worker, pid) pairs, for recycling.
    Memory(Vec<(u64, Option<u64>)>),
}

/// The supervisor; see the module docs.
pub struct Supervisor {
    cfg: RunConfig,
    sockets: Arc<Vec<ListenSocket>>,
    slots: BTreeMap<u64, Slot>,
    workers: BTreeMap<u64, Worker>,
    next_worker: u64,
    next_slot: u64,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports: mpsc::UnboundedReceiver<Report>,
    wake_tx: mpsc::UnboundedSender<Wake>,
    wake: mpsc::UnboundedReceiver<Wake>,
    reload: Option<Reload>,
    next_reload: Vec<oneshot::Sender<Reply>>,
    /// A reload was asked for (by SIGHUP) while one ran.
    next_reload_pending: bool,
    /// Replacements started by recycling or `STOPPING=1`: worker → slot.
    replacing: BTreeMap<u64, u64>,
    recycle_blocked_until: Option<Instant>,
    stopping: Option<Vec<oneshot::Sender<Reply>>>,
    stop_started: Instant,
    service: ServiceNotifier,
    announced_ready: bool,
    all_gave_up: bool,
    control: ListenSocket,
    control_closed: Arc<tokio::sync::Notify>,
    /// Set in a procwork started by an upgrade, until it is ready.
    handover: Option<std::os::unix::net::UnixStream>,
    /// The new procwork of an upgrade in progress.
    upgrade: Option<spawn_core::Child>,
    handed_over: bool,
}

impl Supervisor {
    /// A supervisor over `sockets`; nothing starts until [`run`](Self::run).
    ///
    /// `control` is the control socket (kept to hand on in an upgrade),
    /// `control_closed` is notified when this procwork stops answering on
    /// it (handed over), `handover` is set in a procwork started by an
    /// upgrade.
    pub fn new(
        cfg: RunConfig,
        sockets: Vec<ListenSocket>,
        control: ListenSocket,
        control_closed: Arc<tokio::sync::Notify>,
        handover: Option<std::os::unix::net::UnixStream>,
    ) -> Self {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (wake_tx, wake) = mpsc::unbounded_channel();
        Supervisor {
            cfg,
            sockets: Arc::new(sockets),
            slots: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_worker: 1,
            next_slot: 1,
            reports_tx,
            reports,
            wake_tx,
            wake,
            reload: None,
            next_reload: Vec::new(),
            next_reload_pending: false,
            replacing: BTreeMap::new(),
            recycle_blocked_until: None,
            stopping: None,
            stop_started: Instant::now(),
            service: ServiceNotifier::from_env(),
            announced_ready: false,
            all_gave_up: false,
            control,
            control_closed,
            handover,
            upgrade: None,
            handed_over: false,
        }
    }

    /// The listening sockets' addresses.
    fn listen_names(&self) -> Vec<String> {
        self.sockets
            .iter()
            .map(|s| {
                if s.name == crate::listen::DEFAULT_NAME {
                    s.addr.to_string()
                } else {
                    format!("{}={}", s.name, s.addr)
                }
            })
            .collect()
    }

    /// Starts the slots and supervises until stopped; says how it ended.
    ///
    /// # Errors
    /// [`Error::Signals`] if the signal handlers cannot be installed.
    pub async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Incoming>,
    ) -> Result<Outcome, Error> {
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(Error::Signals)?;
        let mut ttin =
            signal(SignalKind::from_raw(Signal::SIGTTIN.as_raw())).map_err(Error::Signals)?;
        let mut ttou =
            signal(SignalKind::from_raw(Signal::SIGTTOU.as_raw())).map_err(Error::Signals)?;
        let mut usr2 = signal(SignalKind::user_defined2()).map_err(Error::Signals)?;
        let log = self.cfg.log;
        log.info(
            "start",
            json!({"pid": std::process::id(), "workers": self.cfg.workers, "listen": self.listen_names()}),
            &format!(
                "pid {}, {} worker(s) of `{}`, listening on {}",
                std::process::id(),
                self.cfg.workers,
                self.command_line().join(" "),
                if self.sockets.is_empty() { "nothing".to_owned() } else { self.listen_names().join(", ") }
            ),
        );
        for _ in 0..self.cfg.workers {
            self.add_slot();
        }
        let mut recycle = tokio::time::interval(RECYCLE_EVERY);
        recycle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let recycling = self.cfg.max_memory.is_some() || self.cfg.max_age.is_some();
        let watchdog_every = self.service.watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        loop {
            if self.stopping.is_some() && self.workers.is_empty() {
                break;
            }
            if self.all_gave_up && self.workers.is_empty() {
                break;
            }
            tokio::select! {
                Some(report) = self.reports.recv() => self.on_report(report),
                Some(wake) = self.wake.recv() => self.on_wake(wake),
                Some((request, reply)) = control.recv() => self.on_request(request, reply),
                _ = term.recv() => self.stop_all(None),
                _ = int.recv() => self.stop_all(None),
                _ = hup.recv() => self.start_reload(None),
                _ = ttin.recv() => self.scale(self.live_slots() + 1, None),
                _ = ttou.recv() => {
                    let n = self.live_slots().saturating_sub(1).max(1);
                    self.scale(n, None);
                }
                _ = usr2.recv() => self.start_upgrade(),
                _ = recycle.tick(), if recycling => self.check_recycling(),
                _ = watchdog.tick(), if watchdog_every.is_some() => self.service.send("WATCHDOG=1"),
            }
        }
        for waiter in self.stopping.take().unwrap_or_default() {
            let _ = waiter.send(Reply::Done {
                message: "stopped".into(),
            });
        }
        log.info("exit", json!({}), "every worker has exited; exiting");
        if self.handed_over {
            for socket in self.sockets.iter() {
                socket.keep_file();
            }
            self.control.keep_file();
            return Ok(Outcome::HandedOver);
        }
        if let Some(mut child) = self.upgrade.take() {
            let _ = child.signal(Signal::SIGKILL);
        }
        Ok(if self.all_gave_up {
            Outcome::GaveUp
        } else {
            Outcome::Stopped
        })
    }

    /// SIGUSR2: starts the new procwork (see [`crate::upgrade`]).
    fn start_upgrade(&mut self) {
        let log = self.cfg.log;
        if self.upgrade.is_some() || self.stopping.is_some() || self.handover.is_some() {
            log.warn("upgrade", json!({}), "SIGUSR2 ignored: an upgrade or a stop is in progress, or this procwork is not ready yet");
            return;
        }
        match crate::upgrade::start(&self.cfg.exe, &self.cfg.args, &self.sockets, &self.control) {
            Ok((child, handover)) => {
                let pid = child.id().unwrap_or(0);
                log.info(
                    "upgrade",
                    json!({"new_pid": pid, "exe": self.cfg.exe.display().to_string()}),
                    &format!("upgrading: started {} as pid {pid}", self.cfg.exe.display()),
                );
                self.upgrade = Some(child);
                let limit = self.cfg.spec.ready_timeout + Duration::from_secs(10);
                let wake = self.wake_tx.clone();
                tokio::spawn(async move {
                    let ok = crate::upgrade::wait_ready(handover, limit).await;
                    let _ = wake.send(Wake::Upgraded(ok));
                });
            }
            Err(e) => log.warn(
                "upgrade_failed",
                json!({"error": e.to_string()}),
                &e.to_string(),
            ),
        }
    }

    fn command_line(&self) -> Vec<String> {
        self.cfg
            .spec
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn live_slots(&self) -> usize {
        self.slots.values().filter(|s| !s.removed).count()
    }

    fn add_slot(&mut self) {
        let id = self.next_slot;
        self.next_slot += 1;
        let guard = RestartGuard::new(
            RestartPolicy::Always,
            Backoff::default(),
            CrashLoopLimit::default(),
        );
        self.slots.insert(
            id,
            Slot {
                guard,
                current: None,
                successor: None,
                restart_pending: false,
                gave_up: false,
                removed: false,
                starts: 0,
            },
        );
        self.start_current(id);
    }

    /// Starts a worker for `slot`; `None` if it could not be started (logged).
    fn spawn(&mut self, slot_id: u64) -> Option<u64> {
        let id = self.next_worker;
        self.next_worker += 1;
        let restarts = self.slots.get(&slot_id).map_or(0, |s| s.starts);
        let log = self.cfg.log;
        let started = NotifySocket::bind(&self.cfg.paths.notify_dir.join(id.to_string()))
            .and_then(|notify| worker::start(&self.cfg.spec, &self.sockets, notify, id, slot_id));
        let (child, notify) = match started {
            Ok(pair) => pair,
            Err(e) => {
                log.warn(
                    "spawn_failed",
                    json!({"worker": id, "slot": slot_id, "error": error_chain(&e)}),
                    &error_chain(&e),
                );
                return None;
            }
        };
        if let Some(slot) = self.slots.get_mut(&slot_id) {
            slot.starts += 1;
        }
        let pid = child.id().unwrap_or(0);
        let (orders_tx, orders) = mpsc::unbounded_channel();
        tokio::spawn(worker::drive(
            id,
            child,
            notify,
            self.cfg.spec.clone(),
            self.reports_tx.clone(),
            orders,
        ));
        self.workers.insert(
            id,
            Worker {
                slot: slot_id,
                pid,
                started: Instant::now(),
                state: State::Starting,
                deliberate: false,
                restarts,
                status: None,
                orders: orders_tx,
            },
        );
        log.info(
            "fork",
            json!({"worker": id, "slot": slot_id, "pid": pid}),
            &format!("worker {id} (slot {slot_id}, pid {pid}) started"),
        );
        Some(id)
    }

    /// Starts the current worker of `slot` (a first start or a restart).
    fn start_current(&mut self, slot_id: u64) {
        let now = std::time::Instant::now();
        let spawned = self.spawn(slot_id);
        let Some(slot) = self.slots.get_mut(&slot_id) else {
            return;
        };
        slot.guard.started(now);
        match spawned {
            Some(id) => slot.current = Some(id),
            None => {
                // A failed spawn counts as a failed start.
                let decision = slot.guard.exited(now, Close::Exited(127), false);
                self.apply_decision(slot_id, decision);
            }
        }
    }

    fn stop_worker(&mut self, id: u64, deliberate: bool) {
        let (signal, grace) = (self.cfg.stop_signal, self.cfg.grace);
        if let Some(w) = self.workers.get_mut(&id) {
            w.deliberate |= deliberate;
            if w.state != State::Stopping {
                w.state = State::Stopping;
                let _ = w.orders.send(Order::Stop { signal, grace });
            }
        }
    }

    fn on_report(&mut self, report: Report) {
        let log = self.cfg.log;
        match report {
            Report::Ready { worker, notified } => {
                let Some(w) = self.workers.get_mut(&worker) else {
                    return;
                };
                if w.state == State::Stopping {
                    return;
                }
                w.state = State::Ready;
                let (slot_id, pid) = (w.slot, w.pid);
                log.info(
                    "ready",
                    json!({"worker": worker, "slot": slot_id, "pid": pid, "notified": notified}),
                    &format!(
                        "worker {worker} (slot {slot_id}, pid {pid}) ready{}",
                        if notified { "" } else { " (--ready-after)" }
                    ),
                );
                let Some(slot) = self.slots.get_mut(&slot_id) else {
                    return;
                };
                if slot.current == Some(worker) {
                    slot.guard.ready();
                } else if slot.successor == Some(worker) {
                    let old = slot.current.replace(worker);
                    slot.successor = None;
                    let started = std::time::Instant::now();
                    slot.guard.started(started);
                    slot.guard.ready();
                    if let Some(old) = old {
                        self.stop_worker(old, true);
                    }
                }
                self.replacing.remove(&worker);
                if let Some(reload) = &mut self.reload
                    && reload.in_flight.remove(&worker).is_some()
                {
                    reload.replaced += 1;
                    self.advance_reload();
                }
                self.report_progress();
            }
            Report::NotReady { worker } => {
                let Some(w) = self.workers.get(&worker) else {
                    return;
                };
                let (slot_id, pid) = (w.slot, w.pid);
                let reason = format!(
                    "worker {worker} (slot {slot_id}, pid {pid}) not ready after {:?}: a failed start",
                    self.cfg.spec.ready_timeout
                );
                log.warn(
                    "not_ready",
                    json!({"worker": worker, "slot": slot_id, "pid": pid}),
                    &reason,
                );
                let is_current = self
                    .slots
                    .get(&slot_id)
                    .is_some_and(|s| s.current == Some(worker));
                // A current worker's end counts against its slot's guard;
                // a successor's only fails its replacement.
                self.stop_worker(worker, !is_current);
                self.successor_failed(worker, &reason);
            }
            Report::Notice { worker, notice } => {
                let Some(w) = self.workers.get_mut(&worker) else {
                    return;
                };
                if let Some(status) = notice.status {
                    w.status = Some(status);
                }
                let (slot_id, state) = (w.slot, w.state);
                if notice.stopping && state != State::Stopping && self.stopping.is_none() {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.state = State::Stopping;
                        w.deliberate = true;
                    }
                    log.info(
                        "stopping",
                        json!({"worker": worker, "slot": slot_id}),
                        &format!("worker {worker} (slot {slot_id}) is stopping by itself (STOPPING=1); starting its replacement"),
                    );
                    self.replace_slot(slot_id);
                }
            }
            Report::Hung { worker } => {
                log.warn(
                    "watchdog",
                    json!({"worker": worker}),
                    &format!("worker {worker} missed its watchdog: killed"),
                );
            }
            Report::Exited { worker, close } => self.on_exit(worker, close),
        }
    }

    fn on_exit(&mut self, worker: u64, close: Close) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        let log = self.cfg.log;
        let slot_id = w.slot;
        log.info(
            "exit",
            json!({"worker": worker, "slot": slot_id, "pid": w.pid, "code": close.code(), "signal": close.signal().map(|s| s.as_str())}),
            &format!("worker {worker} (slot {slot_id}, pid {}) exited: {}", w.pid, describe(close)),
        );
        if self.replacing.remove(&worker).is_some() && !w.deliberate {
            self.recycle_blocked_until = Some(Instant::now() + self.cfg.spec.ready_timeout);
        }
        let _ = std::fs::remove_file(self.cfg.paths.notify_dir.join(worker.to_string()));
        let mut failed_successor = false;
        if let Some(slot) = self.slots.get_mut(&slot_id) {
            if slot.successor == Some(worker) {
                slot.successor = None;
                failed_successor = !w.deliberate;
            } else if slot.current == Some(worker) {
                slot.current = None;
                let now = std::time::Instant::now();
                if let Some(next) = slot.successor.take() {
                    // Its successor takes the slot now, ready or not.
                    let _ = slot.guard.exited(now, close, true);
                    slot.current = Some(next);
                    slot.guard.started(now);
                    if self
                        .workers
                        .get(&next)
                        .is_some_and(|n| n.state == State::Ready)
                    {
                        slot.guard.ready();
                    }
                } else if self.stopping.is_none() && !slot.removed {
                    let decision = slot.guard.exited(now, close, w.deliberate);
                    self.apply_decision(slot_id, decision);
                }
            }
        }
        let in_reload = self
            .reload
            .as_ref()
            .is_some_and(|r| r.in_flight.contains_key(&worker));
        if failed_successor || in_reload {
            self.successor_failed(
                worker,
                &format!(
                    "worker {worker} (slot {slot_id}) exited before it was ready: {}",
                    describe(close)
                ),
            );
        }
        if let Some(slot) = self.slots.get(&slot_id)
            && slot.removed
            && !self.workers.values().any(|w| w.slot == slot_id)
        {
            self.slots.remove(&slot_id);
        }
        self.report_progress();
    }

    fn apply_decision(&mut self, slot_id: u64, decision: Decision) {
        let log = self.cfg.log;
        match decision {
            Decision::Restart { delay } => {
                if let Some(slot) = self.slots.get_mut(&slot_id) {
                    slot.restart_pending = true;
                }
                log.info(
                    "restart",
                    json!({"slot": slot_id, "delay_ms": delay.as_millis()}),
                    &format!("slot {slot_id} restarts in {delay:?}"),
                );
                let wake = self.wake_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = wake.send(Wake::RestartDue(slot_id));
                });
            }
            Decision::GiveUp => {
                if let Some(slot) = self.slots.get_mut(&slot_id) {
                    slot.gave_up = true;
                }
                log.warn(
                    "gave_up",
                    json!({"slot": slot_id}),
                    &format!("slot {slot_id} gave up: too many failed starts (crash loop)"),
                );
                if self
                    .slots
                    .values()
                    .filter(|s| !s.removed)
                    .all(|s| s.gave_up)
                {
                    log.warn("all_gave_up", json!({}), "every slot gave up: stopping");
                    self.all_gave_up = true;
                    self.stop_all(None);
                }
            }
            Decision::Stop(_) => {}
        }
    }

    fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Upgraded(ok) => {
                let Some(mut child) = self.upgrade.take() else {
                    return;
                };
                let pid = child.id().unwrap_or(0);
                let log = self.cfg.log;
                if ok && self.stopping.is_none() {
                    log.info(
                        "handed_over",
                        json!({"new_pid": pid}),
                        &format!(
                            "handed over to the new procwork (pid {pid}); stopping the old workers"
                        ),
                    );
                    self.service.send(&format!(
                        "MAINPID={pid}\nSTATUS=handed over to the new procwork (pid {pid})"
                    ));
                    self.handed_over = true;
                    self.control_closed.notify_one();
                    self.stop_all(None);
                } else {
                    let _ = child.signal(Signal::SIGKILL);
                    log.warn(
                        "upgrade_failed",
                        json!({"new_pid": pid}),
                        &format!("upgrade failed: the new procwork (pid {pid}) was not ready in time or exited; killed it, serving on"),
                    );
                }
            }
            Wake::RestartDue(slot_id) => {
                let Some(slot) = self.slots.get_mut(&slot_id) else {
                    return;
                };
                slot.restart_pending = false;
                if self.stopping.is_some() || slot.removed || slot.current.is_some() {
                    return;
                }
                self.start_current(slot_id);
            }
            Wake::Memory(rss) => {
                let Some(limit) = self.cfg.max_memory else {
                    return;
                };
                if let Some((worker, bytes)) = rss
                    .into_iter()
                    .find_map(|(w, b)| b.filter(|b| *b > limit).map(|b| (w, b)))
                    && self.can_recycle()
                    && let Some(slot) = self.workers.get(&worker).map(|w| w.slot)
                {
                    self.cfg.log.info(
                        "recycle",
                        json!({"worker": worker, "slot": slot, "reason": "memory", "rss_bytes": bytes}),
                        &format!("worker {worker} (slot {slot}) holds {} MiB, over --max-memory: replacing it", bytes >> 20),
                    );
                    self.replace_slot(slot);
                }
            }
        }
    }

    fn can_recycle(&self) -> bool {
        self.stopping.is_none()
            && self.reload.is_none()
            && self.replacing.is_empty()
            && self
                .recycle_blocked_until
                .is_none_or(|t| Instant::now() >= t)
    }

    fn check_recycling(&mut self) {
        if !self.can_recycle() {
            return;
        }
        let current: Vec<(u64, u64, u32, Instant)> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.removed && s.successor.is_none())
            .filter_map(|(slot, s)| {
                let id = s.current?;
                let w = self.workers.get(&id).filter(|w| w.state == State::Ready)?;
                Some((*slot, id, w.pid, w.started))
            })
            .collect();
        if let Some(max_age) = self.cfg.max_age
            && let Some((slot, id, _, started)) = current.iter().find(|c| c.3.elapsed() >= max_age)
        {
            self.cfg.log.info(
                "recycle",
                json!({"worker": id, "slot": slot, "reason": "age"}),
                &format!(
                    "worker {id} (slot {slot}) is {:?} old, over --max-age: replacing it",
                    started.elapsed()
                ),
            );
            self.replace_slot(*slot);
            return;
        }
        if self.cfg.max_memory.is_some() {
            let wake = self.wake_tx.clone();
            let pids: Vec<(u64, u32)> = current.iter().map(|c| (c.1, c.2)).collect();
            tokio::spawn(async move {
                let rss = tokio::task::spawn_blocking(move || {
                    pids.into_iter()
                        .map(|(w, pid)| (w, cluster_core::stats::read_proc(pid).rss_bytes))
                        .collect()
                })
                .await;
                if let Ok(rss) = rss {
                    let _ = wake.send(Wake::Memory(rss));
                }
            });
        }
    }

    /// Starts a successor for `slot` (recycling, `STOPPING=1`).
    fn replace_slot(&mut self, slot_id: u64) {
        if self
            .slots
            .get(&slot_id)
            .is_none_or(|s| s.successor.is_some() || s.removed)
        {
            return;
        }
        if let Some(id) = self.spawn(slot_id) {
            if let Some(slot) = self.slots.get_mut(&slot_id) {
                slot.successor = Some(id);
            }
            self.replacing.insert(id, slot_id);
        }
    }

    /// A successor failed (not ready in time, or exited first).
    fn successor_failed(&mut self, worker: u64, reason: &str) {
        if self.replacing.remove(&worker).is_some() {
            self.recycle_blocked_until = Some(Instant::now() + self.cfg.spec.ready_timeout);
        }
        if let Some(slot) = self
            .workers
            .get(&worker)
            .and_then(|w| self.slots.get_mut(&w.slot))
            && slot.successor == Some(worker)
        {
            slot.successor = None;
        }
        let failed = self
            .reload
            .as_ref()
            .is_some_and(|r| r.in_flight.contains_key(&worker));
        if failed {
            self.finish_reload(Err(reason.to_owned()));
        }
    }

    fn on_request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        match request {
            Request::Status => self.status(reply),
            Request::Reload => self.start_reload(Some(reply)),
            Request::Scale { workers } => self.scale(workers, Some(reply)),
            Request::Stop => self.stop_all(Some(reply)),
        }
    }

    fn status(&self, reply: oneshot::Sender<Reply>) {
        let mut rows: Vec<WorkerRow> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerRow {
                slot: w.slot,
                worker: *id,
                pid: w.pid,
                state: match w.state {
                    State::Starting => "starting",
                    State::Ready => "ready",
                    State::Stopping => "stopping",
                }
                .to_owned(),
                uptime_ms: u64::try_from(w.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                restarts: w.restarts,
                rss_bytes: None,
                cpu_ms: None,
                status: w.status.clone(),
            })
            .collect();
        rows.sort_by_key(|r| (r.slot, r.worker));
        let mut status = Status {
            pid: std::process::id(),
            name: self.cfg.name.clone(),
            command: self.command_line(),
            listen: self.listen_names(),
            metrics: self.cfg.metrics.map(|a| a.to_string()),
            slots: self.live_slots(),
            reloading: self.reload.is_some(),
            rss_bytes: None,
            workers: rows,
        };
        tokio::spawn(async move {
            let filled = tokio::task::spawn_blocking(move || {
                status.rss_bytes = cluster_core::stats::read_proc(std::process::id()).rss_bytes;
                for row in &mut status.workers {
                    let proc = cluster_core::stats::read_proc(row.pid);
                    row.rss_bytes = proc.rss_bytes;
                    row.cpu_ms = proc
                        .cpu_time
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
                }
                status
            })
            .await;
            let reply_value = match filled {
                Ok(status) => Reply::Status(status),
                Err(e) => Reply::Failed {
                    error: e.to_string(),
                },
            };
            let _ = reply.send(reply_value);
        });
    }

    fn start_reload(&mut self, waiter: Option<oneshot::Sender<Reply>>) {
        if self.stopping.is_some() {
            if let Some(w) = waiter {
                let _ = w.send(Reply::Failed {
                    error: "procwork is stopping".into(),
                });
            }
            return;
        }
        if self.reload.is_some() {
            // One at a time: this one runs after, onto what is then on disk.
            self.next_reload.extend(waiter);
            self.next_reload_pending = true;
            return;
        }
        let queue: VecDeque<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.removed && !s.gave_up)
            .map(|(id, _)| *id)
            .collect();
        self.cfg.log.info(
            "reload",
            json!({"slots": queue.len(), "parallel": self.cfg.reload_parallel}),
            &format!(
                "rolling reload of {} slot(s), {} at a time",
                queue.len(),
                self.cfg.reload_parallel
            ),
        );
        self.service.reloading();
        self.reload = Some(Reload {
            queue,
            in_flight: BTreeMap::new(),
            waiters: waiter.into_iter().collect(),
            started: Instant::now(),
            replaced: 0,
        });
        self.advance_reload();
    }

    fn advance_reload(&mut self) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.queue.is_empty() && reload.in_flight.is_empty() {
                let msg = format!(
                    "reloaded {} worker(s) in {:.1}s",
                    reload.replaced,
                    reload.started.elapsed().as_secs_f64()
                );
                self.finish_reload(Ok(msg));
                return;
            }
            if reload.in_flight.len() >= self.cfg.reload_parallel.max(1) {
                return;
            }
            let Some(slot_id) = reload.queue.pop_front() else {
                return;
            };
            let Some(slot) = self.slots.get(&slot_id) else {
                continue;
            };
            if slot.removed || slot.gave_up || slot.current.is_none() {
                // Empty now: its restart starts the program as it is now.
                continue;
            }
            if let Some(existing) = slot.successor {
                // A replacement is already starting: the reload waits for it.
                self.replacing.remove(&existing);
                if let Some(r) = &mut self.reload {
                    r.in_flight.insert(existing, slot_id);
                }
                continue;
            }
            match self.spawn(slot_id) {
                Some(id) => {
                    if let Some(slot) = self.slots.get_mut(&slot_id) {
                        slot.successor = Some(id);
                    }
                    if let Some(r) = &mut self.reload {
                        r.in_flight.insert(id, slot_id);
                    }
                }
                None => {
                    self.finish_reload(Err(format!(
                        "could not start a new worker for slot {slot_id}"
                    )));
                    return;
                }
            }
        }
    }

    fn finish_reload(&mut self, outcome: Result<String, String>) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        // A failed reload stops the successors still starting: the old
        // workers keep serving.
        for (worker, slot_id) in &reload.in_flight {
            if let Some(slot) = self.slots.get_mut(slot_id)
                && slot.successor == Some(*worker)
            {
                slot.successor = None;
                self.stop_worker(*worker, true);
            }
        }
        let log = self.cfg.log;
        let reply = match &outcome {
            Ok(msg) => {
                log.info("reloaded", json!({"replaced": reload.replaced}), msg);
                self.service.send(&format!("READY=1\nSTATUS={msg}"));
                Reply::Done {
                    message: msg.clone(),
                }
            }
            Err(reason) => {
                log.warn(
                    "reload_failed",
                    json!({"replaced": reload.replaced, "error": reason}),
                    &format!("reload failed, the old workers keep serving: {reason}"),
                );
                self.service
                    .send(&format!("READY=1\nSTATUS=reload failed: {reason}"));
                Reply::Failed {
                    error: format!("reload failed, the old workers keep serving: {reason}"),
                }
            }
        };
        for w in reload.waiters {
            let _ = w.send(reply.clone());
        }
        if !self.next_reload.is_empty() || std::mem::take(&mut self.next_reload_pending) {
            let waiters = std::mem::take(&mut self.next_reload);
            self.start_reload(None);
            if let Some(r) = &mut self.reload {
                r.waiters.extend(waiters);
            }
        }
    }

    fn scale(&mut self, n: usize, reply: Option<oneshot::Sender<Reply>>) {
        let answer = |reply: Option<oneshot::Sender<Reply>>, r: Reply| {
            if let Some(tx) = reply {
                let _ = tx.send(r);
            }
        };
        if self.stopping.is_some() {
            return answer(
                reply,
                Reply::Failed {
                    error: "procwork is stopping".into(),
                },
            );
        }
        if n == 0 {
            return answer(
                reply,
                Reply::Failed {
                    error: "scale needs at least 1 worker (use stop)".into(),
                },
            );
        }
        let before = self.live_slots();
        for _ in before..n {
            self.add_slot();
        }
        if n < before {
            let remove: Vec<u64> = self
                .slots
                .iter()
                .rev()
                .filter(|(_, s)| !s.removed)
                .take(before - n)
                .map(|(id, _)| *id)
                .collect();
            for slot_id in remove {
                let mut ids = Vec::new();
                if let Some(slot) = self.slots.get_mut(&slot_id) {
                    slot.removed = true;
                    ids.extend(slot.current.take());
                    ids.extend(slot.successor.take());
                }
                if let Some(r) = &mut self.reload {
                    r.queue.retain(|s| *s != slot_id);
                    r.in_flight.retain(|_, s| *s != slot_id);
                }
                for id in &ids {
                    self.replacing.remove(id);
                    self.stop_worker(*id, true);
                }
                if !self.workers.values().any(|w| w.slot == slot_id) {
                    self.slots.remove(&slot_id);
                }
            }
            self.advance_reload();
        }
        let msg = format!("scaled from {before} to {n} worker(s)");
        self.cfg
            .log
            .info("scale", json!({"from": before, "to": n}), &msg);
        self.report_progress();
        answer(reply, Reply::Done { message: msg });
    }

    fn stop_all(&mut self, reply: Option<oneshot::Sender<Reply>>) {
        if let Some(waiters) = &mut self.stopping {
            let repeated = reply.is_none();
            waiters.extend(reply);
            // The same signal sent to procwork and to its process group
            // (`timeout`, `kill -TERM -PGID`) arrives twice at once: only a
            // second stop signal a while after the first skips the grace.
            if !repeated || self.stop_started.elapsed() < REPEAT_STOP {
                return;
            }
            // A second stop: no more grace.
            self.cfg
                .log
                .warn("kill", json!({}), "stopped again: killing every worker now");
            for w in self.workers.values() {
                let _ = w.orders.send(Order::Kill);
            }
            return;
        }
        self.cfg.log.info(
            "stopping",
            json!({"workers": self.workers.len()}),
            &format!("stopping {} worker(s)", self.workers.len()),
        );
        if !self.handed_over {
            self.service.send("STOPPING=1\nSTATUS=stopping");
        }
        self.stopping = Some(reply.into_iter().collect());
        self.stop_started = Instant::now();
        if self.reload.is_some() {
            self.finish_reload(Err("procwork is stopping".into()));
        }
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        for id in ids {
            self.stop_worker(id, true);
        }
    }

    /// Tells the service manager how many slots are ready; `READY=1` the
    /// first time all are.
    fn report_progress(&mut self) {
        let total = self.live_slots();
        let ready = self
            .slots
            .values()
            .filter(|s| !s.removed)
            .filter(|s| {
                s.current
                    .and_then(|id| self.workers.get(&id))
                    .is_some_and(|w| w.state == State::Ready)
            })
            .count();
        let status = format!("STATUS={ready}/{total} workers ready");
        if !self.announced_ready && total > 0 && ready == total && self.stopping.is_none() {
            self.announced_ready = true;
            self.cfg.log.info(
                "all_ready",
                json!({"workers": total}),
                &format!("all {total} worker(s) ready"),
            );
            self.service.send(&format!("READY=1\n{status}"));
            if let Some(mut handover) = self.handover.take() {
                // Started by an upgrade: tell the old procwork, and take
                // the pid file.
                use std::io::Write as _;
                let _ = handover.set_nonblocking(true);
                let _ = handover.write_all(b"ready\n");
                let pid_file = self.cfg.paths.pid_file.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = crate::paths::write_pid_file(&pid_file, std::process::id());
                });
            }
        } else {
            self.service.send(&status);
        }
    }
}

/// How a worker ended, in words.
fn describe(close: Close) -> String {
    match (close.code(), close.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by {}", signal.as_str()),
        (None, None) => "ended".to_owned(),
    }
}

/// An error and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
