//! What must hold for any input to mailtoken's parsers. Shared by the cargo-fuzz targets
//! (fuzz/fuzz_targets) and the bounded property test that runs in `cargo test`
//! (tests/integration/parsers.rs), so a crash found by either is a crash for both.
//!
//! Beyond "no panic": a token file that parses survives being written and read back, and an
//! error about a server reply never quotes the reply (it may hold a token). Seeds put
//! `MARKER` where secrets go to check the latter.

#![allow(dead_code)]

use mailtoken::flows::browser::{self, Callback};
use mailtoken::http::Reply;
use mailtoken::mail::{imap, pop, smtp};
use mailtoken::proxy::imap as proxy_imap;
use mailtoken::{config, log, oauth, provider, store};

/// Stands for a secret in seed inputs.
pub const MARKER: &str = "SEKRETMARK";

pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::Config::parse(text);
    }
}

pub fn token_file(data: &[u8]) {
    if let Ok(tokens) = store::parse(data) {
        let saved = serde_json::to_vec_pretty(&tokens).expect("serialise parsed tokens");
        let again = store::parse(&saved).expect("a saved token file must load again");
        assert_eq!(again, tokens, "tokens changed on a save and load");
    }
}

/// First byte: the HTTP status (and content type); the rest: the body.
pub fn oauth_reply(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let status = [200, 200, 400, 401, 428, 500, 502, 503][usize::from(first % 8)];
    let content_type = if first & 0x80 == 0 {
        "application/json"
    } else {
        "text/html"
    };
    let reply = Reply {
        status,
        content_type: content_type.into(),
        body: body.to_vec(),
    };
    match oauth::parse_reply::<oauth::TokenReply>(&reply, "refreshing") {
        Ok(Ok(token)) => {
            // What is accepted can be printed, put in SASL and stored as it is, and lives a
            // bounded time.
            if let Ok(granted) = token.into_access(1_000, "scope") {
                let access = &granted.access;
                let refresh = granted.refresh_token.as_ref();
                for t in std::iter::once(&access.access_token).chain(refresh) {
                    assert!(
                        !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()),
                        "{t:?}"
                    );
                }
                assert!(access.expires_at <= 1_000 + store::MAX_LIFETIME);
            }
        }
        // The server's own error words are shown by design.
        Ok(Err(_)) => {}
        Err(e) => assert!(
            !format!("{e:#}").contains(MARKER),
            "quoted the reply: {e:#}"
        ),
    }
    match oauth::parse_reply::<oauth::DeviceAuthorization>(&reply, "starting") {
        Ok(_) => {}
        Err(e) => assert!(
            !format!("{e:#}").contains(MARKER),
            "quoted the reply: {e:#}"
        ),
    }
}

pub fn discovery(data: &[u8]) {
    if let Ok(endpoints) = oauth::discovery::parse("https://id.example.com", data) {
        for url in [
            endpoints.token,
            endpoints.device_authorization,
            endpoints.authorization,
        ]
        .into_iter()
        .flatten()
        {
            let _ = provider::validate_endpoint_url("token_endpoint", &url);
        }
    }
}

pub fn callback(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = browser::Redirect::parse(text);
    if let Ok(Some(reply)) = browser::parse_callback(text, "/cb", "st4te") {
        // Nothing is accepted without the state of the login in progress.
        assert!(
            text.contains("st4te"),
            "accepted without the state: {text:?}"
        );
        if let Callback::Code(code) = reply {
            assert!(!code.is_empty());
        }
    }
}

/// Lines a mail server might send, through every reply parser: no panic, results made of
/// what came in, and nothing left that a terminal would obey once made printable.
pub fn mail_reply(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        let _ = imap::parse(line);
        if let Some(caps) = imap::capabilities(line) {
            assert!(
                caps.iter()
                    .all(|c| !c.is_empty() && *c == c.to_ascii_uppercase())
            );
        }
        let _ = pop::parse(line);
        if let Some((code, _, rest)) = smtp::parse_line(line) {
            assert!(
                (0..=999).contains(&code) && line.ends_with(rest),
                "{line:?}"
            );
        }
        let shown = log::printable(line);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
    }
}

/// What a local mail program sends the proxy before it logs in: commands, IMAP strings and
/// literals, SASL PLAIN responses. No panic; tokens never claim more text than there is.
pub fn proxy_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if let Some((tag, command, rest)) = proxy_imap::split_command(line) {
            assert!(!tag.is_empty() && !command.is_empty() && rest.len() < line.len());
            let mut rest = rest.to_string();
            for _ in 0..8 {
                match proxy_imap::next_token(&rest) {
                    Some(proxy_imap::Token::Text(value, used)) => {
                        let trimmed = rest.trim_start_matches(' ');
                        assert!(used <= trimmed.len() && value.len() <= trimmed.len());
                        rest = trimmed[used..].to_string();
                    }
                    _ => break,
                }
            }
        }
        if let Some((user, _password)) = mailtoken::mail::sasl::decode_plain(line) {
            assert!(!user.is_empty());
        }
        // The pre-login screen: whatever the line, it answers, and an HTTP request line or
        // header is never taken for a mail command.
        let screened = mailtoken::proxy::prelogin::not_mail(line);
        if line.starts_with("POST / HTTP/1.1") || line.starts_with("Host: ") {
            assert!(screened.is_some(), "{line:?}");
        }
    }
}
