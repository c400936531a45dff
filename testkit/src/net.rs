//! Loopback addresses and free ports for test servers.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A TCP port that was free on `ip` a moment ago (the OS picked it).
///
/// There is a small race between this call and the server binding the port; tests accept it.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A free `127.0.0.1:port` address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)))
}
