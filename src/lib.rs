//! mailtoken: OAuth2 access tokens for mail programs. The library is everything but argument
//! dispatch, so that tests, benchmarks and fuzz targets call the code the programs run.
//!
//! # Programs
//!
//! Two, from the same build: `mailtoken` (src/main.rs) answers the cached `token` call
//! (`front::quick`; src/front.rs is the contract between the two programs) and becomes
//! `mailtoken-full` (src/bin/mailtoken-full.rs, every command) for anything else, by exec
//! (`shell::become_full`). The split keeps the hot call's program small: start-up cost grows
//! with a program's relocations and code pages.
//!
//! # Map
//!
//! Layers, lowest first; a module uses only the ones above it in this list.
//!
//! - `sys`: the one room for system calls (`libc`, `unsafe`), and where the platform is
//!   decided: safe functions for signals, files, the lock's deadline, the terminal, sockets.
//! - `error`, `log`, `time`, `shell`, `process`, `tls`, `http`: the failure kinds behind the
//!   exit codes, verbose logging and the fingerprints that stand in for secrets, clock helpers,
//!   the one place that starts other programs, the programs' start (no core dumps) and exit,
//!   the one TLS client setup (trust store read only when a certificate is
//!   checked), and the bounded HTTP client.
//! - `provider`: presets for Microsoft, Google and generic servers (endpoints, scopes, mail
//!   servers).
//! - `store`: where tokens live (file, keyring, commands: `store/file.rs` writes atomically)
//!   and the per-account lock (`store/lock.rs`) that makes one process the refresher.
//! - `config`: the TOML file, its validation rules (`config/validate.rs`), and
//!   `config::open`, the one way to get an account ready for use ([`config::OpenAccount`]);
//!   `config/snapshot.rs` keeps one account's settings for the quick `token` path.
//! - `notify`: `notify_command`, run (once an hour at most) when a login has died or is a day
//!   from its known end, and each time a background login waits for approval.
//! - `oauth`: requests to the token endpoint and their replies (`oauth/token_endpoint.rs`:
//!   refresh, code exchange, device polling), error replies made into advice, discovery, JWT
//!   client assertions.
//! - `mail`: mail servers, SASL XOAUTH2/OAUTHBEARER (`mail/sasl.rs`), and the IMAP, POP, SMTP
//!   and Graph clients.
//! - `flows`: first logins: device code, browser with PKCE (and its loopback listener in
//!   `flows/callback.rs`), app-only client credentials; and the login a dead one starts in the
//!   background (`flows/relogin.rs`, with `relogin = "device"`).
//! - `token`: the broker. `token::get` is the whole lock-and-refresh protocol in one function:
//!   cached token, else lock, re-read, refresh once, store, hand out.
//! - `proxy`: `mailtoken proxy`, local IMAP/POP/SMTP listeners that log in upstream with the
//!   account's token from `token::get` (the fronts in `proxy/imap.rs` etc., all reading
//!   through `proxy/prelogin.rs`, which shuts out what is not a mail program; who may log in
//!   in `proxy/gate.rs`; the relay in `proxy/relay.rs`).
//! - `output`, `cli`, `commands`, `front`: what `token` prints (and the one writer of stdout),
//!   the command line, one thin handler per subcommand, and the small program's cached call.

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod flows;
pub mod front;
pub mod http;
pub mod log;
pub mod mail;
pub mod notify;
pub mod oauth;
pub mod output;
pub mod process;
pub mod provider;
pub mod proxy;
pub mod shell;
pub mod store;
pub mod sys;
pub mod time;
pub mod tls;
pub mod token;

#[cfg(test)]
mod layers;
