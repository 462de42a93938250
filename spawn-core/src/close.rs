//! [`Close`]: how a child ended, as exactly one of an exit code or a signal
//! (the seed's `{code, signal}`).

use std::borrow::Cow;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::Signal;

/// How a child closed: exactly one of an exit code or a killing signal.
///
/// ```
/// use spawn_core::{Close, Signal};
///
/// let killed = Close::Signaled(Signal::SIGKILL.as_raw());
/// assert_eq!(killed.signal(), Some(Signal::SIGKILL));
/// assert_eq!(killed.code(), None);
/// assert_eq!(killed.to_json(), r#"{"code":null,"signal":"SIGKILL"}"#);
/// assert_eq!(killed.mirror_exit_code(), 137);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Close {
    /// The child exited with this code (0 to 255).
    Exited(i32),
    /// The child was killed by this signal number.
    Signaled(i32),
}

impl Close {
    /// Reads a std exit status. A status that is neither an exit nor a
    /// signal (stopped, continued) cannot come from a wait for termination;
    /// it is reported by its raw value as an exit code rather than panicking.
    pub fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Close::Exited(code),
            (None, Some(signo)) => Close::Signaled(signo),
            (None, None) => Close::Exited(status.into_raw()),
        }
    }

    /// The exit code, when the child exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Close::Exited(code) => Some(code),
            Close::Signaled(_) => None,
        }
    }

    /// The raw signal number, when a signal killed the child.
    pub fn signo(self) -> Option<i32> {
        match self {
            Close::Exited(_) => None,
            Close::Signaled(signo) => Some(signo),
        }
    }

    /// The signal, when a signal the platform names killed the child
    /// (real-time signals have no [`Signal`] value: see [`Close::signal_name`]).
    pub fn signal(self) -> Option<Signal> {
        self.signo().and_then(Signal::from_raw)
    }

    /// The signal's name (`"SIGKILL"`), or `"SIG<n>"` for a signal the
    /// platform does not name; `None` when the child exited.
    pub fn signal_name(self) -> Option<Cow<'static, str>> {
        let signo = self.signo()?;
        Some(match Signal::from_raw(signo) {
            Some(signal) => Cow::Borrowed(signal.as_str()),
            None => Cow::Owned(format!("SIG{signo}")),
        })
    }

    /// Whether the child exited with code 0.
    pub fn success(self) -> bool {
        self == Close::Exited(0)
    }

    /// The exit code a shell would report for this close: the code itself,
    /// or 128 + the signal number.
    pub fn mirror_exit_code(self) -> i32 {
        match self {
            Close::Exited(code) => code,
            Close::Signaled(signo) => 128 + signo,
        }
    }

    /// The seed's `{code, signal}` as one JSON line:
    /// `{"code":3,"signal":null}` or `{"code":null,"signal":"SIGKILL"}`.
    pub fn to_json(self) -> String {
        match self {
            Close::Exited(code) => format!(r#"{{"code":{code},"signal":null}}"#),
            Close::Signaled(_) => {
                let name = self.signal_name().unwrap_or_default();
                format!(r#"{{"code":null,"signal":"{name}"}}"#)
            }
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Exited(code) => write!(f, "exit code {code}"),
            Close::Signaled(_) => {
                write!(f, "signal {}", self.signal_name().unwrap_or_default())
            }
        }
    }
}

#[cfg(test)]
mod tests;
