//! The `posix_spawn` path (Linux): a child started by `posix_spawn`, a
//! vfork-like clone that shares the parent's memory until `exec`, so the
//! parent's image is never copied, with its descriptors placed by the
//! spawn's file actions; and the pidfd that [`crate::pidfd::Process`]
//! waits on.
//!
//! std takes this path by itself for every spawn that needs no `pre_exec`
//! hook. spawn-core takes it for the spawns that std would fork only
//! because of spawn-core's own options: extra descriptors
//! ([`Command::inherit_fd`](crate::Command::inherit_fd)) and a new session.
//! The file holds every `unsafe` block of the path.
//!
//! Why not `nix::spawn`: as of nix 0.32 its `PosixSpawnFlags` have no
//! `POSIX_SPAWN_SETSID` and its file actions no `addchdir_np`, two of the
//! four things this path exists for (a new session, a working directory),
//! and its `posix_spawn` returns a `Pid` with no pidfd to await it by; the
//! C calls it would wrap are the ones below.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::OnceLock;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Everything a spawn needs, prepared (and allocated) in the parent.
pub(crate) struct Plan {
    /// The program: a path, or a name looked up on the parent's `PATH`.
    pub(crate) program: CString,
    /// Whether `program` is looked up on `PATH` (it has no slash).
    pub(crate) search_path: bool,
    /// `argv`, `argv[0]` first.
    pub(crate) argv: Vec<CString>,
    /// The whole environment of the child, `KEY=value` each.
    pub(crate) envp: Vec<CString>,
    pub(crate) cwd: Option<CString>,
    /// Each source goes to its target number in the child. No source sits
    /// at a number that is a target (see [`Moves`]), so the `dup2`s can run
    /// in any order.
    pub(crate) moves: FdMoves,
    pub(crate) process_group: Option<libc::pid_t>,
    pub(crate) new_session: bool,
}

/// Descriptors for the child: each source to its target number.
pub(crate) type FdMoves = Vec<(OwnedFd, RawFd)>;

/// Builds the descriptor moves of a [`Plan`]: every source is kept at a
/// number that is no target, so no `dup2` of the file actions replaces a
/// source that a later one reads.
pub(crate) struct Moves {
    moves: FdMoves,
    /// Sources that sat at a target number, kept open until the spawn
    /// returned so that the copies made of them land elsewhere.
    held: Vec<OwnedFd>,
}

impl Moves {
    pub(crate) fn new() -> Self {
        Moves {
            moves: Vec::new(),
            held: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, source: OwnedFd, target: RawFd) {
        self.moves.push((source, target));
    }

    /// The moves, each source copied away from every target number, and
    /// the descriptors to hold until the spawn returned.
    pub(crate) fn finish(mut self) -> io::Result<(FdMoves, Vec<OwnedFd>)> {
        let targets: Vec<RawFd> = self.moves.iter().map(|(_, t)| *t).collect();
        for (source, _) in &mut self.moves {
            while targets.contains(&source.as_raw_fd()) {
                let copy = dup_cloexec(source)?;
                self.held.push(std::mem::replace(source, copy));
            }
        }
        Ok((self.moves, self.held))
    }
}

/// A close-on-exec copy of `fd` at the lowest free number from 3.
fn dup_cloexec(fd: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own; on success it
    // returns a new descriptor that nothing else owns.
    unsafe {
        let copy = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
        if copy == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(copy))
    }
}

/// glibc's (2.29 and later) and musl's (1.1.24 and later)
/// `posix_spawn_file_actions_addchdir_np`.
type AddChdir =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> libc::c_int;

/// `posix_spawn_file_actions_addchdir_np`, looked up at run time so that
/// a program linked with this crate still loads on an older C library.
fn addchdir() -> Option<AddChdir> {
    static ADDCHDIR: OnceLock<Option<AddChdir>> = OnceLock::new();
    *ADDCHDIR.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches
        // the objects already loaded.
        let symbol = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addchdir_np".as_ptr(),
            )
        };
        if symbol.is_null() {
            None
        } else {
            // SAFETY: the symbol is the C library's function of that name,
            // whose type is `AddChdir`.
            Some(unsafe { std::mem::transmute::<*mut libc::c_void, AddChdir>(symbol) })
        }
    })
}

/// Whether this path can be taken here: a C library whose `posix_spawn`
/// reports a failed `exec` as its error (glibc from 2.24) and can change
/// the directory (glibc from 2.29, musl from 1.1.24; the presence of
/// `addchdir_np` stands for both), and a kernel with `pidfd_open` (5.3).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| addchdir().is_some() && pidfd_open(std::process::id()).is_ok())
}

/// A pidfd of `pid`, close-on-exec.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags (0) and returns a new
    // descriptor (close-on-exec) that nothing else owns.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

/// Registers a pidfd with the current runtime's reactor, for readability
/// (the child has ended). Panics (inside tokio) outside a runtime or in one
/// without its I/O driver; gives the pidfd back on an error.
pub(crate) fn register(pidfd: OwnedFd) -> Result<AsyncFd<OwnedFd>, (io::Error, OwnedFd)> {
    // SAFETY: an `OwnedFd` is open, owned by the AsyncFd from here on, and
    // its `as_raw_fd` always returns the same number until it is dropped.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }.map_err(|e| {
        let (pidfd, error) = e.into_parts();
        (error, pidfd)
    })
}

