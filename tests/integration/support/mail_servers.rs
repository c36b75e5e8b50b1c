//! Fake mail and HTTP servers on 127.0.0.1 for the `send-test`, `check`, `whoami` and
//! `doctor` tests. Plain std: one thread per connection, one connection per server (but
//! `imap_server_for`), every accept, read and child process bounded in time.
//!
//! Each server reports what it saw through a channel; `Seen::wait` gives up after `WAIT`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::env::{TOKEN, USER};
use super::http::{HttpRequest, read_request};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
pub const WAIT: Duration = Duration::from_secs(30);

/// Google's documented XOAUTH2 error challenge, as JSON.
pub const CHALLENGE_JSON: &str =
    r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;

/// The RFC 7628 initial response `mailtoken` must send to an SMTP server on 127.0.0.1:`port`.
pub fn oauthbearer_line(port: u16) -> String {
    format!(
        "AUTH OAUTHBEARER {}",
        STANDARD.encode(format!(
            "n,a={USER},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {TOKEN}\x01\x01"
        ))
    )
}

pub fn xoauth2(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// What a server saw, handed back to the test.
pub struct Seen<T>(Receiver<T>);

impl<T> Seen<T> {
    pub fn wait(self) -> T {
        self.0
            .recv_timeout(WAIT)
            .expect("the fake server saw no complete session in time")
    }
}

/// Bind, and serve one connection on a thread. The accept itself is bounded.
fn serve<T: Send + 'static>(
    handler: impl FnOnce(TcpStream, &Sender<T>) + Send + 'static,
) -> (u16, Seen<T>) {
    let (port, mut streams) = accept_bounded(1);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        if let Some(stream) = streams.next() {
            handler(stream, &tx);
        }
    });
    (port, Seen(rx))
}

/// A listener on 127.0.0.1, and its first `n` connections as they come (ready for blocking
/// I/O with timeouts); the iterator ends early when `WAIT` passes without them.
fn accept_bounded(n: usize) -> (u16, impl Iterator<Item = TcpStream> + Send) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    let streams = std::iter::from_fn(move || {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                    return Some(stream);
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                Err(_) => return None,
            }
        }
    })
    .take(n);
    (port, streams)
}

