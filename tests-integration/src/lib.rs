//! The workspace's multi-process tests, with the helper binaries they start
//! (`src/bin/`), kept out of the published crates (tokio's
//! `tests-integration` is the model): `cargo install` of a published crate
//! installs none of them. No library code: the tests are in `tests/`, one
//! binary per crate under test.
