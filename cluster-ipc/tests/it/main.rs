//! Integration tests of `cluster-ipc`: real socketpairs in one process (the
//! tests across a child process are in `tests-integration`).

mod flow;
mod local;

use std::time::Duration;

/// Bound on every await of these tests.
const LIMIT: Duration = Duration::from_secs(20);

/// The bytes a peer that speaks the wire by hand opens with: its
/// handshake frame (process id 2), a cap of 1024.
fn raw_handshake() -> Vec<u8> {
    let mut bytes = Vec::new();
    cluster_ipc::frame::encode_frame(
        &mut bytes,
        cluster_ipc::frame::FrameKind::Handshake,
        &cluster_ipc::Handshake::new(1, 2),
        0,
        1024,
    )
    .expect("a handshake encodes");
    bytes
}

/// Awaits `fut`, failing the test if it takes longer than [`LIMIT`].
async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the operation did not finish in time")
}
