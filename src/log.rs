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
            eprintln!("mailtoken: {}", format_args!($($arg)*));
        }
    };
}
pub(crate) use debug;

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
