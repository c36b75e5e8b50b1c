//! The command backend: the user's own commands load, save and erase the tokens (`pass`, `gpg`).

use anyhow::Result;

use super::tokens::Tokens;
use crate::shell;

const WHAT: &str = "store command";

/// Empty output means "nothing stored", so `pass show x 2>/dev/null || true` works as a loader.
pub fn load(cmd: &str) -> Result<Option<Vec<u8>>> {
    let out = shell::run(WHAT, cmd, None)?;
    Ok((!out.iter().all(u8::is_ascii_whitespace)).then_some(out))
}

pub fn save(cmd: &str, tokens: &Tokens) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(tokens)?;
    json.push(b'\n');
    shell::run(WHAT, cmd, Some(&json)).map(drop)
}

pub fn erase(cmd: &str) -> Result<()> {
    shell::run(WHAT, cmd, None).map(drop)
}
