//! Unix-domain stream listeners in the primary: binding a path (or a Linux
//! abstract name) once for every worker that asks for it, the stale socket
//! file of a crashed run, the permission bits, and the removal of the file.
//!
//! - **Stale file.** When the bind finds the path taken (`EADDRINUSE`) and
//!   the path is a socket, the primary connects to it: `ECONNREFUSED` means
//!   nobody listens there (a crashed run left it), so the file is removed and
//!   the bind retried once; a connection that succeeds means a live server
//!   owns it, and the listen fails with `AddrInUse`. Anything that is not a
//!   socket is never removed.
//! - **Removal.** The socket file the primary created is removed when its
//!   listener closes: when the last worker listening there is gone, at
//!   shutdown, and when the cluster is dropped — but only if the path still
//!   names the same file (device and inode), so a file someone else bound
//!   there since is left alone. An inherited socket's file is never removed
//!   (its owner, e.g. systemd, created it).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use cluster_ipc::UnixAddr;

use super::State;

/// The longest path or abstract name that fits in `sun_path` (108 bytes on
/// Linux, with a terminating NUL for a path, the leading NUL for a name).
/// The kernel would take a path of 108 bytes without its NUL; `std` does
/// not, and neither do we.
pub(super) const MAX_PATH: usize = 107;

/// The Unix side of a listener entry.
#[derive(Debug)]
pub(super) struct UnixSide {
    pub(super) addr: UnixAddr,
    /// The socket file this primary created (removed on drop).
    pub(super) _file: Option<SocketFile>,
    /// Bound by this primary, so it may be closed when unused and bound
    /// again later (an inherited socket is kept).
    pub(super) rebindable: bool,
    /// A worker listened here (a fresh listener is not closed before its
    /// first worker's route is in).
    pub(super) used: bool,
}

/// A socket file the primary created: removed when dropped, if the path
/// still names it.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why a Unix-domain bind failed.
#[derive(Debug)]
pub(super) enum UnixBindError {
    /// The path or name does not fit in `sun_path`.
    TooLong,
    /// What the OS said.
    Io(io::Error),
}

impl From<io::Error> for UnixBindError {
    fn from(e: io::Error) -> Self {
        UnixBindError::Io(e)
    }
}

/// Bind `addr` (a stale socket file removed first, see the module docs) and
/// set `mode` on a path's file.
pub(super) fn bind(
    addr: &UnixAddr,
    mode: Option<u32>,
) -> Result<(UnixListener, UnixSide), UnixBindError> {
    match addr {
        UnixAddr::Abstract(name) => {
            if name.len() > MAX_PATH {
                return Err(UnixBindError::TooLong);
            }
            let listener = bind_abstract(name)?;
            listener.set_nonblocking(true)?;
            let side = UnixSide {
                addr: addr.clone(),
                _file: None,
                rebindable: true,
                used: false,
            };
            Ok((listener, side))
        }
        UnixAddr::Path(bytes) => {
            if bytes.len() > MAX_PATH {
                return Err(UnixBindError::TooLong);
            }
            let path = Path::new(std::ffi::OsStr::from_bytes(bytes));
            let listener = match UnixListener::bind(path) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale(path) => {
                    std::fs::remove_file(path)?;
                    UnixListener::bind(path)?
                }
                other => other?,
            };
            let file = SocketFile::of(path)?;
            if let Some(mode) = mode {
                // On failure the file goes with `file`.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            listener.set_nonblocking(true)?;
            let side = UnixSide {
                addr: addr.clone(),
                _file: Some(file),
                rebindable: true,
                used: false,
            };
            Ok((listener, side))
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

/// Whether `path` is a socket file nobody listens on (a connect is
/// refused).
fn is_stale(path: &Path) -> bool {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && UnixStream::connect(path).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
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

/// Close the Unix-domain listeners the primary bound that no worker listens
/// on any more (their socket files go with them); a later listen on the
/// same address binds it again.
pub(super) fn release_unused(st: &mut State) {
    for (idx, entry) in st.listeners.iter_mut().enumerate() {
        let unused = entry.routes.is_empty()
            && entry.unix.as_ref().is_some_and(|u| u.rebindable && u.used)
            && (entry.accept_task.is_some() || entry.shared.is_some());
        if !unused {
            continue;
        }
        if let Some(task) = entry.accept_task.take() {
            task.abort();
        }
        entry.shared = None;
        entry.unix = None;
        st.by_key.retain(|_, i| *i != idx);
    }
}

#[cfg(test)]
mod tests;
