//! The primary: [`Cluster`], its workers ([`WorkerHandle`]) and its guard.
//!
//! A `Cluster` owns a *supervisor* task on the caller's tokio runtime. Every
//! worker has a *driver* task that owns its process and a *reader* task that
//! dispatches its frames; both report to the supervisor, which keeps the
//! state, applies the restart policy and emits the [`Event`]s in order.
//! The readers (with their channels' writers) and the accept loops of the
//! hand-off run on one process-wide network thread (`net.rs`), so a
//! hand-off wakes no thread of the caller's runtime.
//!
//! # Caveats
//! - Create the cluster inside a tokio runtime with I/O, time and signal
//!   drivers (`#[tokio::main]` or `Runtime` with `enable_all`).
//! - Dropping the `Cluster` SIGKILLs every worker: workers never outlive the
//!   primary that started them. Call [`Cluster::shutdown`] for a graceful end.
//! - Consume the events: messages from workers hold room in the worker's
//!   channel window until their [`Event::Message`] is dropped (or its value
//!   taken), and a worker's `send` waits when the window is full
//!   ([`Settings::message_window`]). Only messages wait: lifecycle events,
//!   connection acknowledgements, heartbeats and disconnects are read and
//!   handled whatever the program does with its events.
//! - The heartbeat is on by default. Its clock starts when the worker is
//!   online; until then a worker has [`Settings::ready_timeout`] to come
//!   online, or it is reported unresponsive and killed too.
//! - With [`Settings::handle_signals`], SIGTERM and SIGINT stay caught by
//!   tokio after the shutdown they triggered (tokio never restores a
//!   disposition).
//! - The cluster never blocks a thread of the runtime: the forks it makes
//!   by itself (restarts, reload and recycling replacements, an upgrade),
//!   the `/proc` reads of [`Cluster::stats`] and recycling, the pid file
//!   and the service manager's datagrams are done off its threads. The
//!   sync [`Cluster::start`], [`fork`](Cluster::fork),
//!   [`fork_with_env`](Cluster::fork_with_env) and
//!   [`scale_to`](Cluster::scale_to) return the new workers, so they wait
//!   for the spawn (a few ms per batch) on the calling thread, as
//!   `tokio::process::Command::spawn` does.

mod activation;
mod balancer;
mod control;
mod driver;
mod handle;
#[cfg(feature = "prometheus")]
mod metrics;
mod net;
mod notify;
mod recycle;
mod run;
mod scale;
mod supervisor;
mod unused;
mod upgrade;

pub(crate) use activation::CHILD_ENV_REMOVE;
pub(crate) use run::FLUSH_BOUND;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use spawn_core::Signal;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Payload;
use crate::error::{Error, Result};
use crate::event::{Event, SlotId, WorkerId};
use crate::launch::{Launched, command};
use crate::output::LineFormat;
use crate::restart::RestartGuard;
use crate::role::WorkerEnv;
use crate::settings::{Settings, WorkerStdio};
use crate::state::WorkerState;

pub use balancer::{ConnectionStats, InheritedSocket};
pub use control::ClusterHandle;
pub use handle::WorkerHandle;

/// Duplicates (close-on-exec) of the listening sockets this process was
/// given by socket activation (`LISTEN_PID` naming it, `LISTEN_FDS`), with
/// their `LISTEN_FDNAMES` names, that no cluster listener took: adopted
/// once per process, like [`Cluster::new`] does.
pub fn inherited_sockets() -> Vec<(Option<String>, std::os::fd::OwnedFd)> {
    activation::untaken()
}

use balancer::{Balancer, Counters, HandoffLimits};

use driver::Notice;
use handle::HandleInner;

/// A command from the `Cluster` handle to its supervisor.
pub(crate) enum Command {
    Shutdown(oneshot::Sender<()>),
    /// Signal handlers installed by `Cluster::setup`, for the supervisor.
    Signals(supervisor::Signals),
}

/// Whether a new worker takes over its slot now or only once it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// It fills its vacant slot (a restart).
    Current,
    /// The first worker of a slot opened for it (`Cluster::start`, `fork`,
    /// `scale_to`): it fills the slot, which is closed again if it cannot
    /// be started.
    First,
    /// It takes over only once it is ready (the rolling path).
    Replacement,
}

pub(crate) struct SlotEntry {
    pub(crate) guard: RestartGuard,
    pub(crate) current: Option<WorkerId>,
    pub(crate) extra_env: Vec<(OsString, OsString)>,
    /// The crash-loop limit gave up on it: it stays empty.
    pub(crate) gave_up: bool,
    /// Workers started in it so far.
    pub(crate) starts: u64,
}