/// Turns a `posix_spawn*` return value into a result.
fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code))
    }
}

/// The file actions of one spawn, destroyed on drop.
struct FileActions(MaybeUninit<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new() -> io::Result<Box<Self>> {
        let mut actions = Box::new(FileActions(MaybeUninit::uninit()));
        // SAFETY: init takes a pointer to uninitialised storage that stays
        // in place (boxed) until `Drop` destroys it.
        check(unsafe { libc::posix_spawn_file_actions_init(actions.0.as_mut_ptr()) })?;
        Ok(actions)
    }

    fn as_mut_ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
        self.0.as_mut_ptr()
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised by `new` (a failed init never builds one).
        unsafe {
            libc::posix_spawn_file_actions_destroy(self.0.as_mut_ptr());
        }
    }
}

/// The attributes of one spawn, destroyed on drop.
struct Attributes(MaybeUninit<libc::posix_spawnattr_t>);

impl Attributes {
    fn new() -> io::Result<Box<Self>> {
        let mut attributes = Box::new(Attributes(MaybeUninit::uninit()));
        // SAFETY: as `FileActions::new`.
        check(unsafe { libc::posix_spawnattr_init(attributes.0.as_mut_ptr()) })?;
        Ok(attributes)
    }

    fn as_mut_ptr(&mut self) -> *mut libc::posix_spawnattr_t {
        self.0.as_mut_ptr()
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`.
        unsafe {
            libc::posix_spawnattr_destroy(self.0.as_mut_ptr());
        }
    }
}

/// A null-terminated array of pointers into `strings`, which must outlive
/// its use.
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// Spawns the child of `plan` and returns its pid and a pidfd of it. The
/// child starts as std's do: an empty signal mask and SIGPIPE at its
/// default action. If no pidfd can be had, the child is killed and reaped
/// and the error returned.
pub(crate) fn spawn(plan: &Plan) -> io::Result<(u32, OwnedFd)> {
    let mut actions = FileActions::new()?;
    for (source, target) in &plan.moves {
        // SAFETY: the actions are initialised; both numbers are plain
        // integers, and the source stays open until the spawn returns.
        check(unsafe {
            libc::posix_spawn_file_actions_adddup2(
                actions.as_mut_ptr(),
                source.as_raw_fd(),
                *target,
            )
        })?;
    }
    if let Some(cwd) = &plan.cwd {
        let addchdir = addchdir().ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
        // SAFETY: the actions are initialised; the C library copies the
        // NUL-terminated path.
        check(unsafe { addchdir(actions.as_mut_ptr(), cwd.as_ptr()) })?;
    }
    let mut attributes = Attributes::new()?;
    let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
    // SAFETY: the attributes are initialised; the signal sets are
    // initialised by sigemptyset before they are read, and copied.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        if libc::sigemptyset(set.as_mut_ptr()) == -1 {
            return Err(io::Error::last_os_error());
        }
        check(libc::posix_spawnattr_setsigmask(
            attributes.as_mut_ptr(),
            set.as_ptr(),
        ))?;
        if libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE) == -1 {
            return Err(io::Error::last_os_error());
        }
        check(libc::posix_spawnattr_setsigdefault(
            attributes.as_mut_ptr(),
            set.as_ptr(),
        ))?;
        if plan.new_session {
            flags |= libc::c_int::from(libc::POSIX_SPAWN_SETSID);
        } else if let Some(group) = plan.process_group {
            flags |= libc::POSIX_SPAWN_SETPGROUP;
            check(libc::posix_spawnattr_setpgroup(
                attributes.as_mut_ptr(),
                group,
            ))?;
        }
        // The flags all fit a short (the largest is 0x80).
        check(libc::posix_spawnattr_setflags(
            attributes.as_mut_ptr(),
            flags as libc::c_short,
        ))?;
    }
    let argv = pointers(&plan.argv);
    let envp = pointers(&plan.envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the initialised actions
    // and attributes, and the NUL-terminated strings of `plan`, which
    // outlives the call, in null-terminated arrays.
    check(unsafe {
        if plan.search_path {
            libc::posix_spawnp(
                &mut pid,
                plan.program.as_ptr(),
                actions.as_mut_ptr(),
                attributes.as_mut_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        } else {
            libc::posix_spawn(
                &mut pid,
                plan.program.as_ptr(),
                actions.as_mut_ptr(),
                attributes.as_mut_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        }
    })?;
    // A positive pid, as posix_spawn returned it.
    let pid = pid as u32;
    match pidfd_open(pid) {
        Ok(pidfd) => Ok((pid, pidfd)),
        Err(error) => {
            kill(pid, libc::SIGKILL);
            reap_blocking(pid);
            Err(error)
        }
    }
}

/// Sends `signal` to `pid`, a child of ours not yet reaped.
pub(crate) fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill takes two integers. The pid is our unreaped child, so
    // it names no other process.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Reaps `pid` if it has ended: its status, `None` while it runs.
pub(crate) fn try_reap(pid: u32) -> io::Result<Option<ExitStatus>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into a local.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        match reaped {
            0 => return Ok(None),
            -1 => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            _ => return Ok(Some(ExitStatus::from_raw(status))),
        }
    }
}

/// Waits for `pid` to end and reaps it (a child just sent SIGKILL).
pub(crate) fn reap_blocking(pid: u32) {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into a local.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if reaped != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}
