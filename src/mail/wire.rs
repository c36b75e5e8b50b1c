//! Line-based mail protocol connections (IMAP, POP): TCP with timeouts, TLS with rustls and
//! the platform verifier, bounded line reads, and the step lines printed on stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConfig, ServerConnection, StreamOwned};

use crate::config::TlsMode;
use crate::error::server;
use crate::log::printable;
use crate::mail::servers::Server;

/// Every connect, read and write gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// A whole session (greeting to logout) gives up after this long, however the server drips.
pub const SESSION_LIMIT: Duration = Duration::from_secs(60);
/// Greetings, capabilities and refusals are short; a line past this is not one.
pub const MAX_LINE: usize = 64 * 1024;

/// The progress line for a plain-text connection.
pub const NO_TLS: &str = "none (plain text; test servers on this machine only)";

/// Whether `report` prints: on for `check` and `send-test`, whose job it is; off in the proxy
/// unless `--verbose`.
static REPORTING: AtomicBool = AtomicBool::new(true);

pub fn set_reporting(on: bool) {
    REPORTING.store(on, Ordering::Relaxed);
}

/// One line of progress on stderr: `imap  auth     235 2.7.0 Accepted`.
/// The detail often quotes the server, so control characters in it are shown, not obeyed.
pub fn report(proto: &str, what: &str, detail: impl std::fmt::Display) {
    if REPORTING.load(Ordering::Relaxed) {
        eprintln!(
            "{}{proto:<5} {what:<8} {}",
            crate::log::context(),
            printable(&detail.to_string())
        );
    }
}

/// A connection's bytes: plain TCP, or TLS over it (from the start, or after STARTTLS), as
/// the client of a mail server or, in the proxy, as the server for a local mail program.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    ServerTls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::ServerTls(s) => s.read(buf),
        }
    }
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
            Transport::ServerTls(s) => &s.sock,
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
            Transport::ServerTls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
            Transport::ServerTls(s) => s.flush(),
        }
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A connection that reads whole lines and writes whole commands, all within one deadline
/// for the whole session: a server that answers a byte at a time cannot hold it open longer.
pub struct Conn {
    reader: BufReader<Transport>,
    deadline: Instant,
    limit: Duration,
    /// The longest a read waits for a silent peer: `TIMEOUT` for a server; the whole deadline
    /// for a person, who may take minutes at a password prompt.
    silence: Duration,
}

impl Conn {
    pub fn new(transport: Transport) -> Conn {
        Conn::with_deadline(transport, SESSION_LIMIT)
    }

    pub fn with_deadline(transport: Transport, limit: Duration) -> Conn {
        Conn {
            reader: BufReader::new(transport),
            deadline: Instant::now() + limit,
            limit,
            silence: TIMEOUT,
        }
    }

    /// A local mail program's connection to the proxy before login: one deadline for every
    /// read and the TLS handshake, however long a read waits (its user may be typing).
    pub fn for_person(transport: Transport, limit: Duration) -> Conn {
        Conn {
            silence: limit,
            ..Conn::with_deadline(transport, limit)
        }
    }

    /// The deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The peer has sent bytes not read as lines yet (in the buffer, or waiting in the
    /// socket): what a program sent ahead without waiting for an answer.
    pub fn input_waiting(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let tcp = self.reader.get_ref().tcp();
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let waiting = matches!(tcp.peek(&mut [0u8; 1]), Ok(n) if n > 0);
        let _ = tcp.set_nonblocking(false);
        waiting
    }

    /// One line without its CRLF. End of stream is an error: the server hung up.
    /// Before a read that may block: no longer than the session has left (nor `TIMEOUT`), so
    /// the deadline holds for a silent peer too, not only between the bytes of a slow one.
    fn arm(&self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if self.reader.buffer().is_empty() && !left.is_zero() {
            let _ = self
                .reader
                .get_ref()
                .tcp()
                .set_read_timeout(Some(left.min(self.silence)));
        }
        !left.is_zero()
    }

