//! `--verbose` diagnostics on stderr, and the fingerprints that stand in for secrets there.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::verbose() {
            eprintln!("mailtoken: {}{}", $crate::log::context(), format_args!($($arg)*));
        }
    };
}
pub(crate) use debug;

std::thread_local! {
    /// What this thread's diagnostics are about (the proxy's session id), or empty.
    static CONTEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Start every diagnostic line of this thread with `tag` (one proxy session per thread).
pub fn set_context(tag: &str) {
    CONTEXT.with(|c| *c.borrow_mut() = format!("{tag} "));
}

/// This thread's tag followed by a space, or nothing.
pub fn context() -> String {
    CONTEXT.with(|c| c.borrow().clone())
}

/// Text from a server made fit to pass on: each of `secrets` (a token, the SASL string built
/// from it) and any long run of base64 or base64url (a token or challenge the server echoed)
/// replaced, control characters shown escaped.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        out = out.replace(secret, "[token]");
    }
    let token_char = |c: char| c.is_ascii_alphanumeric() || "+/=-_.~".contains(c);
    let mut cleaned = String::with_capacity(out.len());
    let mut run = String::new();
    for c in out.chars().chain(std::iter::once(' ')) {
        if token_char(c) {
            run.push(c);
            continue;
        }
        if run.len() >= 32 {
            cleaned.push_str("[redacted]");
        } else {
            cleaned.push_str(&run);
        }
        run.clear();
        cleaned.push(c);
    }
    cleaned.pop();
    printable(&cleaned).into_owned()
}

/// A short, stable tag for a secret so logs can tell tokens apart without showing them.
pub fn fingerprint(secret: &str) -> String {
    // FNV-1a: fixed, dependency-free, and one-way enough for an 8-hex-digit tag.
    let hash = secret.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("#{:08x}", hash >> 32)
}

/// Text a server sent, made safe for a terminal: control characters (ANSI escape sequences,
/// carriage returns, bells) are shown escaped, so a reply cannot recolour, rewrite or hide
/// what is on the screen. Line breaks stay.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\n' => "\n".to_string(),
                c if c.is_control() => c.escape_default().to_string(),
                c => c.to_string(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_tokens_are_redacted() {
        let token = "AT-secret-0123456789";
        let said = format!(
            "NO [AUTHENTICATIONFAILED] bad token {token} for dXNlcj1hbGljZQFhdXRoPUJlYXJlciBBVC1zZWNyZXQBAQ== (x)\x1b"
        );
        let shown = redact(&said, &[token]);
        assert_eq!(
            shown,
            "NO [AUTHENTICATIONFAILED] bad token [token] for [redacted] (x)\\u{1b}"
        );
        assert_eq!(
            redact("535 5.7.8 Error: authentication failed", &[]),
            "535 5.7.8 Error: authentication failed"
        );
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain\ntwo lines"), "plain\ntwo lines");
        assert_eq!(printable("\x1b[31mred\r\x07"), "\\u{1b}[31mred\\r\\u{7}");
    }

    #[test]
    fn fingerprints_differ_and_hide_the_secret() {
        assert_ne!(fingerprint("a"), fingerprint("b"));
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert!(!fingerprint("secret-token").contains("secret"));
    }
}
