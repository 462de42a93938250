//! Integration tests of cluster-core: real worker processes (the
//! `cluster-helper` binary), real signals, every wait bounded in time.

mod demo;
mod guard;
mod lifecycle;
mod listen;
mod messages;
mod orphans;
mod reload;
mod service;
mod support;
