//! Who is on the other end of a loopback connection: the system names the user that owns the
//! connecting socket, so the proxy can serve its own user without a password.

use std::net::{IpAddr, SocketAddr};

/// The UID owning the TCP socket at `peer` that is connected to `local`, as the system tells
/// it (`sys::net::socket_owner`). None: not found, or this system does not tell (then the
/// proxy asks every connection for the password).
pub fn uid_of(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    crate::sys::net::socket_owner(unmapped(peer), unmapped(local))
}

/// An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d; its socket is IPv4.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn our_own_connection_is_ours_where_the_system_tells() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        let local = listener.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let known = crate::sys::net::NAMES_PEERS.then(crate::sys::uid);
        assert_eq!(uid_of(peer, local), known);
        // A port nobody uses is not found.
        let nobody = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(uid_of(nobody, local), None);
    }

    #[test]
    fn mapped_addresses_are_looked_up_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1143".parse().unwrap();
        assert_eq!(unmapped(mapped), "127.0.0.1:1143".parse().unwrap());
        let v6: SocketAddr = "[::1]:1143".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}
