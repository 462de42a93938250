//! Integration tests of cluster-core: real worker processes (the
//! `cluster-helper` binary of this crate), real signals, every wait bounded
//! in time; the demos (`hello-cluster`, `axum`) as binaries of this crate.

mod demo;
mod drain;
mod faults;
mod flow;
mod guard;
mod handover;
mod lifecycle;
mod listen;
mod messages;
mod operator;
mod ops;
mod orphans;
mod output;
mod reload;
mod role;
mod service;
mod stall;
mod support;
mod unix;
