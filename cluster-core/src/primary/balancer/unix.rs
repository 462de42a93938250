//! What only a Unix-domain stream listener needs in the primary: binding a
//! path (or a Linux abstract name), the stale socket file of a crashed
//! run, the permission bits, and the removal of the file. Everything else
//! (routes, scheduler, accept loop, hand-off, upgrade) is the one path of
//! every listener.
//!
//! - **Stale file.** When the bind finds the path taken (`EADDRINUSE`) and
//!   the path is a socket, the primary connects to it: `ECONNREFUSED` means
//!   nobody listens there (a crashed run left it), so the file is removed and
//!   the bind retried once; anything else (a connection, a full backlog, no
//!   answer within [`PROBE_TIMEOUT`]) means a live server owns it, and the
//!   listen fails with `AddrInUse`. That connect is tokio's: it never blocks
//!   the network thread, and no lock is held meanwhile. Anything that is not
//!   a socket is never removed.
//! - **Removal.** The socket file the cluster owns (it bound it, or an
//!   upgrading primary handed it on as the cluster's) stays for the life of
//!   the cluster — clients wait through a restart as on TCP — and is
//!   removed when the listener closes (shutdown, every slot gave up, the
//!   cluster dropped), but only if the path still names the same file
//!   (device and inode), so a file someone else bound there since is left
//!   alone. After an upgrade the file is the new primary's, and the old one
//!   leaves it. An inherited socket's file is never removed (its owner, e.g.
//!   systemd, created it).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_ipc::{ListenErrorKind, ListenFailure, UnixAddr};

use super::listeners::{failure, failure_of};

/// The longest path or abstract name that fits in `sun_path` (108 bytes on
/// Linux, with a terminating NUL for a path, the leading NUL for a name).
/// The kernel would take a path of 108 bytes without its NUL; `std` does
/// not, and neither do we.
pub(super) const MAX_PATH: usize = 107;

/// How long the check of a socket file in the way waits for its connect.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A socket file the cluster owns: removed when dropped, if the path still
/// names it (and it was not disowned).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    owned: bool,
}

impl SocketFile {
    pub(super) fn of(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            owned: true,
        })
    }

    /// Someone else owns the file now (the new primary of an upgrade):
    /// leave it.
    pub(super) fn disown(mut self) {
        self.owned = false;
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind `addr` (a stale socket file removed first, see the module docs) and
/// set `mode` on a path's file: the listener, non-blocking, and the file
/// the cluster now owns.
pub(super) async fn bind(
    addr: &UnixAddr,
    mode: Option<u32>,
) -> Result<(UnixListener, Option<SocketFile>), ListenFailure> {
    let io = |e: io::Error| failure(&e);
    let too_long = || {
        failure_of(
            ListenErrorKind::PathTooLong,
            "the path does not fit in sun_path",
        )
    };
    match addr {
        UnixAddr::Abstract(name) => {
            if name.len() > MAX_PATH {
                return Err(too_long());
            }
            let listener = bind_abstract(name).map_err(io)?;
            listener.set_nonblocking(true).map_err(io)?;
            Ok((listener, None))
        }
        UnixAddr::Path(bytes) => {
            if bytes.len() > MAX_PATH {
                return Err(too_long());
            }
            let path = Path::new(std::ffi::OsStr::from_bytes(bytes));
            let listener = match UnixListener::bind(path) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale(path).await => {
                    std::fs::remove_file(path).map_err(io)?;
                    UnixListener::bind(path).map_err(io)?
                }
                other => other.map_err(io)?,
            };
            let file = SocketFile::of(path).map_err(io)?;
            if let Some(mode) = mode {
                // On failure the file goes with `file`.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(io)?;
            }
            listener.set_nonblocking(true).map_err(io)?;
            Ok((listener, Some(file)))
        }
    }
}

/// Bind a name in Linux's abstract namespace.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn bind_abstract(name: &[u8]) -> io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    UnixListener::bind_addr(&UnixSocketAddr::from_abstract_name(name)?)
}

/// No abstract namespace here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn bind_abstract(_name: &[u8]) -> io::Result<UnixListener> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Whether `path` is a socket file nobody listens on: a connect to it is
/// refused. A connect that succeeds, finds the backlog full (`EAGAIN`) or
/// takes longer than [`PROBE_TIMEOUT`] says a live server owns it. The
/// connect never blocks the thread.
async fn is_stale(path: &Path) -> bool {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return false;
    }
    let probe = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await;
    matches!(probe, Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// The address a Unix-domain listener is bound to.
pub(super) fn addr_of(listener: &UnixListener) -> Option<UnixAddr> {
    let sa = listener.local_addr().ok()?;
    if let Some(path) = sa.as_pathname() {
        return Some(UnixAddr::Path(path.as_os_str().as_bytes().to_vec()));
    }
    abstract_name(&sa).map(UnixAddr::Abstract)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_name(sa: &UnixSocketAddr) -> Option<Vec<u8>> {
    use std::os::linux::net::SocketAddrExt;
    sa.as_abstract_name().map(<[u8]>::to_vec)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_name(_sa: &UnixSocketAddr) -> Option<Vec<u8>> {
    None
}

#[cfg(test)]
mod tests;
