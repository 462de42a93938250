//! The primary's `tracing` output through the output queue (feature
//! `logs`): [`LogWriter`], a `tracing-subscriber` [`MakeWriter`] whose
//! records are queued whole for the stderr (or stdout) writer thread of
//! [`crate::output`], so a stalled reader never blocks a thread that logs;
//! and the subscriber [`Settings::logs`](crate::Settings::logs) installs.
//!
//! A program that builds its own subscriber takes the writer alone:
//!
//! ```no_run
//! use cluster_core::logs::LogWriter;
//!
//! tracing_subscriber::fmt()
//!     .with_writer(LogWriter::stderr())
//!     .with_ansi(false)
//!     .init();
//! ```

use std::io;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::error::{Error, Result};
use crate::output::Output;
use crate::settings::{LogFormat, Logs};

/// A [`MakeWriter`] that queues each record, whole, on one of the
/// primary's output streams ([`Output`]): never blocks; a record that does
/// not fit in a stalled stream's budget is dropped and counted (see
/// [`Output::line`]).
#[derive(Debug, Clone, Copy)]
pub struct LogWriter {
    out: Output,
}

impl LogWriter {
    /// Records to the primary's stderr.
    pub fn stderr() -> Self {
        Self {
            out: Output::stderr(),
        }
    }

    /// Records to the primary's stdout.
    pub fn stdout() -> Self {
        Self {
            out: Output::stdout(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Record;

    fn make_writer(&'a self) -> Record {
        Record {
            out: self.out,
            bytes: Vec::new(),
        }
    }
}

/// One record being written: queued whole when dropped.
#[derive(Debug)]
pub struct Record {
    out: Output,
    bytes: Vec<u8>,
}

impl io::Write for Record {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            let _queued = self.out.line(&self.bytes);
        }
    }
}

/// Whether `filter` parses as an `EnvFilter`.
pub(crate) fn is_filter(filter: &str) -> bool {
    EnvFilter::try_new(filter).is_ok()
}

/// Install the subscriber of `logs` as the global default, unless the
/// program installed one already (then `logs` does nothing).
pub(crate) fn install(logs: &Logs) -> Result<()> {
    let filter = EnvFilter::try_new(&logs.filter).map_err(|_| Error::LogFilter {
        filter: logs.filter.clone(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter::stderr())
        .with_ansi(false);
    let _already_set = match logs.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
