//! Notes for the processes that waited on the lock: the last refresh failure at the server,
//! and a refresh token the provider refused (the login is dead until another replaces it).

use std::fs;
use std::path::PathBuf;

use super::Store;

/// A failure another process noted.
pub struct Noted {
    pub message: String,
    /// The provider refused the login (not a server that failed).
    pub login_needed: bool,
}

/// A refresh token's stand-in in a note: SHA-256, 16 bytes of it in hex. One-way, and long
/// enough that a new login's token is never taken for a dead one.
fn token_digest(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Where the last refresh failure at the server is noted, for the processes that waited
    /// for the lock meanwhile.
    fn failure_path(&self, account: &str) -> PathBuf {
        self.files().failure(account)
    }

    /// Note (under the lock) that a refresh just failed at the server, with the error. Best
    /// effort: without the note, waiters simply try themselves.
    pub fn note_failure(&self, account: &str, message: &str) {
        self.write_note(account, message, None);
    }

    /// Note (under the lock) that the provider refused `refresh_token`: the login is dead. No
    /// process asks the server with that token again (a hundred callers meeting a revoked
    /// login make one request), and `status` and `doctor` say so, until a login stores
    /// another.
    pub fn note_login_needed(&self, account: &str, message: &str, refresh_token: &str) {
        self.write_note(account, message, Some(refresh_token));
    }

    fn write_note(&self, account: &str, message: &str, dead: Option<&str>) {
        let mut note = serde_json::json!({ "at_ms": crate::time::now_ms(), "error": message });
        if let Some(token) = dead {
            note["dead_refresh_token"] = token_digest(token).into();
        }
        let _ = self
            .files()
            .replace_small(&self.failure_path(account), note.to_string().as_bytes());
    }

    fn read_note(&self, account: &str) -> Option<serde_json::Value> {
        let bytes = self.files().read_small(&self.failure_path(account))?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The failure noted at or after `since_ms` (milliseconds), if any.
    pub fn failure_since(&self, account: &str, since_ms: u64) -> Option<Noted> {
        let note = self.read_note(account)?;
        (note["at_ms"].as_u64()? >= since_ms).then(|| Noted {
            message: note["error"].as_str().unwrap_or("").to_string(),
            login_needed: note["dead_refresh_token"].is_string(),
        })
    }

    /// What the provider said when it refused `refresh_token`, if it did (see
    /// `note_login_needed`): that login is dead.
    pub fn refused_login(&self, account: &str, refresh_token: &str) -> Option<String> {
        let note = self.read_note(account)?;
        (note["dead_refresh_token"].as_str()? == token_digest(refresh_token))
            .then(|| note["error"].as_str().unwrap_or("").to_string())
    }

    pub fn clear_failure(&self, account: &str) {
        let _ = fs::remove_file(self.failure_path(account));
    }
}
