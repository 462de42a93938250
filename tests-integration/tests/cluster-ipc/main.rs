//! Integration tests of `cluster-ipc` across a real child process (the
//! `cluster-ipc-peer` helper binary of this crate).

mod child;

use std::time::Duration;

/// Bound on every await of these tests.
const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`LIMIT`].
async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the operation did not finish in time")
}