struct Lines {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Lines {
    fn new(stream: TcpStream) -> Lines {
        Lines {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// One line without CRLF; None when the client hung up or went quiet.
    fn read(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        }
    }

    fn send(&mut self, text: &str) {
        let _ = self.writer.write_all(format!("{text}\r\n").as_bytes());
    }
}

// ---------------------------------------------------------------------------
// SMTP
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum SmtpMode {
    /// Accept the AUTH line if it is exactly this one (then take a message, if any).
    Accept { auth_line: String },
    /// Accept exactly the OAUTHBEARER line for `USER`/`TOKEN` with host 127.0.0.1 and this
    /// server's port (known only once bound).
    AcceptOauthbearer,
    /// Answer AUTH with a base64 JSON error challenge, then 535.
    Challenge,
    /// Offer no STARTTLS and no AUTH: the client must stop before sending a token.
    NoStarttls,
}

#[derive(Debug, Default)]
pub struct SmtpSession {
    pub commands: Vec<String>,
    pub auth_line: Option<String>,
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
    pub data: Option<String>,
    pub quit: bool,
}

pub fn smtp_server(mode: SmtpMode) -> (u16, Seen<SmtpSession>) {
    serve(move |stream, tx| {
        let mut s = SmtpSession::default();
        let port = stream.local_addr().unwrap().port();
        let mut c = Lines::new(stream);
        c.send("220 fake.smtp.test ESMTP ready");
        while let Some(line) = c.read() {
            s.commands.push(line.clone());
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                match mode {
                    SmtpMode::NoStarttls => c.send("250 fake.smtp.test"),
                    _ => {
                        c.send("250-fake.smtp.test");
                        c.send("250-8BITMIME");
                        c.send("250 AUTH XOAUTH2 OAUTHBEARER");
                    }
                }
            } else if upper.starts_with("AUTH ") {
                s.auth_line = Some(line.clone());
                match &mode {
                    SmtpMode::Accept { auth_line } if *auth_line == line => {
                        c.send("235 2.7.0 Accepted")
                    }
                    SmtpMode::AcceptOauthbearer if line == oauthbearer_line(port) => {
                        c.send("235 2.7.0 Accepted")
                    }
                    SmtpMode::Accept { .. } | SmtpMode::AcceptOauthbearer => {
                        c.send("535 5.7.8 not the expected AUTH line")
                    }
                    SmtpMode::Challenge => {
                        c.send(&format!("334 {}", STANDARD.encode(CHALLENGE_JSON)));
                        let answer = c.read().unwrap_or_default();
                        s.commands.push(answer);
                        c.send("535-5.7.8 Username and Password not accepted.");
                        c.send("535 5.7.8 https://support.example.test/auth");
                    }
                    SmtpMode::NoStarttls => c.send("503 5.5.1 no AUTH here"),
                }
            } else if upper.starts_with("MAIL FROM:") {
                s.mail_from = Some(line[10..].to_string());
                c.send("250 2.1.0 OK");
            } else if upper.starts_with("RCPT TO:") {
                s.rcpt_to.push(line[8..].to_string());
                c.send("250 2.1.5 OK");
            } else if upper == "DATA" {
                c.send("354 go ahead");
                let mut data = String::new();
                while let Some(l) = c.read() {
                    if l == "." {
                        break;
                    }
                    data.push_str(&l);
                    data.push('\n');
                }
                s.data = Some(data);
                c.send("250 2.0.0 OK queued as FAKE123");
            } else if upper == "QUIT" {
                s.quit = true;
                c.send("221 2.0.0 bye");
                break;
            } else {
                c.send("502 5.5.2 not implemented here");
            }
        }
        let _ = tx.send(s);
    })
}

// ---------------------------------------------------------------------------
// IMAP
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct ImapSession {
    pub commands: Vec<String>,
    /// The base64 initial response, however it came (SASL-IR or continuation).
    pub response: Option<String>,
    pub logout: bool,
}

/// `sasl_ir`: advertise SASL-IR and capabilities in the greeting; otherwise the client must
/// ask for CAPABILITY and send the response after a continuation.
pub fn imap_server(expected: String, sasl_ir: bool) -> (u16, Seen<ImapSession>) {
    serve(move |stream, tx| {
        let _ = tx.send(imap_session(stream, &expected, sasl_ir));
    })
}

/// An IMAP server for `n` sessions at once, each on its own thread and answered as
/// `imap_server` answers one; the sessions come back in the order they end.
pub fn imap_server_for(n: usize, expected: String) -> (u16, Receiver<ImapSession>) {
    let (port, streams) = accept_bounded(n);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in streams {
            let (tx, expected) = (tx.clone(), expected.clone());
            thread::spawn(move || {
                let _ = tx.send(imap_session(stream, &expected, true));
            });
        }
    });
    (port, rx)
}

fn imap_session(stream: TcpStream, expected: &str, sasl_ir: bool) -> ImapSession {
    let mut s = ImapSession::default();
    let mut c = Lines::new(stream);
    if sasl_ir {
        c.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake IMAP ready");
    } else {
        c.send("* OK fake IMAP ready");
    }
    while let Some(line) = c.read() {
        s.commands.push(line.clone());
        let mut parts = line.splitn(4, ' ');
        let tag = parts.next().unwrap_or("").to_string();
        let cmd = parts.next().unwrap_or("").to_ascii_uppercase();
        match cmd.as_str() {
            "CAPABILITY" => {
                c.send("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2");
                c.send(&format!("{tag} OK CAPABILITY completed"));
            }
            "AUTHENTICATE" => {
                let _mech = parts.next();
                let response = match parts.next() {
                    Some(ir) => ir.to_string(),
                    None => {
                        c.send("+ ");
                        c.read().unwrap_or_default()
                    }
                };
                s.response = Some(response.clone());
                if response == *expected {
                    c.send(&format!("{tag} OK AUTHENTICATE completed"));
                } else {
                    c.send(&format!("+ {}", STANDARD.encode(CHALLENGE_JSON)));
                    let answer = c.read().unwrap_or_default();
                    s.commands.push(answer);
                    c.send(&format!(
                        "{tag} NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
                    ));
                }
            }
            // Bulk in both directions: the whole command line comes back as a literal.
            "X-ECHO" => {
                c.send(&format!("* X-ECHO {{{}}}", line.len()));
                c.send(&line);
                c.send(&format!("{tag} OK X-ECHO completed"));
            }
            "LOGOUT" => {
                s.logout = true;
                c.send("* BYE fake IMAP logging out");
                c.send(&format!("{tag} OK LOGOUT completed"));
                break;
            }
            _ => c.send(&format!("{tag} BAD unknown command")),
        }
    }
    s
}

