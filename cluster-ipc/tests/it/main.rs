//! Integration tests of `cluster-ipc`: real socketpairs in one process (the
//! tests across a child process are in `tests-integration`).

mod flow;
mod local;

use std::time::Duration;

/// Bound on every await of these tests.
const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`LIMIT`].
async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the operation did not finish in time")
}
