//! Who is on the other end of a loopback connection: the kernel's socket table names the user
//! that owns the connecting socket, so the proxy can serve its own user without a password.

use std::net::{IpAddr, SocketAddr};

/// The UID owning the TCP socket at `peer` that is connected to `local`. Asked of the kernel
/// by socket address (sock_diag), which is one hash lookup; the /proc/net tables are the
/// fallback, since the kernel writes out every socket on the machine for each read of them
/// (2-3 ms with a few hundred, on every connection). None: not found, or not Linux.
pub fn uid_of(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (peer, local) = (unmapped(peer), unmapped(local));
    diag::uid_of(peer, local).or_else(|| {
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

#[cfg(target_os = "linux")]
mod diag {
    //! One NETLINK_SOCK_DIAG request for one socket (what `ss` asks, by exact address), per
    //! linux/inet_diag.h.
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    /// nlmsghdr (16) + inet_diag_req_v2 (8 + inet_diag_sockid, 48).
    const REQUEST_LEN: usize = 72;
    /// Offset of `idiag_uid` in a reply: nlmsghdr, 4 bytes of state, the sockid, 3 counters.
    const UID_AT: usize = 16 + 4 + 48 + 12;

    /// The request for the socket whose own address is `src` and remote address `dst`.
    pub fn request(src: SocketAddr, dst: SocketAddr) -> [u8; REQUEST_LEN] {
        let mut m = [0u8; REQUEST_LEN];
        m[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        m[16] = match src.ip() {
            IpAddr::V4(_) => libc::AF_INET,
            IpAddr::V6(_) => libc::AF_INET6,
        } as u8;
        m[17] = libc::IPPROTO_TCP as u8;
        m[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
        m[24..26].copy_from_slice(&src.port().to_be_bytes());
        m[26..28].copy_from_slice(&dst.port().to_be_bytes());
        for (at, ip) in [(28, src.ip()), (44, dst.ip())] {
            match ip {
                IpAddr::V4(v4) => m[at..at + 4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => m[at..at + 16].copy_from_slice(&v6.octets()),
            }
        }
        // No interface; cookie INET_DIAG_NOCOOKIE: any socket with these addresses.
        m[64..72].copy_from_slice(&[0xff; 8]);
        m
    }

    /// The UID in a reply to `request`, if the kernel found the socket.
    pub fn parse_reply(reply: &[u8]) -> Option<u32> {
        let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
        if kind != SOCK_DIAG_BY_FAMILY {
            return None; // NLMSG_ERROR: no such socket (or no sock_diag here)
        }
        Some(u32::from_ne_bytes(
            reply.get(UID_AT..UID_AT + 4)?.try_into().ok()?,
        ))
    }

    pub fn uid_of(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
        // SAFETY: plain socket(2); the descriptor is owned (and closed) by `fd` below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A kernel that never answers must not hold up the session.
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        let msg = request(peer, local);
        let mut reply = [0u8; 512];
        // SAFETY: the pointers and lengths describe live buffers of this function; sending to
        // a zeroed sockaddr_nl addresses the kernel.
        let got = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            let sent = libc::sendto(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            );
            if sent != msg.len() as isize {
                return None;
            }
            libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0)
        };
        let got = usize::try_from(got).ok()?;
        parse_reply(&reply[..got])
    }
}

#[cfg(not(target_os = "linux"))]
mod diag {
    pub fn uid_of(_: std::net::SocketAddr, _: std::net::SocketAddr) -> Option<u32> {
        None
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
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(uid_of(peer, local), Some(me));
        // A port nobody uses is not found.
        let nobody = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(uid_of(nobody, local), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_answers_by_address_without_the_tables() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(host) else {
                continue; // no IPv6 here
            };
            let local = listener.local_addr().unwrap();
            let _client = TcpStream::connect(local).unwrap();
            let (_server_side, peer) = listener.accept().unwrap();
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            assert_eq!(diag::uid_of(peer, local), Some(me), "{host}");
            // The other end of the pair is the listener's side, not the client's.
            let far = SocketAddr::new(peer.ip(), 9);
            assert_eq!(diag::uid_of(far, local), None, "{host}");
        }
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
