//! `mailtoken proxy`: local IMAP, POP and SMTP listeners for mail programs that can only send
//! a password. A program logs in with the account's user name; the proxy gets the account's
//! token the way `mailtoken token` does (same store, same lock), logs in to the real server
//! with XOAUTH2 or OAUTHBEARER, answers the program with success, and relays bytes both ways.
//!
//! One thread per session, each with a deadline before login and an idle limit after: a slow
//! or hostile client holds up nothing but itself. The protocol front ends are imap.rs, pop.rs
//! and smtp.rs; who may log in is decided in `Gate`.

pub mod imap;
mod password;
pub mod peer;
mod pop;
mod relay;
mod smtp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::config::{Config, OpenAccount, Paths, ProxySettings, Want};
use crate::error::{self, Kind, usage};
use crate::log::printable;
use crate::mail::servers::Server;
use crate::mail::wire::{Conn, Transport};
use crate::provider::Service;

pub use password::hash as hash_password;

/// Time a client has to log in, from connecting, unless `[proxy] login_timeout` says.
const PRE_AUTH: Duration = Duration::from_secs(60);
/// The longest `login_timeout` allowed: a connection that has not logged in holds a thread.
const MAX_PRE_AUTH: u64 = 600;
/// Sessions served at once; more are turned away with a temporary failure.
const MAX_SESSIONS: usize = 256;
/// After login: IMAP IDLE is renewed every 29 minutes by well-behaved clients.
const IDLE_LIMIT: Duration = Duration::from_secs(31 * 60);
/// Failed local logins from one address before it must wait.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long sessions may go on after SIGTERM before the proxy exits anyway.
const GRACE: Duration = Duration::from_secs(10);

/// Set by SIGTERM/SIGINT: stop accepting, let sessions finish.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Run every listener of `[proxy]` until SIGTERM or SIGINT.
pub fn run(paths: &Paths) -> Result<()> {
    let config = Config::load(&paths.config)?;
    let settings = config.proxy.clone().ok_or_else(|| {
        usage(format!(
            "{} has no [proxy] section: add one with the addresses to listen on, e.g.\n  \
             [proxy]\n  imap = \"127.0.0.1:1143\"\n  smtp = \"127.0.0.1:1587\"",
            paths.config.display()
        ))
    })?;
    let tls = local_tls(&settings)?;
    if let Some(secs) = settings.login_timeout
        && !(1..=MAX_PRE_AUTH).contains(&secs)
    {
        bail!(usage(format!(
            "[proxy] login_timeout = {secs}: give the seconds a client has to log in, 1 to {MAX_PRE_AUTH}"
        )));
    }
    let listeners = bind(&settings, tls.is_some())?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
    }
    crate::mail::wire::set_reporting(crate::log::verbose());
    let gate = Arc::new(Gate::new(paths.clone(), settings, tls));
    let active = Arc::new(AtomicUsize::new(0));
    for (kind, listener) in &listeners {
        eprintln!(
            "mailtoken proxy: {}{} on {}",
            kind.service.name(),
            if kind.implicit_tls { " (TLS)" } else { "" },
            listener.local_addr()?
        );
    }
    // Wait on every listener at once: a connection is accepted the moment it arrives, and
    // SIGTERM (which interrupts the wait) is noticed within the poll's timeout.
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|(_, l)| libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(l),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !STOP.load(Ordering::SeqCst) {
        // SAFETY: `fds` is a valid array of pollfd for the length given.
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 250);
        }
        for (fd, (kind, listener)) in fds.iter_mut().zip(&listeners) {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            match listener.accept() {
                Ok((stream, peer)) => start_session(*kind, stream, peer, &gate, &active),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("mailtoken proxy: accept failed: {e}"),
            }
        }
    }
    drop(listeners);
    let until = Instant::now() + GRACE;
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "mailtoken proxy: stopped ({} session(s) still open were closed)",
        active.load(Ordering::SeqCst)
    );
    Ok(())
}

/// A listener: the protocol, and whether TLS starts with the first byte.
#[derive(Clone, Copy)]
struct Listener {
    service: Service,
    implicit_tls: bool,
}

