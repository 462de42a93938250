//! Running a cluster to its end: [`Cluster::run`] (the default event log),
//! [`Cluster::run_logged`] and [`Cluster::run_with`], which share one loop:
//! start the workers, hand every event on, end with an error when the
//! cluster could not serve (every slot gave up, an inherited socket no
//! worker listens on), and flush the output before returning.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::Payload;
use crate::error::{Error, Result};
use crate::event::{Event, EventLog};
use crate::primary::{Cluster, Command, Shared};
use crate::settings::Settings;

/// How long the end of a run waits for its output to be written (a stalled
/// reader must not keep the primary from exiting).
pub(crate) const FLUSH_BOUND: Duration = Duration::from_secs(1);

/// The settings that need a feature this build lacks.
pub(crate) fn check_features(settings: &Settings) -> Result<()> {
    if cfg!(not(feature = "prometheus")) && settings.metrics.is_some() {
        return Err(Error::FeatureDisabled {
            setting: "metrics",
            feature: "prometheus",
        });
    }
    if cfg!(not(feature = "logs")) && settings.logs.is_some() {
        return Err(Error::FeatureDisabled {
            setting: "logs",
            feature: "logs",
        });
    }
    Ok(())
}

/// Start the operator features `after` turns on and `before` did not: the
/// logs' subscriber, the SIGTTIN/SIGTTOU handlers, the metrics endpoint.
pub(crate) fn start_operator_features<M: Payload>(
    shared: &Arc<Shared<M>>,
    before: &Settings,
    after: &Settings,
) -> Result<()> {
    #[cfg(feature = "logs")]
    if let (None, Some(logs)) = (&before.logs, &after.logs) {
        crate::logs::install(logs)?;
    }
    if after.scale_on_signals && !before.scale_on_signals {
        super::scale::on_signals(Arc::downgrade(shared)).map_err(Error::Signals)?;
    }
    #[cfg(feature = "prometheus")]
    if let (None, Some(addr)) = (before.metrics, after.metrics) {
        let listener = super::metrics::bind(addr)?;
        if let Ok(bound) = listener.local_addr() {
            let _ = shared.metrics_addr.set(bound);
        }
        super::metrics::serve(
            listener,
            Arc::downgrade(shared),
            shared.net_stop.subscribe(),
        )?;
    }
    Ok(())
}

impl<M: Payload> Cluster<M> {
    /// Run the cluster to its end, for a primary that only supervises:
    /// [`start`](Self::start) the workers, print one line per event on
    /// stdout through the default [`EventLog`] (and first a line that
    /// names the primary, its workers, where they serve when the log says
    /// it ([`EventLog::on`]), its policy, the signals it handles and its
    /// metrics endpoint), until the cluster has shut down and every
    /// event was printed (with [`Settings::handle_signals`]: after SIGTERM
    /// or Ctrl-C); then flush the output (bounded) and return.
    ///
    /// Fails if the workers cannot be started, and, once the cluster has
    /// ended, with [`Error::AllSlotsGaveUp`] when every slot gave up, or
    /// [`Error::UnusedSocket`] when a socket the primary holds (inherited,
    /// or given to [`inherit_socket`](Self::inherit_socket)) is not
    /// listened on by any worker (the cluster is then shut down): a program
    /// that returns the error from `main` exits non-zero.
    ///
    /// ```no_run
    /// # async fn f() -> cluster_core::Result<()> {
    /// use cluster_core::{Cluster, Settings};
    ///
    /// let mut settings = Settings::from_env()?;
    /// settings.handle_signals().reload_on_hangup();
    /// Cluster::<()>::new(settings)?.run().await
    /// # }
    /// ```
    pub async fn run(self) -> Result<()> {
        self.run_logged(EventLog::new()).await
    }

    /// [`run`](Self::run), printing through `log` (say,
    /// `EventLog::http().on(target)`).
    pub async fn run_logged(self, log: EventLog) -> Result<()> {
        log.say(self.banner(log.serving()));
        self.run_with(move |event| log.print(&event)).await
    }

    /// [`run`](Self::run), handing every event to `on_event` instead of
    /// printing it (no first line either).
    pub async fn run_with(mut self, mut on_event: impl FnMut(Event<M>)) -> Result<()> {
        self.start()?;
        let mut failure = None;
        while let Some(event) = self.next_event().await {
            match &event {
                Event::AllSlotsGaveUp => failure = Some(Error::AllSlotsGaveUp),
                Event::UnusedSocket { addr, .. } if failure.is_none() => {
                    failure = Some(Error::UnusedSocket { addr: addr.clone() });
                    // Shut down without waiting here: the events go on.
                    let (reply, _) = oneshot::channel();
                    let _ = self.commands.send(Command::Shutdown(reply));
                }
                _ => {}
            }
            on_event(event);
        }
        crate::output::flush_both(FLUSH_BOUND).await;
        failure.map_or(Ok(()), Err)
    }

    /// `primary (pid 4242): 2 worker(s) on unix:/run/app.sock, scheduling …;
    /// SIGHUP reloads, …`.
    fn banner(&self, serving: Option<String>) -> String {
        let st = self.shared.lock();
        let s = &st.settings;
        let mut signals = Vec::new();
        if s.reload_on_hangup {
            signals.push("SIGHUP reloads");
        }
        if s.upgrade_on_signal {
            signals.push("SIGUSR2 upgrades");
        }
        if s.scale_on_signals {
            signals.push("SIGTTIN/SIGTTOU scale");
        }
        if s.handle_signals {
            signals.push("SIGTERM or Ctrl-C drains");
        }
        let on = serving.map(|on| format!(" on {on}")).unwrap_or_default();
        let mut line = format!(
            "primary (pid {}): {} worker(s){on}, scheduling {:?}",
            std::process::id(),
            s.n_workers,
            s.resolve_policy()
        );
        if !signals.is_empty() {
            line.push_str("; ");
            line.push_str(&signals.join(", "));
        }
        if let Some(addr) = self.shared.metrics_addr.get() {
            line.push_str(&format!("; metrics on http://{addr}/metrics"));
        }
        line
    }
}