pub(crate) struct State<M> {
    pub(crate) settings: Settings,
    pub(crate) program: Option<PathBuf>,
    pub(crate) next_id: u64,
    /// The id of the next slot opened (slots removed by `scale_to` are
    /// never reused).
    pub(crate) next_slot: u32,
    pub(crate) workers: BTreeMap<WorkerId, WorkerHandle<M>>,
    pub(crate) slots: BTreeMap<SlotId, SlotEntry>,
    pub(crate) stopping: bool,
    /// Every slot gave up: the cluster cannot run.
    pub(crate) gave_up: bool,
}

/// The supervisor's end of the event queue: each event with the room it
/// holds in a worker's window (none for most), given back when the program
/// takes it.
pub(crate) type EventSender<M> = mpsc::UnboundedSender<(Event<M>, cluster_ipc::Credit)>;

pub(crate) struct Shared<M> {
    pub(crate) state: Mutex<State<M>>,
    /// Held through one batch of forks (ids taken, processes spawned,
    /// workers registered), so ids are taken, and `Fork`s reported, in
    /// order, while `state`'s lock is free during the spawn. Only the fork
    /// paths take it: the sync API's on its caller's thread, the rest
    /// on the blocking pool (`start_worker_async`).
    forking: Mutex<()>,
    pub(crate) notices: mpsc::UnboundedSender<Notice<M>>,
    pub(crate) balancer: Arc<Balancer>,
    /// Held by the rolling reload in progress: one at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The service manager, the pid file and an upgrade's ready message.
    pub(crate) service: notify::Service,
    /// Dropped with the cluster: stops its readers on the network thread
    /// (and its metrics endpoint).
    net_stop: watch::Sender<()>,
    /// Where the metrics endpoint listens, once it does.
    pub(crate) metrics_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

impl<M: Payload> Shared<M> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<M>> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters more than stopping would; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rolling reload of [`Cluster::reload`] (also run on SIGHUP), one
    /// at a time.
    pub(crate) async fn reload(self: &Arc<Self>) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        // The service manager and the events hear of every reload (the
        // API's, SIGHUP's), the events in order through the supervisor.
        let _ = self.notices.send(Notice::ReloadStarted);
        self.service.reloading();
        let result = self.reload_slots().await;
        self.service.reloaded(match &result {
            Ok(()) => "done",
            Err(_) => "failed",
        });
        let error = result.as_ref().err().map(Error::for_report);
        let _ = self.notices.send(Notice::ReloadFinished(error));
        result
    }

    /// Replace `old`, the current worker of `slot`, through the rolling
    /// path (recycling): one at a time with reloads; nothing to do if it is
    /// no longer its slot's worker.
    pub(crate) async fn recycle(
        self: &Arc<Self>,
        slot: SlotId,
        old: WorkerHandle<M>,
    ) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let (current, timeout) = {
            let st = self.lock();
            let current = st.slots.get(&slot).and_then(|s| s.current) == Some(old.id());
            (current, st.settings.ready_timeout)
        };
        if !current {
            return Ok(());
        }
        self.replace(slot, old, timeout).await
    }

    /// One step of the rolling path: start `slot`'s replacement, wait until
    /// it is ready, make it current, then disconnect `old`.
    async fn replace(
        self: &Arc<Self>,
        slot: SlotId,
        old: WorkerHandle<M>,
        timeout: std::time::Duration,
    ) -> Result<()> {
        if self.lock().stopping {
            return Err(Error::Stopped);
        }
        let listening_needed = old.state() == WorkerState::Listening;
        tracing::debug!(target: crate::trace::TARGET, slot = slot.get(), old = old.id().0, "replacement starting");
        // Killed unless it takes over: on failure, and if this future is
        // dropped while it waits (also for the spawn).
        let pending = self
            .start_worker_async(slot, Placement::Replacement)
            .await?;
        let new = pending.worker.clone();
        let ready = tokio::time::timeout(timeout, new.wait_ready(listening_needed)).await;
        if ready != Ok(true) {
            tracing::warn!(target: crate::trace::TARGET, slot = slot.get(), replacement = new.id().0, "replacement not ready");
            return Err(Error::ReloadFailed {
                slot,
                replacement: new.id(),
            });
        }
        pending.keep();
        let (kept, displaced) = {
            let mut st = self.lock();
            match st.slots.get_mut(&slot) {
                Some(s) => {
                    let displaced = s.current.replace(new.id());
                    s.guard.started(Instant::now());
                    // It is ready: its end is no failed start.
                    s.guard.ready();
                    // The slot's current worker is `old`, unless `old` died
                    // while its replacement started and the guard restarted
                    // the slot: that restarted worker runs the old program
                    // too, and goes like `old`.
                    let displaced = displaced
                        .filter(|id| *id != old.id())
                        .and_then(|id| st.workers.get(&id).cloned());
                    (true, displaced)
                }
                // Removed by `scale_to` meanwhile: the replacement goes too.
                None => (false, None),
            }
        };
        if !kept {
            let _ = new.disconnect().await;
        }
        if let Some(restarted) = displaced {
            tracing::debug!(target: crate::trace::TARGET, slot = slot.get(), restarted = restarted.id().0, "a worker restarted during the reload: draining it too");
            tokio::spawn(async move {
                let _ = restarted.disconnect().await;
            });
        }
        tracing::debug!(target: crate::trace::TARGET, slot = slot.get(), old = old.id().0, new = new.id().0, "replacement ready: old worker draining");
        // The old one may have died meanwhile; that is fine. A task of
        // its own: it is told even if this future is dropped now.
        let _ = tokio::spawn(async move {
            let _ = old.disconnect().await;
        })
        .await;
        Ok(())
    }

    async fn reload_slots(self: &Arc<Self>) -> Result<()> {
        let (plan, timeout) = {
            let st = self.lock();
            let plan: Vec<(SlotId, WorkerHandle<M>)> = st
                .slots
                .iter()
                .filter_map(|(slot, s)| {
                    let w = st.workers.get(&s.current?)?;
                    Some((*slot, w.clone()))
                })
                .collect();
            (plan, st.settings.ready_timeout)
        };
        for (slot, old) in plan {
            self.replace(slot, old, timeout).await?;
        }
        Ok(())
    }

    /// Open a new slot and start its first worker.
    fn fork_slot(&self, extra_env: Vec<(OsString, OsString)>) -> Result<WorkerHandle<M>> {
        self.fork_slots(vec![extra_env])
            .pop()
            .unwrap_or_else(|| unreachable!("one slot gives one result"))
    }

    /// Open a new slot per environment and start their first workers
    /// together: a result per slot, in order (a slot whose start failed is
    /// closed again), ending with an error at the first slot that could not
    /// be opened (the cluster is stopping, or out of slot numbers).
    fn fork_slots(
        &self,
        extra_envs: Vec<Vec<(OsString, OsString)>>,
    ) -> Vec<Result<WorkerHandle<M>>> {
        let mut refused = None;
        let mut results = self.start_many(|st| {
            let mut opened = Vec::with_capacity(extra_envs.len());
            for extra_env in extra_envs {
                if st.stopping {
                    refused = Some(Error::Stopped);
                    break;
                }
                let Some(after) = st.next_slot.checked_add(1) else {
                    refused = Some(Error::TooManySlots);
                    break;
                };
                let slot = SlotId::new(st.next_slot);
                st.next_slot = after;
                let guard = RestartGuard::new(
                    st.settings.restart,
                    st.settings.backoff,
                    st.settings.crash_loop,
                );
                st.slots.insert(
                    slot,
                    SlotEntry {
                        guard,
                        current: None,
                        extra_env,
                        gave_up: false,
                        starts: 0,
                    },
                );
                opened.push((slot, Placement::First));
            }
            opened
        });
        results.extend(refused.map(Err));
        results
    }

    /// Start a worker for `slot`, on the calling thread (which waits for
    /// the spawn; see [`start_many`](Self::start_many)).
    pub(crate) fn start_worker(
        &self,
        slot: SlotId,
        placement: Placement,
    ) -> Result<WorkerHandle<M>> {
        self.start_many(|_| vec![(slot, placement)])
            .pop()
            .unwrap_or_else(|| unreachable!("one slot gives one result"))
    }

    /// [`start_worker`](Self::start_worker) off the runtime's threads: on
    /// tokio's blocking pool, which waits for spawn-core's spawner thread
    /// (and for a batch of forks in progress) while this future lets its
    /// thread run other tasks. The worker comes back killed unless kept,
    /// so it dies if this future, or the one that holds it, is dropped
    /// before it takes over.
    pub(crate) async fn start_worker_async(
        self: &Arc<Self>,
        slot: SlotId,
        placement: Placement,
    ) -> Result<KillUnlessKept<M>> {
        let shared = Arc::clone(self);
        let started = tokio::task::spawn_blocking(move || {
            shared
                .start_worker(slot, placement)
                .map(|worker| KillUnlessKept {
                    worker,
                    kept: false,
                })
        })
        .await;
        match started {
            Ok(started) => started,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: so is the cluster.
            Err(_) => Err(Error::Stopped),
        }
    }

    /// Start a batch of workers, their processes spawned together (one
    /// trip to spawn-core's spawner thread): `pick` chooses the slots (and
    /// may open them) under the state's lock; the spawn runs with only the
    /// fork sequence's lock held ([`Shared::forking`]), so the supervisor,
    /// `stats`, the readers and the hand-off never wait for it; then each
    /// worker is registered. A result per slot, in order.
    ///
    /// A spawn that ends after the shutdown began is killed unannounced
    /// ([`Error::Stopped`]): the shutdown did not see it. A restart whose
    /// slot was removed (`scale_to`) or filled (a reload's replacement took
    /// it over) meanwhile drains at once, like a worker its slot no longer
    /// needs.
    fn start_many(
        &self,
        pick: impl FnOnce(&mut State<M>) -> Vec<(SlotId, Placement)>,
    ) -> Vec<Result<WorkerHandle<M>>> {
        let _sequence = self.forking.lock().unwrap_or_else(PoisonError::into_inner);
        let (which, batch) = {
            let mut st = self.lock();
            let which = pick(&mut st);
            let batch = prepare(&mut st, &which);
            (which, batch)
        };
        let Batch {
            program,
            mut results,
            prepared,
            commands,
        } = batch;
        let spawned = if commands.is_empty() {
            Vec::new()
        } else {
            spawn_core::spawn_all(commands)
        };
        let mut st = self.lock();
        for ((index, slot, placement, env, channel), child) in prepared.into_iter().zip(spawned) {
            results[index] = Some(match child {
                Ok(mut child) if st.stopping => {
                    // Reaped by tokio's orphan queue once it is dropped.
                    let _ = child.start_kill();
                    Err(Error::Stopped)
                }
                Ok(child) => {
                    Ok(self.register(&mut st, slot, placement, env, Launched { child, channel }))
                }
                Err(source) => Err(Error::Spawn {
                    worker: env.id,
                    program: program.clone().unwrap_or_default(),
                    source,
                }),
            });
        }
        // Give back the ids of the failed spawns at the end of the run.
        for r in results.iter().rev() {
            match r {
                Some(Err(Error::Spawn { worker, .. } | Error::Channel { worker, .. }))
                    if worker.0 + 1 == st.next_id =>
                {
                    st.next_id -= 1;
                }
                _ => break,
            }
        }
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| unreachable!("every slot has a result")))
            .collect();
        // A slot opened for a worker that could not be started closes again.
        for ((slot, placement), result) in which.iter().zip(&results) {
            if *placement == Placement::First && result.is_err() {
                st.slots.remove(slot);
            }
        }
        results
    }

    /// A worker was spawned: its handle, its tasks (output, channel reader,
    /// process driver), and `Fork` reported.
    fn register(
        &self,
        st: &mut State<M>,
        slot: SlotId,
        placement: Placement,
        env: WorkerEnv,
        mut launched: Launched,
    ) -> WorkerHandle<M> {
        let id = env.id;
        let pid = launched.child.id().unwrap_or_default();

        let (sender_tx, sender_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let (state_tx, _) = watch::channel(WorkerState::None);
        let counters = Arc::new(Counters::default());
        let request_limit = st
            .settings
            .recycle
            .max_requests
            .map(|n| n.saturating_add(recycle::jitter(id, st.settings.recycle.jitter)));
        if let Some(s) = st.slots.get_mut(&slot) {
            s.starts += 1;
        }
        self.balancer.add_worker(id, slot, Arc::clone(&counters));
        let handle = WorkerHandle::new(Arc::new(HandleInner {
            id,
            slot,
            pid,
            sender: sender_rx,
            state: state_tx,
            after_disconnect: false.into(),
            kill_tx,
            counters,
            balancer: Arc::clone(&self.balancer),
            messages: 0.into(),
            started: Instant::now(),
            request_limit,
            pending_broadcasts: std::sync::atomic::AtomicUsize::new(0),
        }));
        st.workers.insert(id, handle.clone());
        // A restart or a new slot's worker fills its slot, if the slot is
        // still there and vacant (see `start_many`).
        let unneeded = match placement {
            Placement::Replacement => false,
            Placement::Current | Placement::First => match st.slots.get_mut(&slot) {
                Some(s) if s.current.is_none() => {
                    s.current = Some(id);
                    s.guard.started(Instant::now());
                    false
                }
                _ => true,
            },
        };
        // Sent under the lock: `Fork` precedes everything the worker's tasks
        // report, and forks are reported in id order.
        let _ = self.notices.send(Notice::Forked(handle.clone()));

        if st.settings.stdio == WorkerStdio::Piped {
            if let Some(out) = launched.child.take_stdout() {
                tokio::spawn(driver::forward_lines(
                    out,
                    id,
                    driver::Stream::Stdout,
                    LineFormat::from(st.settings.worker_output),
                ));
            }
            if let Some(err) = launched.child.take_stderr() {
                tokio::spawn(driver::forward_lines(
                    err,
                    id,
                    driver::Stream::Stderr,
                    LineFormat::from(st.settings.worker_output),
                ));
            }
        }
        let config = cluster_ipc::Config::default().receive_window(st.settings.message_window);
        let (reaped_tx, reaped_rx) = watch::channel(false);
        let reader = net::spawn_until(
            driver::read_loop(
                launched.channel,
                id,
                env.token,
                config,
                sender_tx,
                reaped_rx,
                self.notices.clone(),
                Arc::clone(&self.balancer),
            ),
            self.net_stop.subscribe(),
        );
        tokio::spawn(driver::drive(
            launched.child,
            id,
            reader,
            reaped_tx,
            kill_rx,
            self.notices.clone(),
        ));
        if unneeded {
            handle.mark_disconnected();
            let worker = handle.clone();
            tokio::spawn(async move {
                let _ = worker.disconnect().await;
            });
        }
        handle
    }
}

