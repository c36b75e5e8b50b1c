//! After the login: bytes both ways, untouched, until either side closes or both are idle.
//! Plain and TLS upstreams alike, one thread per direction: a TLS session is shared under a
//! lock that is never held while waiting for the network.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use crate::mail::wire::Transport;

/// How often a silent side is checked against the idle limit.
const TICK: Duration = Duration::from_secs(30);

/// Bytes relayed: client to server, server to client.
pub struct Totals {
    pub up: u64,
    pub down: u64,
}

/// Relay between `client` and the authenticated `upstream`, first delivering what each side
/// sent ahead (`to_upstream`: the client pipelined past its login; `to_client`: the server
/// spoke right after it). Ends when a side closes, or neither has sent anything for `idle`.
pub fn run(
    client: TcpStream,
    to_upstream: Vec<u8>,
    upstream: Transport,
    to_client: Vec<u8>,
    idle: Duration,
) -> io::Result<Totals> {
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let touch = {
        let last = Arc::clone(&last);
        move || last.store(start.elapsed().as_secs(), Ordering::Relaxed)
    };
    let idle_for = {
        let last = Arc::clone(&last);
        move || Duration::from_secs(start.elapsed().as_secs() - last.load(Ordering::Relaxed))
    };
    client.set_read_timeout(Some(TICK))?;
    let mut client_w = client.try_clone()?;
    client_w.write_all(&to_client)?;

    match upstream {
        Transport::Plain(up) => {
            up.set_read_timeout(Some(TICK))?;
            let mut up_w = up.try_clone()?;
            up_w.write_all(&to_upstream)?;
            let (touch2, idle2) = (touch.clone(), idle_for.clone());
            let down = spawn_copy(up.try_clone()?, client_w, idle, touch2, idle2, {
                let (client, up) = (client.try_clone()?, up.try_clone()?);
                move || close(&client, &up)
            });
            let upn = copy(&client, &mut up_w, idle, &touch, &idle_for);
            close(&client, &up);
            Ok(Totals {
                up: upn,
                down: down.join().unwrap_or(0),
            })
        }
        Transport::Tls(stream) => {
            let rustls::StreamOwned { conn, sock } = *stream;
            sock.set_read_timeout(Some(TICK))?;
            let conn = Arc::new(Mutex::new(conn));
            let mut sink = TlsWriter {
                conn: Arc::clone(&conn),
                sock: sock.try_clone()?,
            };
            sink.write_all(&to_upstream)?;
            let mut source = TlsReader {
                conn: Arc::clone(&conn),
                sock: sock.try_clone()?,
                raw: vec![0; 16 * 1024],
            };
            let (touch2, idle2) = (touch.clone(), idle_for.clone());
            let down = {
                let (client_r, sock2) = (client.try_clone()?, sock.try_clone()?);
                thread::spawn(move || {
                    let n = copy(&mut source, &mut client_w, idle, &touch2, &idle2);
                    close(&client_r, &sock2);
                    n
                })
            };
            let upn = copy(&client, &mut sink, idle, &touch, &idle_for);
            if let Ok(mut c) = conn.lock() {
                c.send_close_notify();
                let _ = c.write_tls(&mut &sock);
            }
            close(&client, &sock);
            Ok(Totals {
                up: upn,
                down: down.join().unwrap_or(0),
            })
        }
    }
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

fn spawn_copy(
    mut from: TcpStream,
    mut to: TcpStream,
    idle: Duration,
    touch: impl Fn() + Send + 'static,
    idle_for: impl Fn() -> Duration + Send + 'static,
    done: impl FnOnce() + Send + 'static,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let n = copy(&mut from, &mut to, idle, &touch, &idle_for);
        done();
        n
    })
}

/// Copy until end of stream, an error, or `idle` without traffic in either direction.
fn copy(
    mut from: impl Read,
    to: &mut impl Write,
    idle: Duration,
    touch: &impl Fn(),
    idle_for: &impl Fn() -> Duration,
) -> u64 {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0;
    loop {
        match from.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return total;
                }
                total += n as u64;
                touch();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if idle_for() >= idle {
                    return total;
                }
            }
            Err(_) => return total,
        }
    }
}

/// The plaintext side of a TLS session: network bytes are read without the lock, then
/// decrypted under it.
struct TlsReader {
    conn: Arc<Mutex<ClientConnection>>,
    sock: TcpStream,
    raw: Vec<u8>,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut conn = self.conn.lock().map_err(|_| io::ErrorKind::Other)?;
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            let n = self.sock.read(&mut self.raw)?;
            let mut conn = self.conn.lock().map_err(|_| io::ErrorKind::Other)?;
            if n == 0 {
                // The server closed without close_notify: treat it as the end.
                return Ok(0);
            }
            let mut fresh = &self.raw[..n];
            while !fresh.is_empty() {
                conn.read_tls(&mut fresh)?;
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            while conn.wants_write() {
                conn.write_tls(&mut &self.sock)?;
            }
        }
    }
}

/// The sending side of a TLS session: encrypt and send under the lock (sending does not
/// wait on the peer beyond the socket's buffer).
struct TlsWriter {
    conn: Arc<Mutex<ClientConnection>>,
    sock: TcpStream,
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut conn = self.conn.lock().map_err(|_| io::ErrorKind::Other)?;
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