/// Bind each configured listener. Loopback addresses always; another address only with local
/// TLS and a local password (a scanner on the office network, say), since there the kernel
/// cannot vouch for the user and the password would cross the network.
fn bind(settings: &ProxySettings, tls: bool) -> Result<Vec<(Listener, TcpListener)>> {
    let mut out = Vec::new();
    for (key, service, implicit_tls, addr) in [
        ("imap", Service::Imap, false, &settings.imap),
        ("pop", Service::Pop, false, &settings.pop),
        ("smtp", Service::Smtp, false, &settings.smtp),
        ("imaps", Service::Imap, true, &settings.imaps),
        ("pops", Service::Pop, true, &settings.pops),
        ("smtps", Service::Smtp, true, &settings.smtps),
    ] {
        let Some(addr) = addr else { continue };
        let parsed: SocketAddr = addr.parse().map_err(|_| {
            usage(format!(
                "[proxy] {key} = \"{addr}\" is not an address and port like \"127.0.0.1:1143\""
            ))
        })?;
        if implicit_tls && !tls {
            bail!(usage(format!(
                "[proxy] {key} needs tls_certificate and tls_key"
            )));
        }
        let guarded = tls && settings.password_hash.is_some();
        if !parsed.ip().is_loopback() && !guarded {
            bail!(usage(format!(
                "[proxy] {key} = \"{addr}\" is not on this machine: listening on the network \
                 needs local TLS (tls_certificate, tls_key) and a local password (password_hash), \
                 or the mailbox would be open to anyone who can connect"
            )));
        }
        let listener = TcpListener::bind(parsed)
            .with_context(|| format!("cannot listen on {addr} for {key}"))?;
        listener.set_nonblocking(true)?;
        out.push((
            Listener {
                service,
                implicit_tls,
            },
            listener,
        ));
    }
    if out.is_empty() {
        return Err(usage(
            "[proxy] names no listener: set imap, pop and/or smtp to an address like \"127.0.0.1:1143\"",
        ));
    }
    Ok(out)
}

/// The local TLS configuration from `tls_certificate` and `tls_key`, if set.
fn local_tls(settings: &ProxySettings) -> Result<Option<Arc<rustls::ServerConfig>>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&settings.tls_certificate, &settings.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => bail!(usage(
            "[proxy] tls_certificate and tls_key go together: set both"
        )),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| usage(format!("[proxy] tls_certificate {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| usage(format!("[proxy] tls_key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            usage(format!(
                "[proxy] the TLS certificate and key do not go together: {e}"
            ))
        })?;
    Ok(Some(Arc::new(config)))
}

fn start_session(
    kind: Listener,
    stream: TcpStream,
    peer: SocketAddr,
    gate: &Arc<Gate>,
    active: &Arc<AtomicUsize>,
) {
    if active.load(Ordering::SeqCst) >= MAX_SESSIONS {
        drop(stream);
        return;
    }
    active.fetch_add(1, Ordering::SeqCst);
    let (gate, active) = (Arc::clone(gate), Arc::clone(active));
    thread::spawn(move || {
        let started = Instant::now();
        let outcome = session(kind, stream, peer, &gate);
        active.fetch_sub(1, Ordering::SeqCst);
        eprintln!(
            "mailtoken proxy: {} {peer}: {} ({:.1} s)",
            kind.service.name(),
            printable(&outcome),
            started.elapsed().as_secs_f64()
        );
    });
}

