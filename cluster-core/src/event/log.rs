//! [`EventLog`]: the default event log of `Cluster::run`, one line per
//! event on the primary's stdout through the output queue.

use crate::endpoint::ListenTarget;
use crate::event::Event;
use crate::output::Output;

/// The operator's view of a cluster: one line per [`Event`] (its
/// `Display`: the worker with its pid, what happened), queued on the
/// primary's stdout ([`Output`]), so a stalled reader never blocks the
/// primary. [`Cluster::run`](crate::Cluster::run) prints through the
/// default one; [`Cluster::run_logged`](crate::Cluster::run_logged) takes
/// another. Messages ([`Event::Message`]) are not printed.
///
/// ```text
/// primary (pid 4242): 2 worker(s) on http://127.0.0.1:3000/, scheduling rr; SIGHUP reloads, SIGTERM or Ctrl-C drains
/// worker 1 (pid 4243) forked in slot 0
/// worker 1 (pid 4243) online
/// worker 1 (pid 4243) listening on http://127.0.0.1:3000/
/// worker 1 (pid 4243) killed by signal 9
/// slot 0: restart in 0 ms
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    http: bool,
    on: Option<ListenTarget>,
}

impl EventLog {
    /// Every event's line as it is (`listening on 127.0.0.1:3000`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A TCP listening address as an `http://` URL (`listening on
    /// http://127.0.0.1:3000/`), for a cluster that serves HTTP.
    pub fn http() -> Self {
        Self {
            http: true,
            on: None,
        }
    }

    /// The first line (`Cluster::run_logged`'s) also says where the workers
    /// serve: `on http://127.0.0.1:3000/` (with [`http`](Self::http)),
    /// `on 127.0.0.1:3000`, `on unix:/run/app.sock`. The workers decide
    /// where they listen, so the program says it here; the listening lines
    /// then give the real address (a port 0 resolved).
    pub fn on(mut self, target: ListenTarget) -> Self {
        self.on = Some(target);
        self
    }

    /// Where the workers serve, as the first line says it.
    pub(crate) fn serving(&self) -> Option<String> {
        Some(match self.on.as_ref()? {
            ListenTarget::Tcp(addr) if self.http => format!("http://{addr}/"),
            ListenTarget::Tcp(addr) => addr.to_string(),
            other => other.to_string(),
        })
    }

    /// The line of `event`; `None` for a message.
    pub fn line<M>(&self, event: &Event<M>) -> Option<String> {
        match event {
            Event::Message(_) => None,
            event if self.http => Some(format!("{event:#}")),
            event => Some(event.to_string()),
        }
    }

    /// Queue the line of `event` on the primary's stdout (never blocks).
    pub fn print<M>(&self, event: &Event<M>) {
        if let Some(line) = self.line(event) {
            self.say(line);
        }
    }

    /// Queue a line of the program's own among the events' (never blocks).
    pub fn say(&self, line: impl AsRef<[u8]>) {
        let _queued = Output::stdout().line(line);
    }
}
