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

/// The uid owning the TCP socket whose own address is `peer` and whose remote address is
/// `local`, as the kernel knows it by address (Linux's sock_diag: one hash lookup, what `ss`
/// asks). None: not found, or no way to ask on this system.
pub fn socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        diag::uid_of(peer, local)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (peer, local);
        None
    }
}

#[cfg(target_os = "linux")]
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
