//! Where a procwork instance keeps its files, so that `procwork run` and
//! the subcommands typed later in the same directory (or with the same
//! `--name`) agree without being told a path.
//!
//! The base directory is `$XDG_RUNTIME_DIR/procwork` when that variable
//! names a directory, otherwise `/tmp/procwork-<uid>`; it must belong to
//! this user and be closed to others (mode 0700), or procwork refuses it.
//! An instance is `--name NAME`, or, without one, the working directory's
//! last component and a hash of its full path (`api-3f2a9c1e`). Its
//! directory holds `control.sock` (mode 0600), `procwork.pid` and the
//! workers' notify sockets (`notify/<worker>`).

#[cfg(test)]
mod tests;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ValueError};

/// The files of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The instance's directory.
    pub dir: PathBuf,
    /// The control socket.
    pub control: PathBuf,
    /// The pid file.
    pub pid_file: PathBuf,
    /// Where the workers' notify sockets are bound.
    pub notify_dir: PathBuf,
}

/// Checks a `--name`: letters, digits, `-`, `_`, `.`, not starting with `.`.
///
/// # Errors
/// [`ValueError::Name`].
pub fn parse_name(text: &str) -> Result<String, ValueError> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(ValueError::Name {
            text: text.to_owned(),
        })
    }
}

/// The instance name for `name`, or for the working directory `cwd`.
pub fn instance_name(name: Option<&str>, cwd: &Path) -> String {
    if let Some(name) = name {
        return name.to_owned();
    }
    let base: String = cwd
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let hash = fnv1a(cwd.as_os_str().as_encoded_bytes());
    format!("{base}-{:08x}", hash as u32)
}

/// FNV-1a, 64 bits: stable across Rust versions (std's hasher is not
/// promised to be), so a new procwork binary finds an old one's files.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The base directory (see the module docs), from the environment.
pub fn base_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() && dir.is_dir() => dir.join("procwork"),
        _ => PathBuf::from(format!("/tmp/procwork-{}", nix::unistd::geteuid())),
    }
}

/// The paths of the instance `name` (or of the working directory), with a
/// control socket given explicitly or not; the pid file is beside the
/// control socket (`<control>.pid` when it was given).
///
/// # Errors
/// [`Error::File`] if the working directory cannot be read.
pub fn resolve(
    name: Option<&str>,
    control: Option<&Path>,
    pid_file: Option<&Path>,
) -> Result<Paths, Error> {
    let cwd = std::env::current_dir().map_err(|source| Error::File {
        what: "could not read the working directory",
        path: PathBuf::from("."),
        source,
    })?;
    let dir = base_dir().join(instance_name(name, &cwd));
    let control_path = control.map_or_else(|| dir.join("control.sock"), Path::to_path_buf);
    let pid_file = match (pid_file, control) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(c)) => {
            let mut p = c.as_os_str().to_owned();
            p.push(".pid");
            PathBuf::from(p)
        }
        (None, None) => dir.join("procwork.pid"),
    };
    Ok(Paths {
        notify_dir: dir.join("notify"),
        dir,
        control: control_path,
        pid_file,
    })
}

/// Creates `dir` (and its parents) as needed, each created directory with
/// mode 0700, and checks the base directory and `dir` belong to this user
/// and are closed to others.
///
/// # Errors
/// [`Error::File`], [`Error::UnsafeRuntimeDir`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::File {
            what: "could not create",
            path: dir.to_owned(),
            source,
        })?;
    let me = nix::unistd::geteuid().as_raw();
    let mut checked = Some(dir);
    // The directory and its parents up to the base directory's.
    let base = base_dir();
    while let Some(d) = checked {
        let meta = std::fs::symlink_metadata(d).map_err(|source| Error::File {
            what: "could not read",
            path: d.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::UnsafeRuntimeDir {
                path: d.to_owned(),
                why: "not a directory",
            });
        }
        if meta.uid() != me {
            return Err(Error::UnsafeRuntimeDir {
                path: d.to_owned(),
                why: "owned by another user",
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::UnsafeRuntimeDir {
                path: d.to_owned(),
                why: "open to other users (want mode 0700)",
            });
        }
        checked = if d == base {
            None
        } else {
            d.parent().filter(|p| p.starts_with(&base))
        };
    }
    Ok(())
}

/// Writes `pid` to `path` atomically (a temporary file renamed over it).
///
/// # Errors
/// [`Error::File`].
pub fn write_pid_file(path: &Path, pid: u32) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| Error::File {
            what: "could not write the pid file",
            path: path.to_owned(),
            source,
        })
}
