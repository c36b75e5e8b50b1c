//! Line-based mail protocol connections (IMAP, POP): TCP with timeouts, TLS with rustls and
//! the platform verifier, bounded line reads, and the step lines printed on stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_platform_verifier::BuilderVerifierExt;

use crate::config::TlsMode;
use crate::error::server;
use crate::mail::servers::Server;

/// Every connect, read and write gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// Greetings, capabilities and refusals are short; a line past this is not one.
pub const MAX_LINE: usize = 64 * 1024;

/// The progress line for a plain-text connection.
pub const NO_TLS: &str = "none (plain text; test servers on this machine only)";

/// One line of progress on stderr: `imap  auth     235 2.7.0 Accepted`.
pub fn report(proto: &str, what: &str, detail: impl std::fmt::Display) {
    eprintln!("{proto:<5} {what:<8} {detail}");
}

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A connection that reads whole lines and writes whole commands.
pub struct Conn {
    reader: BufReader<Box<dyn Stream>>,
}

impl Conn {
    pub fn new(stream: Box<dyn Stream>) -> Conn {
        Conn {
            reader: BufReader::new(stream),
        }
    }

    /// One line without its CRLF. End of stream is an error: the server hung up.
    pub fn read_line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| server(format!("reading from the server failed: {e}")))?;
        if n == 0 {
            return Err(server("the server closed the connection"));
        }
        if buf.len() > MAX_LINE {
            return Err(server("the server sent an over-long line"));
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Send one line; CRLF is added here.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let stream = self.reader.get_mut();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|e| server(format!("writing to the server failed: {e}")))
    }
}

/// The rustls client config: ring, the platform's trust store.
pub fn tls_config() -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .with_platform_verifier()
        .context("cannot load the system's trusted certificates")?
        .with_no_client_auth();
    Ok(Arc::new(config))
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

/// Open the connection as the server wants it; reports the connect and TLS steps.
pub fn open(proto: &str, srv: &Server) -> Result<Conn> {
    let tcp = connect_tcp(&srv.host, srv.port)?;
    report(
        proto,
        "connect",
        format!("connected to {}:{}", srv.host, srv.port),
    );
    match srv.tls {
        TlsMode::None => {
            report(proto, "tls", NO_TLS);
            Ok(Conn::new(Box::new(tcp)))
        }
        TlsMode::Tls => {
            let tls = handshake(&srv.host, tcp)?;
            let conn = &tls.conn;
            report(
                proto,
                "tls",
                format!(
                    "{:?} {:?}, certificate verified for {}",
                    conn.protocol_version()
                        .map_or("?".into(), |v| format!("{v:?}")),
                    conn.negotiated_cipher_suite()
                        .map_or("?".into(), |c| format!("{:?}", c.suite())),
                    srv.host
                ),
            );
            Ok(Conn::new(Box::new(tls)))
        }
        TlsMode::Starttls => Err(server(format!(
            "STARTTLS is not supported for {proto}: use implicit TLS"
        ))),
    }
}

/// The TLS handshake, finished before any protocol line so its failures read as TLS failures.
pub fn handshake(
    host: &str,
    mut tcp: TcpStream,
) -> Result<StreamOwned<ClientConnection, TcpStream>> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| server(format!("`{host}` is not a valid TLS server name")))?;
    let mut conn = ClientConnection::new(tls_config()?, name).context("cannot start TLS")?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| {
            server(format!(
                "TLS with {host} failed: {e}. Is this port TLS from the first byte (993, 995, 465)?"
            ))
        })?;
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
        let mut conn = Conn::new(Box::new(connect_tcp("127.0.0.1", port).unwrap()));
        assert_eq!(conn.read_line().unwrap(), "* OK hi");
        assert!(conn.read_line().is_err());
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
        let err = handshake("localhost", tcp).err().unwrap().to_string();
        assert!(err.contains("TLS with localhost failed"), "{err}");
        t.join().unwrap();
    }
}
