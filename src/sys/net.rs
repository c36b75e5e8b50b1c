//! Sockets: waiting on several listeners at once, and asking the kernel which user owns the
//! other end of a loopback connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Wait until one of `fds` can be read (a listener has a connection), a signal comes, or
/// `timeout` passes; which of them can be read, in order. A signal is not an error: the caller
/// looks at why it was woken.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `polled` is a valid array of pollfd for the length given.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, millis) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(polled.iter().map(|p| p.revents != 0).collect())
}

/// Whether `socket_owner` can name anyone on this system. Where it cannot (FreeBSD, which
/// tells an ordinary user nothing of other users' sockets), the proxy needs the local password
/// from every connection, its owner's included.
pub const NAMES_PEERS: bool = cfg!(any(
    all(target_os = "linux", not(mailtoken_portable)),
    target_os = "macos"
));

/// The uid owning the TCP socket whose own address is `peer` and whose remote address is
/// `local`. None: not found, or no way to ask on this system (see `NAMES_PEERS`).
///
/// Linux: asked of the kernel by address (sock_diag, what `ss` asks: one hash lookup), with
/// the /proc/net tables as the fallback, since the kernel writes out every socket on the
/// machine for each read of them (milliseconds with a few hundred, on every connection).
///
/// macOS: a process may read the sockets of its own user's processes (libproc, what `lsof`
/// does); the socket found among them is ours, and one not found belongs to another user or
/// to nobody known: None, so the password is needed.
pub fn socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    #[cfg(all(target_os = "linux", not(mailtoken_portable)))]
    {
        diag::uid_of(peer, local).or_else(|| {
            ["/proc/net/tcp", "/proc/net/tcp6"]
                .iter()
                .find_map(|table| {
                    let text = std::fs::read_to_string(table).ok()?;
                    tables::find_uid(&text, peer, local)
                })
        })
    }
    #[cfg(target_os = "macos")]
    {
        let me = super::uid();
        libproc::among_processes_of(me, peer, local).then_some(me)
    }
    #[cfg(not(any(all(target_os = "linux", not(mailtoken_portable)), target_os = "macos")))]
    {
        let _ = (peer, local);
        None
    }
}

/// macOS's `struct socket_fdinfo` (sys/proc_info.h), read by offset: what PROC_PIDFDSOCKETINFO
/// fills in for one descriptor. The offsets follow from the header's fields and C's natural
/// alignment on both 64-bit architectures: `proc_fileinfo` (24 bytes), then `socket_info`,
/// whose `vinfo_stat` takes 136 bytes, `soi_family` is at 160, `soi_kind` at 232, and the
/// protocol union at 240; in it, `in_sockinfo` has the foreign and local ports (network byte
/// order, in an int) at 0 and 4, `insi_vflag` at 24, and the foreign and local addresses (16
/// bytes each; IPv4 in the last 4) at 32 and 48.
#[cfg(any(target_os = "macos", test))]
mod socket_fdinfo {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    pub const SIZE: usize = 792;
    const PSI: usize = 24;
    const KIND: usize = PSI + 232;
    const PROTO: usize = PSI + 240;
    const FPORT: usize = PROTO;
    const LPORT: usize = PROTO + 4;
    const VFLAG: usize = PROTO + 24;
    const FADDR: usize = PROTO + 32;
    const LADDR: usize = PROTO + 48;
    /// `soi_kind` of a TCP socket, whose union member is `tcp_sockinfo` (an `in_sockinfo`
    /// first).
    const SOCKINFO_TCP: i32 = 2;
    const INI_IPV4: u8 = 1;
    const INI_IPV6: u8 = 2;