    /// A read that timed out: the session's deadline, or a peer silent for `TIMEOUT`.
    fn silence(&self) -> anyhow::Error {
        if Instant::now() >= self.deadline {
            server(format!(
                "the server did not finish within {} s; giving up",
                self.limit.as_secs()
            ))
        } else {
            server(format!(
                "the server sent nothing for {} s; giving up",
                self.silence.as_secs()
            ))
        }
    }

    pub fn read_line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        loop {
            if !self.arm() {
                return Err(server(format!(
                    "the server did not finish within {} s; giving up",
                    self.limit.as_secs()
                )));
            }
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                // A signal arrived during the read: read again (the deadline still holds).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if timed_out(&e) => return Err(self.silence()),
                Err(e) => return Err(server(format!("reading from the server failed: {e}"))),
            };
            if available.is_empty() {
                if buf.is_empty() {
                    return Err(server("the server closed the connection"));
                }
                break;
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            buf.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            if buf.len() > MAX_LINE {
                return Err(server("the server sent an over-long line"));
            }
            if done {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Exactly `n` bytes (an IMAP literal), within the session's deadline.
    pub fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if !self.arm() {
                return Err(server("the other side did not finish in time; giving up"));
            }
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if timed_out(&e) => return Err(self.silence()),
                Err(e) => return Err(server(format!("reading failed: {e}"))),
            };
            if available.is_empty() {
                return Err(server("the connection closed"));
            }
            let take = available.len().min(n - out.len());
            out.extend_from_slice(&available[..take]);
            self.reader.consume(take);
        }
        Ok(out)
    }

    /// Send one line; CRLF is added here.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        self.write_raw(format!("{line}\r\n").as_bytes())
    }

    /// Send bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| server(format!("writing to the server failed: {e}")))
    }

    /// Switch a plain connection to TLS after the server agreed to STARTTLS. Anything the
    /// server sent after its answer, before the handshake, would be plain text injected into
    /// the secured session (CVE-2011-0411 and kin): that is refused.
    pub fn starttls(self, srv: &Server) -> Result<Conn> {
        if !self.reader.buffer().is_empty() {
            return Err(server(
                "the server sent data right after agreeing to STARTTLS; refusing to go on",
            ));
        }
        let (deadline, limit, silence) = (self.deadline, self.limit, self.silence);
        match self.reader.into_inner() {
            Transport::Plain(tcp) => Ok(Conn {
                reader: BufReader::new(Transport::Tls(Box::new(handshake(srv, tcp)?))),
                deadline,
                limit,
                silence,
            }),
            Transport::Tls(_) | Transport::ServerTls(_) => {
                Err(server("STARTTLS on a connection that is already TLS"))
            }
        }
    }

    /// The transport, and what was read from it but not yet taken as lines: for handing an
    /// authenticated session over to the proxy's relay.
    pub fn into_parts(self) -> (Transport, Vec<u8>) {
        let buffered = self.reader.buffer().to_vec();
        (self.reader.into_inner(), buffered)
    }

    /// The server side of STARTTLS (or of implicit TLS, right after connecting), for the
    /// proxy's local clients; data sent ahead of the handshake is refused, as in `starttls`.
    pub fn accept_tls(self, config: Arc<ServerConfig>) -> Result<Conn> {
        if !self.reader.buffer().is_empty() {
            return Err(server("the client sent data before the TLS handshake"));
        }
        let (deadline, limit, silence) = (self.deadline, self.limit, self.silence);
        let Transport::Plain(mut tcp) = self.reader.into_inner() else {
            return Err(server("TLS on a connection that is already TLS"));
        };
        let mut conn = ServerConnection::new(config).context("cannot start TLS")?;
        // One record at a time, each read bounded by what is left of the deadline: rustls's
        // own `complete_io` loops until the handshake is done, so a client dripping a byte at
        // a time would keep it there for as long as it likes.
        let failed = |e: std::io::Error| server(format!("the local TLS handshake failed: {e}"));
        while conn.is_handshaking() {
            while conn.wants_write() {
                conn.write_tls(&mut tcp).map_err(failed)?;
            }
            if !conn.is_handshaking() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(server(format!(
                    "the local TLS handshake did not finish within {} s",
                    limit.as_secs()
                )));
            }
            tcp.set_read_timeout(Some(left.min(silence)))
                .map_err(failed)?;
            match conn.read_tls(&mut tcp) {
                Ok(0) => return Err(server("the client closed during the TLS handshake")),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(failed(e)),
            }
            if let Err(e) = conn.process_new_packets() {
                // Send the alert that says why, then give up.
                while conn.wants_write() && conn.write_tls(&mut tcp).is_ok() {}
                return Err(server(format!("the local TLS handshake failed: {e}")));
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut tcp).map_err(failed)?;
        }
        Ok(Conn {
            reader: BufReader::new(Transport::ServerTls(Box::new(StreamOwned::new(conn, tcp)))),
            deadline,
            limit,
            silence,
        })
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self.reader.get_ref(), Transport::Plain(_))
    }

    /// What the TLS session is, for the progress lines.
    pub fn tls_summary(&self, host: &str) -> String {
        match self.reader.get_ref() {
            Transport::Plain(_) => NO_TLS.to_string(),
            Transport::ServerTls(_) => "local TLS".to_string(),
            Transport::Tls(tls) => format!(
                "{:?} {:?}, certificate verified for {host}",
                tls.conn
                    .protocol_version()
                    .map_or("?".into(), |v| format!("{v:?}")),
                tls.conn
                    .negotiated_cipher_suite()
                    .map_or("?".into(), |c| format!("{:?}", c.suite())),
            ),
        }
    }
}

