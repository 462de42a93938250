//! The scheduling mode of a cluster: share the listener, or distribute
//! connections through a policy; and its names (`CLUSTER_SCHED_POLICY`).

use std::fmt;
use std::str::FromStr;

use crate::{Error, LeastConnections, Policy, PowerOfTwoChoices, RoundRobin, Sticky};

/// The environment variable cluster-core reads the policy name from (Node's
/// `NODE_CLUSTER_SCHED_POLICY`). This crate never reads it itself.
pub const ENV_VAR: &str = "CLUSTER_SCHED_POLICY";

/// The seed [`PowerOfTwoChoices`] gets when built from a name alone
/// ([`SchedulingPolicy::from_str`], [`PolicyKind::build`] with no seed of your
/// own). Any seed is as good as another; pass your own to
/// [`PolicyKind::build_with_seed`] to make primaries differ.
pub const DEFAULT_SEED: u64 = 0x5EED_5C4E_D001_0001;

/// The built-in choices, by name: what `CLUSTER_SCHED_POLICY` may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PolicyKind {
    /// `rr`: [`RoundRobin`], the default (Node's `SCHED_RR`).
    #[default]
    RoundRobin,
    /// `none`: share the listener, the kernel picks (Node's `SCHED_NONE`).
    None,
    /// `sticky`: [`Sticky`].
    Sticky,
    /// `least-conn`: [`LeastConnections`].
    LeastConnections,
    /// `p2c`: [`PowerOfTwoChoices`].
    PowerOfTwoChoices,
}

impl PolicyKind {
    /// Every kind, in the order of the names list.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::RoundRobin,
        PolicyKind::None,
        PolicyKind::Sticky,
        PolicyKind::LeastConnections,
        PolicyKind::PowerOfTwoChoices,
    ];

    /// The kind's name, as parsed: `rr`, `none`, `sticky`, `least-conn`, `p2c`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "rr",
            PolicyKind::None => "none",
            PolicyKind::Sticky => "sticky",
            PolicyKind::LeastConnections => "least-conn",
            PolicyKind::PowerOfTwoChoices => "p2c",
        }
    }

    /// The mode for this kind, seeding [`PowerOfTwoChoices`] with
    /// [`DEFAULT_SEED`].
    pub fn build(self) -> SchedulingPolicy {
        self.build_with_seed(DEFAULT_SEED)
    }

    /// The mode for this kind, seeding [`PowerOfTwoChoices`] with `seed`
    /// (the other kinds use no randomness).
    pub fn build_with_seed(self, seed: u64) -> SchedulingPolicy {
        let policy: Box<dyn Policy> = match self {
            PolicyKind::None => return SchedulingPolicy::None,
            PolicyKind::RoundRobin => Box::new(RoundRobin::new()),
            PolicyKind::Sticky => Box::new(Sticky::new()),
            PolicyKind::LeastConnections => Box::new(LeastConnections::new()),
            PolicyKind::PowerOfTwoChoices => Box::new(PowerOfTwoChoices::with_seed(seed)),
        };
        SchedulingPolicy::Distributed(policy)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = Error;

    /// Parses `rr`, `none`, `sticky`, `least-conn` or `p2c`, ignoring
    /// surrounding whitespace and ASCII case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let name = s.trim();
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::UnknownPolicy {
                input: s.to_owned(),
            })
    }
}

/// How a cluster hands out connections.
///
/// `None` is a mode, not a picker: the primary shares its listening socket
/// with every worker and the kernel decides which worker's `accept` wins.
/// `Distributed` means the primary accepts alone and asks the policy which
/// worker gets each connection.
#[derive(Debug)]
pub enum SchedulingPolicy {
    /// Share the listener; the kernel picks (Node's `SCHED_NONE`).
    None,
    /// The primary accepts and the policy picks (Node's `SCHED_RR` and more).
    Distributed(Box<dyn Policy>),
}

impl SchedulingPolicy {
    /// The policy's name: `none`, or the policy's [`Policy::name`].
    pub fn name(&self) -> &'static str {
        match self {
            SchedulingPolicy::None => PolicyKind::None.as_str(),
            SchedulingPolicy::Distributed(policy) => policy.name(),
        }
    }

    /// The picker, unless the mode is `None`.
    pub fn policy_mut(&mut self) -> Option<&mut dyn Policy> {
        match self {
            SchedulingPolicy::None => None,
            SchedulingPolicy::Distributed(policy) => Some(policy.as_mut()),
        }
    }
}

impl Default for SchedulingPolicy {
    /// Round-robin, as in Node (except on Windows, where Node defaults to none).
    fn default() -> Self {
        PolicyKind::RoundRobin.build()
    }
}

impl FromStr for SchedulingPolicy {
    type Err = Error;

    /// Parses a [`PolicyKind`] name and builds it with [`DEFAULT_SEED`].
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(s.parse::<PolicyKind>()?.build())
    }
}

#[cfg(test)]
mod tests;
