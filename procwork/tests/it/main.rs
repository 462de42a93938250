//! procwork's integration tests: the real binary (`CARGO_BIN_EXE_procwork`)
//! running the Node.js and Python example servers (`examples/app.js`,
//! `examples/app.py`), real sockets, signals and processes. They need
//! `node` and `python3` on `PATH`, and fail (never skip) without them.

mod faults;
mod lifecycle;
mod operations;
mod reload;
mod support;
mod upgrade;