/// A batch of forks, prepared under the state's lock: the program, a
/// result per slot (those that failed already), and the commands to spawn
/// with what each needs to register.
struct Batch<M> {
    program: Option<PathBuf>,
    results: Vec<Option<Result<WorkerHandle<M>>>>,
    prepared: Vec<(usize, SlotId, Placement, WorkerEnv, std::os::fd::OwnedFd)>,
    commands: Vec<spawn_core::Command>,
}

/// Take an id for each slot's worker and build its command (its
/// environment names the id); a slot whose command cannot be built has its
/// error already.
fn prepare<M: Payload>(st: &mut State<M>, which: &[(SlotId, Placement)]) -> Batch<M> {
    let mut batch = Batch {
        program: None,
        results: Vec::new(),
        prepared: Vec::new(),
        commands: Vec::new(),
    };
    if which.is_empty() {
        return batch;
    }
    let program = match &st.program {
        Some(p) => p.clone(),
        None => {
            let p = match &st.settings.program {
                Some(p) => p.clone(),
                None => match std::env::current_exe() {
                    Ok(p) => p,
                    Err(e) => {
                        batch.results = which
                            .iter()
                            .map(|_| {
                                let e = std::io::Error::new(e.kind(), e.to_string());
                                Some(Err(Error::CurrentExe(e)))
                            })
                            .collect();
                        return batch;
                    }
                },
            };
            st.program = Some(p.clone());
            p
        }
    };
    // Each worker's id is taken before its spawn (its environment names
    // it); a failed spawn gives its id back when no later one took the
    // next, so a failed fork alone leaves no gap.
    for &(slot, placement) in which {
        let id = WorkerId(st.next_id);
        st.next_id += 1;
        let env = WorkerEnv {
            id,
            slot,
            heartbeat: st.settings.heartbeat.map(|h| h.interval),
            primary: std::process::id(),
            token: crate::role::new_token(id),
        };
        let extra_env = st
            .slots
            .get(&slot)
            .map(|s| s.extra_env.clone())
            .unwrap_or_default();
        match command(&st.settings, &program, env, &extra_env) {
            Ok((cmd, channel)) => {
                batch.commands.push(cmd);
                batch
                    .prepared
                    .push((batch.results.len(), slot, placement, env, channel));
                batch.results.push(None);
            }
            Err(source) => batch
                .results
                .push(Some(Err(Error::Channel { worker: id, source }))),
        }
    }
    batch.program = Some(program);
    batch
}