    /// Whether `info` describes a TCP socket whose own address is `own` and whose other end
    /// is `other`.
    pub fn is_connection(info: &[u8], own: SocketAddr, other: SocketAddr) -> bool {
        let Some(info) = info.get(..SIZE) else {
            return false;
        };
        let int = |at: usize| i32::from_ne_bytes(info[at..at + 4].try_into().unwrap());
        // The port sits in the int's memory as two bytes in network order.
        let port = |at: usize| u16::from_be_bytes([info[at], info[at + 1]]);
        let addr = |at: usize| -> Option<IpAddr> {
            let bytes: [u8; 16] = info[at..at + 16].try_into().unwrap();
            match info[VFLAG] {
                v if v & INI_IPV4 != 0 => Some(IpAddr::V4(Ipv4Addr::new(
                    bytes[12], bytes[13], bytes[14], bytes[15],
                ))),
                v if v & INI_IPV6 != 0 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
                _ => None,
            }
        };
        int(KIND) == SOCKINFO_TCP
            && port(LPORT) == own.port()
            && port(FPORT) == other.port()
            && addr(LADDR) == Some(own.ip())
            && addr(FADDR) == Some(other.ip())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A socket_fdinfo as macOS fills it for a TCP connection.
        fn filled(vflag: u8, own: SocketAddr, other: SocketAddr) -> Vec<u8> {
            let mut info = vec![0u8; SIZE];
            info[KIND..KIND + 4].copy_from_slice(&SOCKINFO_TCP.to_ne_bytes());
            info[FPORT..FPORT + 2].copy_from_slice(&other.port().to_be_bytes());
            info[LPORT..LPORT + 2].copy_from_slice(&own.port().to_be_bytes());
            info[VFLAG] = vflag;
            for (at, ip) in [(FADDR, other.ip()), (LADDR, own.ip())] {
                match ip {
                    IpAddr::V4(v4) => info[at + 12..at + 16].copy_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => info[at..at + 16].copy_from_slice(&v6.octets()),
                }
            }
            info
        }

        #[test]
        fn a_connection_is_known_by_both_its_ends() {
            let client: SocketAddr = "127.0.0.1:50123".parse().unwrap();
            let proxy: SocketAddr = "127.0.0.1:1143".parse().unwrap();
            let info = filled(INI_IPV4, client, proxy);
            assert!(is_connection(&info, client, proxy));
            // The proxy's own end of it is another socket.
            assert!(!is_connection(&info, proxy, client));
            assert!(!is_connection(
                &info,
                client,
                "127.0.0.1:1144".parse().unwrap()
            ));
            assert!(!is_connection(
                &info,
                "127.0.0.2:50123".parse().unwrap(),
                proxy
            ));
            assert!(!is_connection(&info[..SIZE - 1], client, proxy));
            let mut udp = info.clone();
            udp[KIND] = 1;
            assert!(!is_connection(&udp, client, proxy));
            let (c6, p6) = (
                "[::1]:50123".parse().unwrap(),
                "[::1]:1143".parse().unwrap(),
            );
            // A socket marked IPv4 (a dual-stack one talking IPv4) is read as IPv4.
            assert!(!is_connection(&filled(INI_IPV6 | INI_IPV4, c6, p6), c6, p6));
            assert!(is_connection(&filled(INI_IPV6, c6, p6), c6, p6));
        }
    }
}

/// The calls that list a user's processes, their descriptors, and a socket's addresses.
#[cfg(target_os = "macos")]
mod libproc {
    use std::net::SocketAddr;

    /// From sys/proc_info.h (the libc crate does not have them).
    const PROC_UID_ONLY: u32 = 4;
    const PROC_PIDFDSOCKETINFO: libc::c_int = 3;

    /// More processes or descriptors than this and the rest are not looked at: the socket is
    /// then not found, which asks for the password (the safe answer).
    const MAX_ENTRIES: usize = 1 << 16;

    /// Whether the TCP socket with own address `peer` and other end `local` belongs to a
    /// process of `uid` (this proxy's user).
    pub fn among_processes_of(uid: u32, peer: SocketAddr, local: SocketAddr) -> bool {
        pids_of(uid).into_iter().filter(|&pid| pid > 0).any(|pid| {
            sockets_of(pid).into_iter().any(|fd| {
                let mut info = [0u64; super::socket_fdinfo::SIZE / 8];
                // SAFETY: the buffer is valid for its length in bytes; the kernel writes at most
                // that much and says how much it wrote.
                let got = unsafe {
                    libc::proc_pidfdinfo(
                        pid,
                        fd,
                        PROC_PIDFDSOCKETINFO,
                        info.as_mut_ptr().cast(),
                        super::socket_fdinfo::SIZE as libc::c_int,
                    )
                };
                let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
                usize::try_from(got).is_ok_and(|n| n == super::socket_fdinfo::SIZE)
                    && super::socket_fdinfo::is_connection(&bytes, peer, local)
            })
        })
    }