/// Connect with timeouts, trying each address the name resolves to.
pub fn connect_tcp(host: &str, port: u16) -> Result<TcpStream> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| server(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, TIMEOUT) {
            Ok(tcp) => {
                tcp.set_read_timeout(Some(TIMEOUT))?;
                tcp.set_write_timeout(Some(TIMEOUT))?;
                // Each command is written whole and then answered: nothing to gain from Nagle.
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(server(match last {
        Some(e) => format!(
            "cannot connect to {host}:{port}: {e}. Check the host, the port and the network."
        ),
        None => format!("{host} has no address"),
    }))
}

/// Open the connection: TCP, then TLS right away when the server wants implicit TLS
/// (STARTTLS is the protocol's business: see `Conn::starttls`). Reports each step.
pub fn open(proto: &str, srv: &Server) -> Result<Conn> {
    let tcp = connect_tcp(&srv.host, srv.port)?;
    report(
        proto,
        "connect",
        format!("connected to {}:{}", srv.host, srv.port),
    );
    let conn = match srv.tls {
        TlsMode::Tls => Conn::new(Transport::Tls(Box::new(handshake(srv, tcp)?))),
        TlsMode::None => Conn::new(Transport::Plain(tcp)),
        TlsMode::Starttls if proto == "smtp" => Conn::new(Transport::Plain(tcp)),
        TlsMode::Starttls => {
            return Err(server(format!(
                "STARTTLS is not supported for {proto}: use implicit TLS"
            )));
        }
    };
    if srv.tls != TlsMode::Starttls {
        report(proto, "tls", conn.tls_summary(&srv.host));
    }
    Ok(conn)
}

/// What a failed handshake means: a certificate this machine does not trust is a setup
/// problem to fix (exit 2), not a server to retry later; anything else may be a port that does
/// not speak TLS from the first byte.
fn tls_failure(host: &str, e: &std::io::Error) -> anyhow::Error {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if certificate {
        crate::error::usage(format!(
            "TLS with {host} failed: {e}. The server's certificate is not trusted here: check \
             the host name, or, for a private CA, set `tls_ca_file` in the account"
        ))
    } else {
        server(format!(
            "TLS with {host} failed: {e}. Is this port TLS from the first byte (993, 995, 465)?"
        ))
    }
}

/// The TLS handshake, finished before any protocol line so its failures read as TLS failures.
pub fn handshake(
    srv: &Server,
    mut tcp: TcpStream,
) -> Result<StreamOwned<ClientConnection, TcpStream>> {
    let host = srv.host.as_str();
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| server(format!("`{host}` is not a valid TLS server name")))?;
    let config = crate::tls::client_config_for(srv.ca_file.as_deref())?;
    let mut conn = ClientConnection::new(config, name).context("cannot start TLS")?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| tls_failure(host, &e))?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn lines_are_bounded_and_stripped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"* OK hi\r\n").unwrap();
            s.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        });
        let mut conn = Conn::new(Transport::Plain(connect_tcp("127.0.0.1", port).unwrap()));
        assert_eq!(conn.read_line().unwrap(), "* OK hi");
        assert!(conn.read_line().is_err());
        t.join().unwrap();
    }

    #[test]
    fn a_server_that_drips_bytes_is_given_up_on_at_the_session_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let start = Instant::now();
            // A byte every 20 ms, never a newline, for at most 10 s.
            while start.elapsed() < Duration::from_secs(10) && s.write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let tcp = connect_tcp("127.0.0.1", port).unwrap();
        let mut conn = Conn::with_deadline(Transport::Plain(tcp), Duration::from_millis(500));
        let started = Instant::now();
        let err = conn.read_line().unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(err.contains("did not finish"), "{err}");
        drop(conn);
        t.join().unwrap();
    }

    /// A TLS server setup with a certificate and key from tests/fixtures.
    fn fixture_server(cert: &str, key: &str) -> Arc<ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let fixture = |n: &str| format!("{}/tests/fixtures/{n}", env!("CARGO_MANIFEST_DIR"));
        let cert = CertificateDer::from_pem_file(fixture(cert)).unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture(key)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        )
    }

    #[test]
    fn an_untrusted_certificate_is_a_setup_problem_not_a_server_one() {
        let config = fixture_server("app-cert.pem", "app-key.pem");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            let _ = conn.complete_io(&mut s);
        });
        let tcp = connect_tcp("127.0.0.1", port).unwrap();
        let err = handshake(&localhost(None), tcp).err().unwrap();
        assert_eq!(
            crate::error::exit_code(&err),
            crate::error::EXIT_USAGE,
            "{err}"
        );
        assert!(err.to_string().contains("not trusted"), "{err}");
        t.join().unwrap();
    }

    fn localhost(ca_file: Option<&str>) -> Server {
        Server {
            host: "localhost".into(),
            port: 993,
            tls: TlsMode::Tls,
            ca_file: ca_file
                .map(|n| format!("{}/tests/fixtures/{n}", env!("CARGO_MANIFEST_DIR")).into()),
        }
    }

    /// A server whose certificate a private CA signed: refused as untrusted, with the setting
    /// that fixes it named; trusted with that CA as the account's `tls_ca_file`.
    #[test]
    fn a_private_ca_is_trusted_through_tls_ca_file() {
        let config = fixture_server("private-server.pem", "private-server-key.pem");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                while conn.is_handshaking() && conn.complete_io(&mut s).is_ok() {}
            }
        });
        let tcp = connect_tcp("127.0.0.1", port).unwrap();
        let err = handshake(&localhost(None), tcp).err().unwrap();
        assert_eq!(
            crate::error::exit_code(&err),
            crate::error::EXIT_USAGE,
            "{err}"
        );
        assert!(err.to_string().contains("tls_ca_file"), "{err}");
        let tcp = connect_tcp("127.0.0.1", port).unwrap();
        handshake(&localhost(Some("private-ca.pem")), tcp).expect("trusted through tls_ca_file");
        t.join().unwrap();
    }

    #[test]
    fn refused_connections_say_where() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = connect_tcp("127.0.0.1", port).unwrap_err().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }

    #[test]
    fn a_server_that_is_not_tls_fails_the_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(b"* OK plain text server\r\n");
        });
        let tcp = connect_tcp("127.0.0.1", port).unwrap();
        let err = handshake(&localhost(None), tcp).err().unwrap().to_string();
        assert!(err.contains("TLS with localhost failed"), "{err}");
        t.join().unwrap();
    }
}
