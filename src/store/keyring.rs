//! The keyring backend: one OS keyring item per account (Secret Service, Keychain, Credential
//! Manager), holding the same JSON as a token file.

use super::tokens::Tokens;

/// The keyring service name; the account name is the keyring "user".
pub const KEYRING_SERVICE: &str = "mailtoken";

fn unavailable(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "the OS keyring is not available ({e}). On macOS it is the login Keychain; on Linux \
         and FreeBSD it needs a running Secret Service (GNOME Keyring, KeePassXC) on the \
         session D-Bus; or use the file store"
    )
}

pub use os::{load, remove, save};

#[cfg(feature = "keyring")]
mod os {
    use anyhow::Result;

    use super::{KEYRING_SERVICE, Tokens, unavailable};

    fn entry(account: &str) -> Result<keyring::Entry> {
        keyring::Entry::new(KEYRING_SERVICE, account).map_err(unavailable)
    }

    pub fn load(account: &str) -> Result<Option<Vec<u8>>> {
        match entry(account)?.get_password() {
            Ok(text) => Ok(Some(text.into_bytes())),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read `{account}` from the OS keyring: {e}"
            )),
        }
    }

    pub fn save(account: &str, tokens: &Tokens) -> Result<()> {
        let json = serde_json::to_string(tokens)?;
        entry(account)?
            .set_password(&json)
            .map_err(|e| anyhow::anyhow!("cannot write `{account}` to the OS keyring: {e}"))
    }

    pub fn remove(account: &str) -> Result<bool> {
        match entry(account)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(anyhow::anyhow!(
                "cannot remove `{account}` from the OS keyring: {e}"
            )),
        }
    }
}

/// A build without the `keyring` feature (packagers may drop D-Bus): every use says so.
#[cfg(not(feature = "keyring"))]
mod os {
    use anyhow::Result;

    use super::{Tokens, unavailable};

    fn not_built() -> anyhow::Error {
        unavailable("this mailtoken was built without the `keyring` feature")
    }

    pub fn load(_: &str) -> Result<Option<Vec<u8>>> {
        Err(not_built())
    }

    pub fn save(_: &str, _: &Tokens) -> Result<()> {
        Err(not_built())
    }

    pub fn remove(_: &str) -> Result<bool> {
        Err(not_built())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unavailable_message_reads_as_one_sentence() {
        let msg = super::unavailable("no D-Bus session").to_string();
        assert!(!msg.contains("  "), "{msg}");
        assert!(
            msg.contains("Secret Service (GNOME Keyring, KeePassXC)"),
            "{msg}"
        );
    }
}