/// TLS in front of a plain fake server on `upstream`, with the certificate a private CA
/// signed (tests/fixtures/private-server.pem, for localhost and 127.0.0.1): one connection,
/// decrypted and passed on both ways until either side closes.
pub fn tls_front(upstream: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fixture = |n: &str| format!("{}/tests/fixtures/{n}", env!("CARGO_MANIFEST_DIR"));
    let cert = CertificateDer::from_pem_file(fixture("private-server.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("private-server-key.pem")).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let (port, mut streams) = accept_bounded(1);
    thread::spawn(move || {
        let Some(mut client) = streams.next() else {
            return;
        };
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        // The handshake first, blocking (the accepted socket has IO_TIMEOUT): with the short
        // read timeout of the pump below, a write could meet an unfinished handshake and fail.
        // A client that refuses the certificate ends it here.
        while conn.is_handshaking() {
            if conn.complete_io(&mut client).is_err() {
                return;
            }
        }
        let mut tls = rustls::StreamOwned::new(conn, client);
        let mut plain = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
        let pause = Some(Duration::from_millis(5));
        tls.sock.set_read_timeout(pause).unwrap();
        plain.set_read_timeout(pause).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 16384];
        while Instant::now() < deadline {
            match tls.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if plain.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
            match plain.read(&mut buf) {
                Ok(0) => {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    return;
                }
                Ok(n) => {
                    if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    });
    port
}

// ---------------------------------------------------------------------------
// POP3
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct PopSession {
    pub commands: Vec<String>,
    pub quit: bool,
}

pub fn pop_server(expected: String) -> (u16, Seen<PopSession>) {
    serve(move |stream, tx| {
        let mut s = PopSession::default();
        let mut c = Lines::new(stream);
        c.send("+OK fake POP3 ready");
        while let Some(line) = c.read() {
            s.commands.push(line.clone());
            if line.eq_ignore_ascii_case("AUTH XOAUTH2") {
                c.send("+ ");
                let response = c.read().unwrap_or_default();
                s.commands.push(response.clone());
                if response == expected {
                    c.send("+OK User successfully authenticated.");
                } else {
                    c.send(&format!("+ {}", STANDARD.encode(CHALLENGE_JSON)));
                    s.commands.push(c.read().unwrap_or_default());
                    c.send("-ERR Authentication failure: unknown user name or bad password.");
                }
            } else if line.eq_ignore_ascii_case("QUIT") {
                s.quit = true;
                c.send("+OK bye");
                break;
            } else {
                c.send("-ERR unknown command");
            }
        }
        let _ = tx.send(s);
    })
}

// ---------------------------------------------------------------------------
// HTTP (Graph, userinfo, the token server's clock)
// ---------------------------------------------------------------------------

/// One HTTP request answered with `status`, extra header lines and `body`.
pub fn http_server(
    status: u16,
    extra_headers: Vec<String>,
    body: String,
) -> (u16, Seen<HttpRequest>) {
    serve(move |mut stream, tx| {
        let Ok(Some(req)) = read_request(&mut stream) else {
            return;
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for h in &extra_headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        if req.method != "HEAD" {
            let _ = stream.write_all(body.as_bytes());
        }
        let _ = stream.flush();
        let _ = tx.send(req);
    })
}

/// A hostile server: sends `bytes` on connect, then reads until the client goes (bounded by
/// the socket timeout); reports what it read.
pub fn raw_server(bytes: Vec<u8>) -> (u16, Seen<String>) {
    serve(move |mut stream, tx| {
        let _ = stream.write_all(&bytes);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || got.len() > 1 << 20 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
    })
}
