//! Failure kinds that map to the documented exit codes.
//!
//! Everything else is a plain `anyhow::Error` and exits with 1.

use std::fmt;

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_LOGIN: i32 = 3;
pub const EXIT_SERVER: i32 = 4;

/// Ordered by how much a person needs to act: a login needed matters most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The network or the server failed; trying again later may work.
    Server,
    /// Bad flags or a config that cannot work as written.
    Usage,
    /// The stored grant is missing or refused: a human has to log in again.
    LoginNeeded,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => EXIT_USAGE,
            Kind::LoginNeeded => EXIT_LOGIN,
            Kind::Server => EXIT_SERVER,
        }
    }
}

#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub fn failure(kind: Kind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        kind,
        message: message.into(),
    })
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    failure(Kind::Usage, message)
}

pub fn login_needed(account: &str, why: impl fmt::Display) -> anyhow::Error {
    failure(
        Kind::LoginNeeded,
        format!("{why}\nA new login is needed: run `mailtoken login {account}`"),
    )
}

pub fn server(message: impl Into<String>) -> anyhow::Error {
    failure(Kind::Server, message)
}

/// The kind of an error: the first `Failure` found in its chain decides; None for the rest.
pub fn kind(err: &anyhow::Error) -> Option<Kind> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map(|f| f.kind)
}

/// The exit code for an error.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    kind(err).map_or(EXIT_FAILURE, Kind::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_code_survives_context() {
        let err = Err::<(), _>(server("boom"))
            .context("while refreshing")
            .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_SERVER);
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), EXIT_FAILURE);
        assert_eq!(exit_code(&login_needed("work", "expired")), EXIT_LOGIN);
    }
}
