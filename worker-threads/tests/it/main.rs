//! Integration tests of worker-threads: one binary, one module per part.

mod channel;
mod pool;
mod worker;

use std::time::Duration;

/// The bound on any single wait in these tests: generous, because the machine
/// is shared; a test that hits it has failed, not been slow.
const LIMIT: Duration = Duration::from_secs(20);
