//! procwork integration tests.
