//! UDP in the primary: one socket per distinct address (port 0 resolved
//! once), shared by every worker that binds it. There is nothing to hand
//! over for a connectionless socket, whatever the scheduling policy: each
//! worker receives on a duplicate of the same socket and the kernel gives
//! each datagram to one of the readers. The primary keeps its own copy until
//! the cluster shuts down, so the port stays the cluster's across restarts.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::State;
use super::listen_on::{ListenKey, take_udp};

/// The UDP socket found under `key` (an inherited one taken now), as its
/// bound address and a duplicate for the worker; `None` if there is none.
pub(super) fn find(st: &mut State, key: &ListenKey) -> Option<io::Result<(SocketAddr, OwnedFd)>> {
    let socket = match st.udp.get(key) {
        Some(s) => Arc::clone(s),
        None => {
            let (keys, socket) = take_udp(st, key)?;
            let socket = Arc::new(socket);
            for k in keys {
                st.udp.insert(k, Arc::clone(&socket));
            }
            socket
        }
    };
    Some(duplicate(&socket))
}

/// The socket for `addr` (bound now if new), as [`find`] gives it.
pub(super) fn find_or_bind(st: &mut State, addr: SocketAddr) -> io::Result<(SocketAddr, OwnedFd)> {
    if let Some(found) = find(st, &ListenKey::Udp(addr)) {
        return found;
    }
    let socket = UdpSocket::bind(addr)?;
    let real = socket.local_addr()?;
    let socket = Arc::new(socket);
    st.udp.insert(ListenKey::Udp(addr), Arc::clone(&socket));
    st.udp.insert(ListenKey::Udp(real), Arc::clone(&socket));
    duplicate(&socket)
}

fn duplicate(socket: &UdpSocket) -> io::Result<(SocketAddr, OwnedFd)> {
    Ok((socket.local_addr()?, OwnedFd::from(socket.try_clone()?)))
}