/// A primary: starts workers by re-executing a program, guards them, and
/// reports what happens as [`Event`]s. `M` is the message type, both ways.
///
/// See the [crate docs](crate) for an example.
pub struct Cluster<M> {
    shared: Arc<Shared<M>>,
    events: mpsc::UnboundedReceiver<(Event<M>, cluster_ipc::Credit)>,
    commands: mpsc::UnboundedSender<Command>,
}

impl<M> std::fmt::Debug for Cluster<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl<M: Payload> Cluster<M> {
    /// A cluster with these settings and no workers yet. Must be called inside
    /// a tokio runtime; with [`Settings::handle_signals`] it installs the
    /// SIGTERM and SIGINT handlers now (and those of the other signals
    /// asked for), installs the [logs](Settings::logs) and binds the
    /// [metrics endpoint](Settings::metrics).
    ///
    /// It reads no configuration variable: the settings are all there is
    /// ([`Settings::from_env`] reads the operator's variables, on request).
    /// It reads the service manager's protocol alone: socket activation
    /// (`LISTEN_FDS`) and notification (`NOTIFY_SOCKET`, `WATCHDOG_USEC`),
    /// see `docs/deploy.md`.
    pub fn new(settings: Settings) -> Result<Self> {
        run::check_features(&settings)?;
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let signals =
            supervisor::Signals::install(settings.handle_signals, settings.reload_on_hangup)
                .map_err(Error::Signals)?;
        let balancer = Arc::new(Balancer::default());
        balancer.set_choice(settings.resolve_policy());
        balancer.set_limits(limits(&settings));
        // Socket activation and upgrades: adopt what was inherited, once.
        activation::adopt();
        upgrade::remember_exe();
        let service = notify::Service::from_env(
            settings.pid_file.clone(),
            activation::take_upgrade_channel(),
            settings.ready_timeout,
        );
        let watchdog = service.watchdog_interval();
        let on_usr2 = settings.upgrade_on_signal;
        let operator = settings.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                settings,
                program: None,
                next_id: 1,
                next_slot: 0,
                workers: BTreeMap::new(),
                slots: BTreeMap::new(),
                stopping: false,
                gave_up: false,
            }),
            notices: notices_tx,
            balancer,
            forking: Mutex::new(()),
            reloading: tokio::sync::Mutex::new(()),
            service,
            net_stop: watch::channel(()).0,
            metrics_addr: std::sync::OnceLock::new(),
        });
        run::start_operator_features(&shared, &Settings::default(), &operator)?;
        if on_usr2 {
            upgrade::on_signal(Arc::downgrade(&shared)).map_err(Error::Signals)?;
        }
        if let Some(every) = watchdog {
            supervisor::watchdog(shared.notices.clone(), every);
        }
        tokio::spawn(recycle::run(Arc::downgrade(&shared)));
        tokio::spawn(supervisor::run(
            Arc::clone(&shared),
            notices_rx,
            cmd_rx,
            events_tx,
            signals,
        ));
        Ok(Self {
            shared,
            events: events_rx,
            commands: cmd_tx,
        })
    }

    /// Change the settings (Node's `setupPrimary`): the changes merge into the
    /// current ones. Fails with [`Error::SettingsFrozen`] after the first fork.
    /// [`Settings::handle_signals`], [`Settings::reload_on_hangup`] and
    /// [`Settings::scale_on_signals`] turned on here install their handlers
    /// now (an [`Error::Signals`] if they cannot be), as do
    /// [`Settings::logs`] its subscriber and [`Settings::metrics`] its
    /// endpoint; [`Settings::upgrade_on_signal`] applies only in `new`.
    pub fn setup(&self, change: impl FnOnce(&mut Settings)) -> Result<()> {
        let mut st = self.shared.lock();
        if st.next_id > 1 || st.program.is_some() {
            return Err(Error::SettingsFrozen);
        }
        let mut changed = st.settings.clone();
        change(&mut changed);
        run::check_features(&changed)?;
        let policy = changed.resolve_policy();
        let shutdown_on = changed.handle_signals && !st.settings.handle_signals;
        let reload_on = changed.reload_on_hangup && !st.settings.reload_on_hangup;
        if let Some(signals) =
            supervisor::Signals::install(shutdown_on, reload_on).map_err(Error::Signals)?
        {
            // A supervisor already gone has nothing left to signal.
            let _ = self.commands.send(Command::Signals(signals));
        }
        run::start_operator_features(&self.shared, &st.settings, &changed)?;
        self.shared.balancer.set_choice(policy);
        self.shared.balancer.set_limits(limits(&changed));
        st.settings = changed;
        Ok(())
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        self.shared.lock().settings.clone()
    }

    /// Fork [`Settings::n_workers`] workers, spawned together (one trip to
    /// spawn-core's spawner thread, not one each). On an error, the workers
    /// that did start keep running.
    pub fn start(&self) -> Result<Vec<WorkerHandle<M>>> {
        let n = self.shared.lock().settings.n_workers;
        // Spawned together: one trip to spawn-core's spawner thread for all.
        self.shared
            .fork_slots(vec![Vec::new(); n])
            .into_iter()
            .collect()
    }

    /// Start one more worker, in a new slot that the guard keeps filled.
    pub fn fork(&self) -> Result<WorkerHandle<M>> {
        self.shared.fork_slot(Vec::new())
    }

    /// Like [`fork`](Self::fork), with extra environment variables for this
    /// slot (its restarts and reloads get them too).
    pub fn fork_with_env<I, K, V>(&self, env: I) -> Result<WorkerHandle<M>>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self.shared.fork_slot(env)
    }

    /// The live workers (not yet reaped), by id.
    pub fn workers(&self) -> BTreeMap<WorkerId, WorkerHandle<M>> {
        self.shared.lock().workers.clone()
    }

    /// Give the cluster a socket it already holds to listen on for its
    /// workers (Node's `listen({ fd })`, the path of a systemd socket
    /// unit's descriptors): already bound, and listening for a stream
    /// socket. Returns its descriptor number, the key of a worker's
    /// [`Worker::listen_fd`](crate::Worker::listen_fd); a worker's
    /// [`listen`](crate::Worker::listen), [`listen_unix`](crate::Worker::listen_unix)
    /// or [`bind_udp`](crate::Worker::bind_udp) on the address it is bound
    /// to uses it too, instead of binding again. It is served like a socket
    /// the primary bound (handed over under a distributed policy, shared
    /// under `none`; UDP always shared), except that the file of a
    /// Unix-domain socket given this way is never removed by the cluster.
    pub fn inherit_socket(&self, socket: InheritedSocket) -> std::os::fd::RawFd {
        self.shared.balancer.inherit(socket)
    }

    /// The descriptor number under which this primary already holds a
    /// socket for `target` — one given to
    /// [`inherit_socket`](Self::inherit_socket), one a service manager
    /// passed (socket activation), or one the primary this one upgraded
    /// from handed on (an upgrade carries every listener) — for a worker's
    /// [`listen_fd`](crate::Worker::listen_fd). A program that opens its
    /// own sockets for `inherit_socket` opens only those it does not hold
    /// yet, so the same program runs as the first primary and as an
    /// upgraded one:
    ///
    /// ```no_run
    /// # fn f(cluster: &cluster_core::Cluster<()>) -> std::io::Result<i32> {
    /// use cluster_core::{InheritedSocket, ListenTarget, UnixAddr};
    ///
    /// let path = "/run/app/app.sock";
    /// let target = ListenTarget::Unix(UnixAddr::from(path));
    /// let fd = match cluster.inherited_fd(&target) {
    ///     Some(fd) => fd,
    ///     None => {
    ///         let socket = std::os::unix::net::UnixListener::bind(path)?;
    ///         cluster.inherit_socket(InheritedSocket::Unix(socket))
    ///     }
    /// };
    /// // Pass `fd` to the workers (`Settings::env`), for `listen_fd`.
    /// # Ok(fd) }
    /// ```
    pub fn inherited_fd(&self, target: &crate::ListenTarget) -> Option<std::os::fd::RawFd> {
        self.shared
            .balancer
            .held_fd(&balancer::ListenKey::from(target))
    }

    /// One live worker.
    pub fn worker(&self, id: WorkerId) -> Option<WorkerHandle<M>> {
        self.shared.lock().workers.get(&id).cloned()
    }

    /// The connection counters of every live worker, by id: connections
    /// handed over and acknowledged, and those still open (see
    /// [`WorkerHandle::connections`]).
    pub fn connection_stats(&self) -> BTreeMap<WorkerId, ConnectionStats> {
        self.shared
            .lock()
            .workers
            .iter()
            .map(|(id, w)| (*id, w.connections()))
            .collect()
    }

    /// A snapshot of the cluster: per live worker its pid, slot, state,
    /// uptime, the restarts of its slot, connections, messages, and resident
    /// memory and CPU time from `/proc` (see [`stats`](crate::stats)).
    /// Cheap enough to call every second: two small `/proc` reads per
    /// worker, outside the cluster's lock and off the runtime's threads
    /// (one task on tokio's blocking pool for them all).
    pub async fn stats(&self) -> crate::stats::ClusterStats {
        self.shared.stats().await
    }

    /// How many slots the cluster keeps filled now (those the crash-loop
    /// limit gave up on excluded).
    pub fn slots(&self) -> usize {
        self.shared.slots()
    }

    /// Change the number of workers at run time (Gunicorn's TTIN/TTOU;
    /// [`Settings::scale_on_signals`] does it on those signals): open new
    /// slots (each [`fork`](Self::fork)ed: [`Event::Fork`] and so on) or
    /// remove the newest ones: a removed slot is not refilled and its
    /// worker is told to disconnect, so it drains (no new connection goes
    /// to it, those it holds finish) — [`Event::SlotRemoved`]. Slots the
    /// crash-loop limit gave up on are not counted. Fails with
    /// [`Error::Stopped`] once the cluster is shutting down; `n` must be at
    /// least 1 (0 is taken as 1: use [`shutdown`](Self::shutdown) to stop).
    pub fn scale_to(&self, n: usize) -> Result<()> {
        self.shared.scale_to(n)
    }

    /// Send `msg` to every live worker that was not disconnected; returns how
    /// many it was queued for. The message is encoded once.
    ///
    /// Never waits for a worker: each live worker whose window has room has
    /// the message queued at once (in the order of its other messages). A
    /// worker whose window is full — it does not read its messages, or it
    /// hangs — gets it when it catches up, in a task that waits for room, up
    /// to 16 broadcasts behind; a worker further behind misses the later
    /// ones (they are not counted). So a stopped worker never delays the
    /// others, and never makes the primary hold more than 16 messages for
    /// it.
    pub async fn broadcast(&self, msg: &M) -> usize {
        let Ok(encoded) = cluster_ipc::Encoded::new(msg) else {
            return 0;
        };
        let encoded = Arc::new(encoded);
        let workers: Vec<_> = self.shared.lock().workers.values().cloned().collect();
        workers
            .iter()
            .filter(|w| !matches!(w.offer(&encoded), handle::Offered::Missed))
            .count()
    }

    /// The next event; `None` once the cluster has shut down (or every slot
    /// gave up, after [`Event::AllSlotsGaveUp`]) and every event was
    /// delivered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if it is dropped before it completes (a `select!` whose
    /// other branch won), no event is lost; the next call returns it.
    pub async fn next_event(&mut self) -> Option<Event<M>> {
        // The event's credit (a message that did not decode holds one) is
        // given back as the program takes it.
        self.events.recv().await.map(|(event, _credit)| event)
    }

    /// Whether every slot gave up (the crash-loop limit): the cluster cannot
    /// run. Its listeners are closed (clients are refused), it starts no
    /// worker any more ([`fork`](Self::fork) fails with [`Error::Stopped`]),
    /// and [`Event::AllSlotsGaveUp`] was its last event. A program should
    /// then exit with a failure.
    pub fn has_given_up(&self) -> bool {
        self.shared.lock().gave_up
    }

    /// Shut down gracefully: no more restarts, every worker is told to
    /// disconnect, stragglers are SIGKILLed at the
    /// [deadline](Settings::shutdown_deadline). Returns when all have exited.
    pub async fn shutdown(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        // A closed channel or a dropped reply means the supervisor already
        // finished, after an earlier shutdown: done too.
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        Ok(())
    }

    /// Rolling reload: for one slot at a time, start a replacement, wait until
    /// it is ready (listening if the old worker listened, online otherwise)
    /// within [`Settings::ready_timeout`], then disconnect the old worker. If a
    /// replacement fails, it is killed, the reload stops with
    /// [`Error::ReloadFailed`] and the remaining old workers keep running.
    ///
    /// One reload runs at a time (a second call, or a SIGHUP with
    /// [`Settings::reload_on_hangup`], waits for the first to end); once the
    /// cluster is shutting down it stops with [`Error::Stopped`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe in the sense that dropping it stops the reload half
    /// way, but it leaves the cluster whole: the slots already replaced stay
    /// replaced; a replacement started and not yet ready is killed (as when
    /// it fails), so its old worker keeps the slot; an old worker whose
    /// replacement took over is still told to disconnect (that runs as a
    /// task of its own). Calling `reload` again starts over with the workers
    /// current then.
    pub async fn reload(&self) -> Result<()> {
        self.shared.reload().await
    }

    /// Zero-downtime upgrade of the primary itself (nginx's SIGUSR2
    /// binary upgrade): start the program now on disk as a new primary,
    /// handing it every listener of every kind — TCP, Unix-domain (the
    /// file stays; the new primary owns it), UDP, sockets given to
    /// [`inherit_socket`](Self::inherit_socket) — through systemd's
    /// `LISTEN_FDS` variables; once its workers listen, it says so and this
    /// cluster begins its graceful shutdown (no more restarts, workers
    /// drained, then the event stream ends: the program should then exit).
    /// No connection is refused meanwhile: the sockets stay open in the new
    /// primary. Returns the new primary's pid (also reported as
    /// [`Event::Upgraded`], as `MAINPID=` to the service manager and in the
    /// [pid file](Settings::pid_file)).
    ///
    /// If the new primary exits, is not ready within
    /// [`Settings::upgrade_timeout`], or its workers do not all listen
    /// within its [`Settings::ready_timeout`], it is killed and this one
    /// keeps serving: [`Error::Upgrade`] (and [`Event::UpgradeFailed`]) says
    /// why. So is it if this cluster starts its graceful shutdown first
    /// (SIGTERM, SIGINT, [`shutdown`](Self::shutdown)). One upgrade at a
    /// time ([`Error::UpgradeInProgress`]). The new primary must be a
    /// program that builds a `Cluster` whose workers listen on the same
    /// addresses. [`Settings::upgrade_on_signal`] runs this on SIGUSR2.
    pub async fn upgrade(&self) -> Result<u32> {
        upgrade::upgrade(&self.shared).await
    }
}

/// A worker that has not taken over its slot yet (a reload's replacement,
/// a restart on its way): SIGKILLed when dropped, unless
/// [`keep`](Self::keep) was called.
pub(crate) struct KillUnlessKept<M: Payload> {
    worker: WorkerHandle<M>,
    kept: bool,
}

impl<M: Payload> KillUnlessKept<M> {
    pub(crate) fn keep(mut self) -> WorkerHandle<M> {
        self.kept = true;
        self.worker.clone()
    }
}

impl<M: Payload> Drop for KillUnlessKept<M> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = self.worker.kill(Signal::SIGKILL);
        }
    }
}

/// The balancer's hand-off bounds in `settings`.
fn limits(settings: &Settings) -> HandoffLimits {
    HandoffLimits {
        window: settings.handoff_window,
        deadline: settings.handoff_deadline,
    }
}