/// One session, start to end; what happened, for the log line (never a secret).
fn session(kind: Listener, stream: TcpStream, peer: SocketAddr, gate: &Gate) -> String {
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => return format!("no local address: {e}"),
    };
    let same_user = peer::uid_of(peer, local) == Some(gate.me);
    let _ = stream.set_read_timeout(Some(crate::mail::wire::TIMEOUT));
    let _ = stream.set_write_timeout(Some(crate::mail::wire::TIMEOUT));
    let _ = stream.set_nodelay(true);
    let pre_auth = gate
        .settings
        .login_timeout
        .map_or(PRE_AUTH, Duration::from_secs);
    let mut conn = Conn::with_deadline(Transport::Plain(stream), pre_auth);
    if kind.implicit_tls {
        let Some(tls) = gate.tls.clone() else {
            return "no local TLS configured".into();
        };
        conn = match conn.accept_tls(tls) {
            Ok(conn) => conn,
            Err(e) => return format!("{e:#}"),
        };
    }
    let caller = Caller {
        ip: peer.ip(),
        same_user,
        // Off this machine, nothing but TLS carries a password.
        needs_tls: !local.ip().is_loopback(),
    };
    let login = match kind.service {
        Service::Imap => imap::front(conn, &caller, gate),
        Service::Pop => pop::front(conn, &caller, gate),
        Service::Smtp => smtp::front(conn, &caller, gate),
    };
    let Some(done) = login else {
        return "closed before logging in".into();
    };
    let (client, to_upstream) = done.client.into_parts();
    let (upstream, to_client) = done.upstream.into_parts();
    match relay::run(client, to_upstream, upstream, to_client, IDLE_LIMIT) {
        Ok(t) => format!(
            "{}: logged in; {} bytes up, {} bytes down",
            done.account, t.up, t.down
        ),
        Err(e) => format!("{}: logged in; relay ended: {e}", done.account),
    }
}

/// Who connected: their address, and whether the kernel says they are the proxy's own user.
pub struct Caller {
    pub ip: IpAddr,
    pub same_user: bool,
    /// The listener is on the network: no login before TLS.
    pub needs_tls: bool,
}

/// A finished login: both connections, ready for the relay.
pub struct LoggedIn {
    pub account: String,
    pub client: Conn,
    pub upstream: Conn,
}

/// Why a local login was not let through, worded for the mail program's user.
pub enum Denied {
    /// No such account, a wrong local password, or another user without one: a password
    /// error to the client.
    Credentials(String),
    /// The stored login is gone or refused: the person must run `mailtoken login`.
    LoginNeeded(String),
    /// The real server or the token server cannot be reached: try later.
    Unavailable(String),
}

impl Denied {
    pub fn text(&self) -> &str {
        match self {
            Denied::Credentials(t) | Denied::LoginNeeded(t) | Denied::Unavailable(t) => t,
        }
    }
}

/// The end of a login attempt in any front end: on success answer `ok` and hand both
/// connections over; on a refusal answer with the protocol's words for it and give the
/// connection back, for the client to try again.
fn conclude(
    mut conn: Conn,
    outcome: std::result::Result<(String, Conn), Denied>,
    ok: &str,
    refusal: impl Fn(&Denied) -> String,
) -> std::result::Result<LoggedIn, Conn> {
    match outcome {
        Ok((account, upstream)) => match conn.write_line(ok) {
            Ok(()) => Ok(LoggedIn {
                account,
                client: conn,
                upstream,
            }),
            Err(_) => Err(conn),
        },
        Err(denied) => {
            let _ = conn.write_line(&refusal(&denied));
            Err(conn)
        }
    }
}

