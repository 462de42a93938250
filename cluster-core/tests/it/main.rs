//! Integration tests of cluster-core: real worker processes (the
//! `cluster-helper` binary), real signals, every wait bounded in time.

// The demos need the HTTP integrations, which cluster-core's
// dev-dependency on itself turns on for its tests.
#[cfg(feature = "hyper")]
mod demo;
#[cfg(all(feature = "hyper", feature = "axum"))]
mod drain;
mod faults;
mod guard;
mod lifecycle;
mod listen;
mod messages;
mod ops;
mod orphans;
mod output;
mod reload;
mod role;
mod service;
mod support;
mod unix;
