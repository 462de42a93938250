//! Unit tests of the primary's Unix-domain binds: the stale file, a live
//! one (also when it accepts nothing and its backlog is full), the removal
//! of only the file the primary created, the `sun_path` limit.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use cluster_ipc::{ListenErrorKind, UnixAddr};

use super::{MAX_PATH, bind};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("procwork-unix-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn addr(path: &std::path::Path) -> UnixAddr {
    UnixAddr::Path(path.as_os_str().as_bytes().to_vec())
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let dir = scratch("stale");
    let path = dir.join("s.sock");
    // Bound and closed: the file stays, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (listener, file) = bind(&addr(&path), None)
        .await
        .expect("the stale file is replaced");
    // Now live: a second bind is refused and leaves it alone.
    let err = bind(&addr(&path), None).await.unwrap_err();
    assert_eq!(err.kind, ListenErrorKind::AddrInUse, "{err:?}");
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    drop((listener, file));
    assert!(!path.exists(), "the file goes with its owner");
}

#[tokio::test]
async fn a_disowned_file_is_left_where_it_is() {
    let dir = scratch("disown");
    let path = dir.join("s.sock");
    let (listener, file) = bind(&addr(&path), None).await.unwrap();
    file.expect("a path's file").disown();
    drop(listener);
    assert!(path.exists(), "another primary owns it now");
}

#[tokio::test]
async fn only_the_file_the_primary_created_is_removed() {
    let dir = scratch("inode");
    let path = dir.join("s.sock");
    let (listener, file) = bind(&addr(&path), Some(0o640)).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // Someone replaced it meanwhile.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"theirs").unwrap();
    drop((listener, file));
    assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
}

#[tokio::test]
async fn the_sun_path_limit_is_107_bytes() {
    let dir = scratch("len");
    let base = dir.as_os_str().len() + 1;
    assert!(base < MAX_PATH, "the scratch directory is too deep");
    let fits = dir.join("x".repeat(MAX_PATH - base));
    assert_eq!(fits.as_os_str().len(), MAX_PATH);
    let (_l, _file) = bind(&addr(&fits), None).await.expect("107 bytes fit");
    let over = dir.join("y".repeat(MAX_PATH - base + 1));
    let err = bind(&addr(&over), None).await.unwrap_err();
    assert_eq!(err.kind, ListenErrorKind::PathTooLong);
    let name = UnixAddr::Abstract(vec![b'n'; MAX_PATH + 1]);
    let err = bind(&name, None).await.unwrap_err();
    assert_eq!(err.kind, ListenErrorKind::PathTooLong);
}