/// Who may log in, and the way to the real server.
pub struct Gate {
    paths: Paths,
    settings: ProxySettings,
    /// Local TLS, for STARTTLS and the implicit-TLS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    me: u32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Gate {
    fn new(paths: Paths, settings: ProxySettings, tls: Option<Arc<rustls::ServerConfig>>) -> Gate {
        Gate {
            paths,
            settings,
            tls,
            // SAFETY: geteuid has no preconditions and cannot fail.
            me: unsafe { libc::geteuid() },
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Check the local credentials, get the account's token, and log in to its real server.
    pub fn login(
        &self,
        caller: &Caller,
        user: &str,
        password: &str,
        service: Service,
    ) -> std::result::Result<(String, Conn), Denied> {
        self.admit(caller, password)?;
        // The config is read at each login, so edits apply without a restart.
        let config = Config::load(&self.paths.config)
            .map_err(|e| Denied::Unavailable(format!("mailtoken's config: {e:#}")))?;
        let name = config.account_for_login(user).ok_or_else(|| {
            self.failed(caller);
            Denied::Credentials(format!(
                "no account for `{user}` in mailtoken's config: log in with the account's user or name"
            ))
        })?;
        let acct = config
            .open(&self.paths, name)
            .map_err(|e| Denied::Unavailable(format!("{e:#}")))?;
        let server = crate::mail::servers::server(&acct.account, service)
            .map_err(|e| Denied::Unavailable(format!("{e:#}")))?;
        let mailbox = acct
            .account
            .user
            .clone()
            .unwrap_or_else(|| user.to_string());
        let refused = |e: anyhow::Error| {
            Denied::LoginNeeded(format!(
                "{server} refused the token of `{name}` ({}); check `mailtoken check {name}`, \
                 or log in again with `mailtoken login {name}`",
                first_line(&format!("{e:#}"))
            ))
        };
        let unreachable =
            |e: anyhow::Error| Denied::Unavailable(format!("cannot reach {server}: {e:#}"));
        let token = token_for(&acct, false)?;
        let first = match log_in_upstream(service, &server, &mailbox, &token) {
            Ok(conn) => return Ok((acct.name.clone(), conn)),
            Err(e) if error::kind(&e) == Some(Kind::Server) => return Err(unreachable(e)),
            Err(e) => e,
        };
        // A token the server refuses may have been revoked just now: one try with a fresh one.
        let Ok(fresh) = token_for(&acct, true) else {
            return Err(refused(first));
        };
        match log_in_upstream(service, &server, &mailbox, &fresh) {
            Ok(conn) => Ok((acct.name.clone(), conn)),
            Err(e) if error::kind(&e) == Some(Kind::Server) => Err(unreachable(e)),
            Err(e) => Err(refused(e)),
        }
    }

    /// The proxy's own user needs no local password; anyone else needs the configured one.
    fn admit(&self, caller: &Caller, password: &str) -> std::result::Result<(), Denied> {
        if caller.same_user {
            return Ok(());
        }
        if self.locked_out(caller) {
            return Err(Denied::Unavailable(
                "too many failed logins from this address: wait a minute".into(),
            ));
        }
        let Some(hash) = &self.settings.password_hash else {
            self.failed(caller);
            return Err(Denied::Credentials(
                "this proxy serves only the user who runs it (set password_hash in [proxy] to let others in)"
                    .into(),
            ));
        };
        if password::verify(password, hash) {
            Ok(())
        } else {
            self.failed(caller);
            Err(Denied::Credentials("wrong local password".into()))
        }
    }

    fn locked_out(&self, caller: &Caller) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(&caller.ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, caller: &Caller) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failures.entry(caller.ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

fn token_for(acct: &OpenAccount, force: bool) -> std::result::Result<String, Denied> {
    let want = Want::own(&acct.account).map_err(|e| Denied::Unavailable(format!("{e:#}")))?;
    match crate::token::get(acct, &want, force) {
        Ok(access) => Ok(access.access_token),
        Err(e) => Err(match error::kind(&e) {
            Some(Kind::LoginNeeded) => Denied::LoginNeeded(
                first_line(&format!("{e:#}")).to_string()
                    + &format!(": run `mailtoken login {}`", acct.name),
            ),
            _ => Denied::Unavailable(first_line(&format!("{e:#}")).to_string()),
        }),
    }
}

fn log_in_upstream(service: Service, server: &Server, user: &str, token: &str) -> Result<Conn> {
    match service {
        Service::Imap => crate::mail::imap::login(server, user, token),
        Service::Pop => {
            crate::mail::pop::login(server, user, token, crate::mail::sasl::Mech::Xoauth2)
        }
        Service::Smtp => {
            let mut session = crate::mail::smtp::open(server)?;
            let mech = if !session.ehlo().offers_auth("XOAUTH2")
                && session.ehlo().offers_auth("OAUTHBEARER")
            {
                crate::mail::sasl::Mech::Oauthbearer
            } else {
                crate::mail::sasl::Mech::Xoauth2
            };
            crate::mail::smtp::authenticate(&mut session, server, user, token, mech)?;
            Ok(session.into_conn())
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
