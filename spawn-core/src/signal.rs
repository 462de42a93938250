//! [`Signal`]: a Unix signal, named like `SIGTERM`. The crate's own type, so
//! that no dependency's type (nix's) is part of the public API and a major
//! release of that dependency never breaks a user.

use std::fmt;

use nix::sys::signal::Signal as NixSignal;

/// A Unix signal that can be sent to a child, or that killed one.
///
/// The usual signals are constants named as in C (`Signal::SIGTERM`); any
/// other signal the platform names (Linux's `SIGPWR`, ...) comes from
/// [`Signal::from_raw`]. Real-time signals have no `Signal` value:
/// [`Close::signo`](crate::Close::signo) still reports them by number.
///
/// ```
/// use spawn_core::Signal;
///
/// assert_eq!(Signal::SIGKILL.as_raw(), 9);
/// assert_eq!(Signal::from_raw(15), Some(Signal::SIGTERM));
/// assert_eq!(Signal::SIGTERM.to_string(), "SIGTERM");
/// assert_eq!(Signal::from_raw(0), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(NixSignal);

macro_rules! signals {
    ($($name:ident: $what:literal,)*) => {
        impl Signal {
            $(
                #[doc = $what]
                pub const $name: Signal = Signal(NixSignal::$name);
            )*
        }
    };
}

signals! {
    SIGHUP: "Hangup: the controlling terminal closed (daemons: reload).",
    SIGINT: "Interrupt from the keyboard (Ctrl-C).",
    SIGQUIT: "Quit from the keyboard, with a core dump.",
    SIGILL: "Illegal instruction.",
    SIGTRAP: "Trace or breakpoint trap.",
    SIGABRT: "Abort (`abort()`).",
    SIGBUS: "Bus error (bad memory access).",
    SIGFPE: "Floating-point exception.",
    SIGKILL: "Kill: cannot be caught or ignored.",
    SIGUSR1: "User-defined signal 1.",
    SIGSEGV: "Invalid memory reference.",
    SIGUSR2: "User-defined signal 2.",
    SIGPIPE: "Write to a pipe with no reader.",
    SIGALRM: "Timer signal from `alarm()`.",
    SIGTERM: "Termination request: the polite stop.",
    SIGCHLD: "A child stopped or terminated.",
    SIGCONT: "Continue if stopped.",
    SIGSTOP: "Stop the process: cannot be caught or ignored.",
    SIGTSTP: "Stop typed at the terminal (Ctrl-Z).",
    SIGTTIN: "Terminal input for a background process.",
    SIGTTOU: "Terminal output for a background process.",
    SIGURG: "Urgent condition on a socket.",
    SIGXCPU: "CPU time limit exceeded.",
    SIGXFSZ: "File size limit exceeded.",
    SIGVTALRM: "Virtual alarm clock.",
    SIGPROF: "Profiling timer expired.",
    SIGWINCH: "Window resize.",
    SIGIO: "I/O now possible.",
    SIGSYS: "Bad system call.",
}

impl Signal {
    /// The signal with this number, if the platform names one (`None` for 0,
    /// a negative number, a real-time signal or an unknown number).
    pub fn from_raw(signo: i32) -> Option<Signal> {
        NixSignal::try_from(signo).ok().map(Signal)
    }

    /// The signal's number (`SIGKILL` is 9).
    pub fn as_raw(self) -> i32 {
        self.0 as i32
    }

    /// The signal's name, as in C (`"SIGKILL"`).
    pub fn as_str(self) -> &'static str {
        self.0.as_str()
    }

    /// nix's value, for the crate's own system calls.
    pub(crate) fn to_nix(self) -> NixSignal {
        self.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Signal> for i32 {
    fn from(signal: Signal) -> i32 {
        signal.as_raw()
    }
}

impl TryFrom<i32> for Signal {
    type Error = UnknownSignal;

    fn try_from(signo: i32) -> Result<Signal, UnknownSignal> {
        Signal::from_raw(signo).ok_or(UnknownSignal { signo })
    }
}

/// A number that names no [`Signal`] on this platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no signal is named by number {signo}")]
pub struct UnknownSignal {
    /// The number.
    pub signo: i32,
}