    /// A list the kernel fills into a buffer of `T`, grown until it is not full.
    fn listed<T: Copy + Default>(
        mut fill: impl FnMut(*mut T, libc::c_int) -> libc::c_int,
    ) -> Vec<T> {
        let mut room = 1024;
        while room <= MAX_ENTRIES {
            let mut buf = vec![T::default(); room];
            let bytes = room * std::mem::size_of::<T>();
            let got = fill(
                buf.as_mut_ptr(),
                libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
            );
            let Ok(got) = usize::try_from(got) else {
                return Vec::new();
            };
            if got < bytes {
                buf.truncate(got / std::mem::size_of::<T>());
                return buf;
            }
            room *= 4;
        }
        Vec::new()
    }

    fn pids_of(uid: u32) -> Vec<libc::c_int> {
        // SAFETY: the kernel writes at most `len` bytes into the buffer it is given.
        listed(|buf: *mut libc::c_int, len| unsafe {
            libc::proc_listpids(PROC_UID_ONLY, uid, buf.cast(), len)
        })
    }

    /// The socket descriptors of process `pid`.
    fn sockets_of(pid: libc::c_int) -> Vec<libc::c_int> {
        #[derive(Clone, Copy, Default)]
        #[repr(C)]
        struct FdInfo {
            fd: i32,
            kind: u32,
        }
        // SAFETY: as above; `FdInfo` is `struct proc_fdinfo`.
        let fds: Vec<FdInfo> = listed(|buf: *mut FdInfo, len| unsafe {
            libc::proc_pidinfo(pid, libc::PROC_PIDLISTFDS, 0, buf.cast(), len)
        });
        fds.into_iter()
            .filter(|f| f.kind == libc::PROX_FDTYPE_SOCKET as u32)
            .map(|f| f.fd)
            .collect()
    }
}

#[cfg(all(target_os = "linux", not(mailtoken_portable)))]
mod tables {
    //! The rows of /proc/net/tcp and tcp6.
    use std::net::{IpAddr, SocketAddr};

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
}

#[cfg(all(target_os = "linux", not(mailtoken_portable)))]
mod diag {
    //! One NETLINK_SOCK_DIAG request for one socket, by exact address, per linux/inet_diag.h.
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    /// nlmsghdr (16) + inet_diag_req_v2 (8 + inet_diag_sockid, 48).
    const REQUEST_LEN: usize = 72;
    /// Offset of `idiag_uid` in a reply: nlmsghdr, 4 bytes of state, the sockid, 3 counters.
    const UID_AT: usize = 16 + 4 + 48 + 12;

    /// The request for the socket whose own address is `src` and remote address `dst`.
    fn request(src: SocketAddr, dst: SocketAddr) -> [u8; REQUEST_LEN] {
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
    fn parse_reply(reply: &[u8]) -> Option<u32> {
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

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::net::{TcpListener, TcpStream};

        #[test]
        fn the_kernel_answers_by_address_without_the_tables() {
            for host in ["127.0.0.1:0", "[::1]:0"] {
                let Ok(listener) = TcpListener::bind(host) else {
                    continue; // no IPv6 here
                };
                let local = listener.local_addr().unwrap();
                let _client = TcpStream::connect(local).unwrap();
                let (_server_side, peer) = listener.accept().unwrap();
                assert_eq!(uid_of(peer, local), Some(crate::sys::uid()), "{host}");
                // The other end of the pair is the listener's side, not the client's.
                let far = SocketAddr::new(peer.ip(), 9);
                assert_eq!(uid_of(far, local), None, "{host}");
            }
        }

        #[test]
        fn a_reply_that_is_an_error_names_nobody() {
            let mut error = [0u8; 36];
            error[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
            assert_eq!(parse_reply(&error), None);
            assert_eq!(parse_reply(&[0u8; 3]), None);
            let req = request(
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            );
            assert_eq!(&req[24..28], &[0, 1, 0, 2]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_listener_with_a_connection_waiting_is_readable() {
        let idle = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(busy.local_addr().unwrap()).unwrap();
        use std::os::fd::AsFd;
        let ready = wait_readable(&[idle.as_fd(), busy.as_fd()], Duration::from_secs(5)).unwrap();
        assert_eq!(ready, vec![false, true]);
        let ready = wait_readable(&[idle.as_fd()], Duration::from_millis(10)).unwrap();
        assert_eq!(ready, vec![false]);
    }
}
