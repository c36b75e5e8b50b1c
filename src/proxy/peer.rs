//! Who is on the other end of a loopback connection: the kernel's socket table names the user
//! that owns the connecting socket, so the proxy can serve its own user without a password.

use std::net::{IpAddr, SocketAddr};

/// The UID owning the TCP socket at `peer` that is connected to `local`. Asked of the kernel
/// by socket address (`sys::net::socket_owner`), which is one hash lookup; the /proc/net
/// tables are the fallback, since the kernel writes out every socket on the machine for each
/// read of them (2-3 ms with a few hundred, on every connection). None: not found, or no way
/// to ask on this system.
pub fn uid_of(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (peer, local) = (unmapped(peer), unmapped(local));
    crate::sys::net::socket_owner(peer, local).or_else(|| {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .find_map(|table| {
                let text = std::fs::read_to_string(table).ok()?;
                find_uid(&text, peer, local)
            })
    })
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

/// The `uid` column of the row whose local address is `peer` and remote address `local`
/// (the client's socket, seen from the client's side).
pub fn find_uid(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (encode(peer), encode(local));
    table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let (&here, &there, &uid) = (cols.get(1)?, cols.get(2)?, cols.get(7)?);
        (here.eq_ignore_ascii_case(&want_local) && there.eq_ignore_ascii_case(&want_remote))
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// An address as the kernel's table writes it: the IP's 32-bit words in host order (little
/// endian here) as hex, a colon, the port as hex.
fn encode(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => hex_words(&v4.octets()),
        IpAddr::V6(v6) => hex_words(&v6.octets()),
    };
    format!("{ip}:{:04X}", addr.port())
}

fn hex_words(bytes: &[u8]) -> String {
    bytes
        .chunks(4)
        .map(|w| {
            let word = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
            format!("{word:08X}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_kernel_table_row_of_our_own_connection_names_us() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        let local = listener.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(uid_of(peer, local), Some(crate::sys::uid()));
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

    #[test]
    fn rows_are_read_by_address_and_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:D431 0100007F:0477 01 00000000:00000000 00:00000000 00000000  1000        0 1 1 0\n";
        let peer = SocketAddr::from(([127, 0, 0, 1], 0xD431));
        let local = SocketAddr::from(([127, 0, 0, 1], 0x0477));
        if cfg!(target_endian = "little") {
            assert_eq!(find_uid(table, peer, local), Some(1000));
        }
        assert_eq!(find_uid(table, local, peer), None);
    }
}
