//! procwork's own lines (what happens to its workers), plain or JSON, on
//! its stderr through cluster-core's non-blocking output queue: a stalled
//! reader of procwork's stderr never stalls supervision (lines are dropped
//! and counted instead).

use std::time::{SystemTime, UNIX_EPOCH};

use cluster_core::output::Output;
use serde_json::{Map, Value};

/// How procwork writes its own lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `procwork: worker 3 (slot 1, pid 4242) ready`.
    #[default]
    Plain,
    /// One JSON object per line: `time` (Unix seconds), `level`, `event`,
    /// the event's fields, and `msg`.
    Json,
}

/// The line writer.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    format: LogFormat,
}

impl Log {
    /// A writer in `format`.
    pub fn new(format: LogFormat) -> Self {
        Log { format }
    }

    /// One event: its name, its fields (a JSON object) and its sentence.
    pub fn event(&self, level: &str, event: &str, fields: Value, msg: &str) {
        let line = match self.format {
            LogFormat::Plain => format!("procwork: {msg}"),
            LogFormat::Json => {
                let mut obj = Map::new();
                let time = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                obj.insert("time".into(), Value::from((time * 1000.0).round() / 1000.0));
                obj.insert("level".into(), Value::from(level));
                obj.insert("event".into(), Value::from(event));
                if let Value::Object(fields) = fields {
                    obj.extend(fields);
                }
                obj.insert("msg".into(), Value::from(msg));
                Value::Object(obj).to_string()
            }
        };
        Output::stderr().line(line);
    }

    /// An informational event.
    pub fn info(&self, event: &str, fields: Value, msg: &str) {
        self.event("info", event, fields, msg);
    }

    /// A warning: something failed and procwork acts on it.
    pub fn warn(&self, event: &str, fields: Value, msg: &str) {
        self.event("warn", event, fields, msg);
    }
}
