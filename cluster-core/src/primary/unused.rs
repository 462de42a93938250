//! Sockets the primary holds that no worker listens on: one handed over by
//! socket activation (`LISTEN_FDS`) or by an upgrading primary, or given to
//! `Cluster::inherit_socket`, that no listener took. Its clients would
//! wait for ever, so the primary does not report itself ready while one is
//! left; if one is still unused [`GRACE`] after every slot's worker
//! listens (a worker may listen on a second address a moment after its
//! first), the supervisor reports it (`Event::UnusedSocket`), and
//! `Cluster::run` ends with an error.

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::primary::activation;
use crate::primary::balancer::Balancer;

/// How long after every slot's worker listens an inherited socket may stay
/// unused before it is reported.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// One unused inherited socket: its address (or `fd`), and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unused {
    pub(crate) addr: String,
    pub(crate) name: Option<String>,
}

/// The sockets the primary holds that no listener took: those given to
/// it (`balancer`), then those inherited at start.
pub(crate) fn unused(balancer: &Balancer) -> Vec<Unused> {
    balancer
        .untaken()
        .into_iter()
        .chain(activation::untaken())
        .map(|(name, fd)| Unused {
            addr: describe(fd),
            name,
        })
        .collect()
}

/// A socket's local address: TCP or UDP (`127.0.0.1:3402`), a Unix-domain
/// path or abstract name; `a socket` if it has none that says more.
fn describe(fd: OwnedFd) -> String {
    use std::os::linux::net::SocketAddrExt as _;
    let Ok(dup) = fd.try_clone() else {
        return "a socket".to_owned();
    };
    if let Ok(addr) = std::net::TcpListener::from(dup).local_addr() {
        return addr.to_string();
    }
    match std::os::unix::net::UnixListener::from(fd).local_addr() {
        Ok(addr) => match (addr.as_pathname(), addr.as_abstract_name()) {
            (Some(path), _) => format!("unix:{}", path.display()),
            (None, Some(name)) => format!("unix:@{}", String::from_utf8_lossy(name)),
            (None, None) => "an unnamed Unix-domain socket".to_owned(),
        },
        Err(_) => "a socket".to_owned(),
    }
}
