//! After the login: bytes both ways, untouched, until either side closes or both are idle.
//! Each side is plain TCP or TLS (the real server's, or the proxy's own for a local client);
//! one thread per direction. A TLS session is shared under a lock that is never held while
//! waiting to read from the network (a send may wait under it for room in the socket buffer).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::Connection;

use crate::mail::wire::Transport;

/// How often a silent side is checked against the idle limit.
const TICK: Duration = Duration::from_secs(30);

/// Bytes relayed: client to server, server to client.
pub struct Totals {
    pub up: u64,
    pub down: u64,
}

/// One end of the relay: its socket, and its TLS session if it has one.
struct Side {
    sock: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
}

impl Side {
    fn new(transport: Transport) -> io::Result<Side> {
        let (sock, tls) = match transport {
            Transport::Plain(sock) => (sock, None),
            Transport::Tls(s) => {
                let rustls::StreamOwned { conn, sock } = *s;
                (sock, Some(Connection::from(conn)))
            }
            Transport::ServerTls(s) => {
                let rustls::StreamOwned { conn, sock } = *s;
                (sock, Some(Connection::from(conn)))
            }
        };
        sock.set_read_timeout(Some(TICK))?;
        sock.set_write_timeout(Some(TICK))?;
        // A relay forwards what it gets at once: Nagle's wait for an ACK (which the peer may
        // delay 40 ms) would only add latency to every small reply.
        sock.set_nodelay(true)?;
        Ok(Side {
            sock,
            tls: tls.map(|c| Arc::new(Mutex::new(c))),
        })
    }

    fn reader(&self) -> io::Result<SideReader> {
        Ok(SideReader {
            sock: self.sock.try_clone()?,
            tls: self.tls.clone(),
            raw: vec![0; 64 * 1024],
            fed: 0,
            got: 0,
        })
    }

    fn writer(&self) -> io::Result<SideWriter> {
        Ok(SideWriter {
            sock: self.sock.try_clone()?,
            tls: self.tls.clone(),
        })
    }

    /// Say goodbye properly on TLS, then close both ways so the other thread's read ends.
    fn close(&self) {
        if let Some(tls) = &self.tls
            && let Ok(mut conn) = tls.lock()
        {
            conn.send_close_notify();
            let _ = conn.write_tls(&mut &self.sock);
        }
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// Relay between the `client` and the authenticated `upstream`, first delivering what each
/// side sent ahead (`to_upstream`: the client pipelined past its login; `to_client`: the
/// server spoke right after it). Ends when a side closes, or neither has sent anything for
/// `idle`.
pub fn run(
    client: Transport,
    to_upstream: Vec<u8>,
    upstream: Transport,
    to_client: Vec<u8>,
    idle: Duration,
) -> io::Result<Totals> {
    let (client, upstream) = (Arc::new(Side::new(client)?), Arc::new(Side::new(upstream)?));
    client.writer()?.write_all(&to_client)?;
    upstream.writer()?.write_all(&to_upstream)?;
    let clock = Arc::new(Clock::new());
    let down = {
        let (from, to, clock) = (upstream.reader()?, client.writer()?, Arc::clone(&clock));
        let (client, upstream) = (Arc::clone(&client), Arc::clone(&upstream));
        // A thread that cannot be had ends this session (both sides closed on return), not
        // the proxy.
        thread::Builder::new().spawn(move || {
            let n = copy(from, to, idle, &clock);
            client.close();
            upstream.close();
            n
        })?
    };
    let up = copy(client.reader()?, upstream.writer()?, idle, &clock);
    upstream.close();
    client.close();
    Ok(Totals {
        up,
        down: down.join().unwrap_or(0),
    })
}

/// When either direction last moved a byte.
struct Clock {
    start: Instant,
    last: AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_secs(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_secs();
        Duration::from_secs(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// Copy until end of stream, an error, or `idle` without traffic in either direction.
fn copy(mut from: impl Read, mut to: impl Write, idle: Duration, clock: &Clock) -> u64 {
    // Large reads: a FETCH of big messages moves megabytes, and each read is a wake-up.
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        match from.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return total;
                }
                total += n as u64;
                clock.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if clock.idle_for() >= idle {
                    return total;
                }
            }
            Err(_) => return total,
        }
    }
}

/// Plaintext from a side: network bytes are read without the lock, then decrypted under it.
/// rustls holds at most 16 KiB of decrypted text, so bytes read from the network wait in
/// `raw[fed..got]` and are fed only as the plaintext before them is handed on: a large FETCH
/// or APPEND arrives in reads far bigger than that.
struct SideReader {
    sock: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    raw: Vec<u8>,
    fed: usize,
    got: usize,
}

fn poisoned() -> io::Error {
    io::Error::other("a relay thread failed")
}

impl Read for SideReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.sock.read(buf);
        };
        loop {
            {
                let mut conn = tls.lock().map_err(|_| poisoned())?;
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.fed < self.got {
                    // The plaintext buffer is empty now, so rustls takes bytes; none means
                    // the peer said close_notify.
                    match conn.read_tls(&mut &self.raw[self.fed..self.got])? {
                        0 => return Ok(0),
                        n => self.fed += n,
                    }
                    conn.process_new_packets().map_err(io::Error::other)?;
                    while conn.wants_write() {
                        conn.write_tls(&mut &self.sock)?;
                    }
                    continue;
                }
            }
            let n = self.sock.read(&mut self.raw)?;
            if n == 0 {
                // Closed without close_notify: the end all the same.
                return Ok(0);
            }
            (self.fed, self.got) = (0, n);
        }
    }
}

/// Plaintext to a side: encrypted and sent under the lock (sending waits on the socket's
/// buffer only).
struct SideWriter {
    sock: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
}

impl Write for SideWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.sock.write(buf);
        };
        let mut conn = tls.lock().map_err(|_| poisoned())?;
        let n = conn.writer().write(buf)?;
        while conn.wants_write() {
            conn.write_tls(&mut &self.sock)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
