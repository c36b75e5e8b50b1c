//! `mailtoken proxy`: local IMAP, POP and SMTP listeners for mail programs that can only send
//! a password. A program logs in with the account's user name; the proxy gets the account's
//! token the way `mailtoken token` does (same store, same lock), logs in to the real server
//! with XOAUTH2 or OAUTHBEARER, answers the program with success, and relays bytes both ways.
//!
//! One thread per session, each with a deadline before login and an idle limit after: a slow
//! or hostile client holds up nothing but itself. The protocol front ends are imap.rs, pop.rs
//! and smtp.rs, all reading through `prelogin::Door`; who may log in is decided in `gate.rs`.

pub mod certificate;
mod gate;
pub mod imap;
mod password;
pub mod peer;
mod pop;
pub mod prelogin;
mod relay;
mod smtp;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::config::{Config, Paths, ProxySettings};
use crate::error::usage;
use crate::log::printable;
use crate::mail::wire::{Conn, Transport};
use crate::provider::Service;
use crate::sys;
use gate::{Caller, Gate};
use prelogin::Door;

pub use password::{check_hash as check_password_hash, hash as hash_password};

/// Time a client has to log in, from connecting, unless `[proxy] login_timeout` says: mail
/// programs such as Alpine connect first and then ask their user for the password, who may
/// take minutes.
const PRE_AUTH: Duration = Duration::from_secs(300);
/// The longest `login_timeout` allowed: a connection that has not logged in holds a thread.
const MAX_PRE_AUTH: u64 = 3600;
/// Sessions served at once; more are turned away with a temporary failure.
const MAX_SESSIONS: usize = 256;
/// Sessions of other users (with the local password) at once, and of those, how many may be
/// still logging in: the rest is the owner's, so nobody else can lock the owner out.
const STRANGERS: usize = MAX_SESSIONS - 32;
const STRANGERS_LOGGING_IN: usize = 16;
/// After login: IMAP IDLE is renewed every 29 minutes by well-behaved clients.
const IDLE_LIMIT: Duration = Duration::from_secs(31 * 60);
/// How long sessions may go on after SIGTERM before the proxy exits anyway.
const GRACE: Duration = Duration::from_secs(10);
/// How long the proxy waits, after that, for token refreshes under way (each has deadlines of
/// its own, shorter than this): a rotated refresh token must be stored before it exits.
const REFRESH_GRACE: Duration = Duration::from_secs(300);

/// Run every listener of `[proxy]` until SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 or SIGUSR2.
pub fn run(paths: &Paths) -> Result<()> {
    let config = Config::load(&paths.config)?;
    if let Some(refusal) = &config.unsafe_file {
        bail!(usage(refusal.clone()));
    }
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
    if let Some(hash) = &settings.password_hash {
        password::check_hash(hash).map_err(|why| {
            usage(format!(
                "[proxy] password_hash is not a hash from `mailtoken proxy --hash-password` \
                 ({why}): make one with that command and paste its whole output"
            ))
        })?;
    }
    if !sys::net::NAMES_PEERS {
        if settings.password_hash.is_none() {
            bail!(usage(
                "this system does not tell the proxy which user a connection comes from, so \
                 every program must give the local password: make one with `mailtoken proxy \
                 --hash-password` and put it in [proxy] password_hash"
                    .to_string()
            ));
        }
        eprintln!(
            "mailtoken proxy: this system does not tell which user a connection comes from: \
             every connection, yours included, must give the local password"
        );
    }
    for (user, names) in config.shared_users() {
        eprintln!(
            "mailtoken proxy: accounts {} share the user {user}: a program must log in with \
             the account's name, not the user",
            names.join(", ")
        );
    }
    let listeners = bind(&settings, tls.is_some())?;
    // Any of the usual signals stops the proxy the graceful way (sessions, then refreshes
    // under way): by default QUIT, USR1 or USR2 would end it at once, whatever thread was
    // between a refresh and its commit.
    sys::process::catch_stop_signals();
    crate::mail::wire::set_reporting(crate::log::verbose());
    let pre_auth = settings.login_timeout.map_or(PRE_AUTH, Duration::from_secs);
    let gate = Arc::new(Gate::new(paths.clone(), settings, tls));
    let counts = Arc::new(Counts::default());
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
    let fds: Vec<_> = listeners.iter().map(|(_, l)| l.as_fd()).collect();
    let me = sys::uid();
    while !sys::process::stop_requested() {
        let ready = sys::net::wait_readable(&fds, Duration::from_millis(250))?;
        for (ready, (kind, listener)) in ready.into_iter().zip(&listeners) {
            if !ready {
                continue;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    let started = Started {
                        kind: *kind,
                        peer,
                        pre_auth,
                        me,
                    };
                    start_session(started, stream, &gate, &counts);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("mailtoken proxy: accept failed: {e}"),
            }
        }
    }
    drop(listeners);
    let until = Instant::now() + GRACE;
    while counts.active.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    let until = Instant::now() + REFRESH_GRACE;
    if gate.in_flight() > 0 {
        eprintln!("mailtoken proxy: waiting for token refreshes under way to be stored");
    }
    while gate.in_flight() > 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "mailtoken proxy: stopped ({} session(s) still open were closed)",
        counts.active.load(Ordering::SeqCst)
    );
    Ok(())
}

/// A listener: the protocol, and whether TLS starts with the first byte.
#[derive(Clone, Copy)]
struct Listener {
    service: Service,
    implicit_tls: bool,
    /// Bound to a loopback address: only there does the kernel's word on the user count.
    loopback: bool,
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
                loopback: parsed.ip().is_loopback(),
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

/// Sessions open now, and those of other users, in all and still logging in.
#[derive(Default)]
struct Counts {
    active: AtomicUsize,
    strangers: AtomicUsize,
    strangers_logging_in: AtomicUsize,
    /// The last session id given: each session's log lines carry its id.
    last_id: AtomicU64,
}

/// A session's place in `Counts`, given back when the session ends however it ends.
struct Place {
    counts: Arc<Counts>,
    stranger: bool,
    logging_in: bool,
}

impl Place {
    /// A place for a session, if there is room: the owner may use every place, other users
    /// `STRANGERS` of them and `STRANGERS_LOGGING_IN` before they have logged in.
    fn take(counts: &Arc<Counts>, stranger: bool) -> Option<Place> {
        let room = |n: &AtomicUsize, max: usize| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                (v < max).then_some(v + 1)
            })
            .is_ok()
        };
        if !room(&counts.active, MAX_SESSIONS) {
            return None;
        }
        // Each count taken is given back by the drop of `place` if a later one has no room.
        let mut place = Place {
            counts: Arc::clone(counts),
            stranger: false,
            logging_in: false,
        };
        if !stranger {
            return Some(place);
        }
        if !room(&counts.strangers, STRANGERS) {
            return None;
        }
        place.stranger = true;
        if !room(&counts.strangers_logging_in, STRANGERS_LOGGING_IN) {
            return None;
        }
        place.logging_in = true;
        Some(place)
    }

    /// The session has logged in: it no longer takes a place among those logging in.
    fn logged_in(&mut self) {
        if self.logging_in {
            self.counts
                .strangers_logging_in
                .fetch_sub(1, Ordering::SeqCst);
            self.logging_in = false;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.logged_in();
        if self.stranger {
            self.counts.strangers.fetch_sub(1, Ordering::SeqCst);
        }
        self.counts.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the accept loop knows of a new connection.
struct Started {
    kind: Listener,
    peer: SocketAddr,
    pre_auth: Duration,
    /// The proxy's own user.
    me: u32,
}

fn start_session(started: Started, stream: TcpStream, gate: &Arc<Gate>, counts: &Arc<Counts>) {
    let Started { kind, peer, .. } = started;
    // Asked here, before a thread is spent on it: other users get only their share.
    let uid = stream
        .local_addr()
        .ok()
        .and_then(|local| peer::uid_of(peer, local));
    let caller = Caller {
        ip: peer.ip(),
        uid,
        owner: kind.loopback && uid == Some(started.me),
        needs_tls: !kind.loopback,
    };
    let Some(place) = Place::take(counts, !caller.owner) else {
        turn_away(
            kind.service,
            &stream,
            "busy: too many sessions at once; try again later",
        );
        return;
    };
    let id = counts.last_id.fetch_add(1, Ordering::Relaxed) + 1;
    let gate = Arc::clone(gate);
    let spawned = thread::Builder::new()
        .name(format!("session-{id}"))
        .spawn(move || {
            let tag = format!("#{id} {} {peer}:", kind.service.name());
            crate::log::set_context(&tag);
            let began = Instant::now();
            let mut place = place;
            let outcome = session(kind, stream, &caller, &gate, started.pre_auth, &mut place);
            eprintln!(
                "mailtoken proxy: {tag} {} ({:.1} s)",
                printable(&outcome),
                began.elapsed().as_secs_f64()
            );
            // Given back only now: a stopping proxy waits for this line too.
            drop(place);
        });
    // No thread to be had (a limit on threads, memory): this connection is dropped with its
    // closure, and the proxy lives on for the next one.
    if let Err(e) = spawned {
        eprintln!(
            "mailtoken proxy: #{id} {} {peer}: turned away: cannot start a thread: {e}",
            kind.service.name()
        );
    }
}

/// Tell a client there is no room, without waiting on it: a fresh socket's buffer takes a
/// line, and a client that reads nothing must not hold up the accept loop.
fn turn_away(service: Service, stream: &TcpStream, why: &str) {
    let line = match service {
        Service::Imap => format!("* BYE mailtoken proxy: {why}\r\n"),
        Service::Pop => format!("-ERR [SYS/TEMP] mailtoken proxy: {why}\r\n"),
        Service::Smtp => format!("421 4.3.2 mailtoken proxy: {why}\r\n"),
    };
    if stream.set_nonblocking(true).is_ok() {
        let _ = std::io::Write::write(&mut &*stream, line.as_bytes());
    }
}

/// One session, start to end; what happened, for the log line (never a secret).
fn session(
    kind: Listener,
    stream: TcpStream,
    caller: &Caller,
    gate: &Gate,
    pre_auth: Duration,
    place: &mut Place,
) -> String {
    let _ = stream.set_write_timeout(Some(crate::mail::wire::TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::for_person(Transport::Plain(stream), pre_auth);
    if kind.implicit_tls {
        let Some(tls) = gate.tls.clone() else {
            return "no local TLS configured".into();
        };
        conn = match conn.accept_tls(tls) {
            Ok(conn) => conn,
            Err(e) => return format!("{e:#}"),
        };
    }
    let door = Door::new(conn, kind.service, pre_auth);
    let login = match kind.service {
        Service::Imap => imap::front(door, caller, gate),
        Service::Pop => pop::front(door, caller, gate),
        Service::Smtp => smtp::front(door, caller, gate),
    };
    let done = match login {
        Ok(done) => done,
        Err(ended) => return ended.to_string(),
    };
    place.logged_in();
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
