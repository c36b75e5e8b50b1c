//! OAuth 2.0 as a client: requests to the token endpoint and their checked replies, error
//! replies made into advice, endpoint discovery, and certificate-signed client assertions.
//! Nothing here stores a token: callers decide what to keep. (Discovery keeps the issuer's
//! public metadata document beside the account's tokens for a day.)

pub mod discovery;
mod error;
pub mod jwt;
mod token_endpoint;
mod way;

use anyhow::Result;
use ring::rand::{SecureRandom, SystemRandom};

pub use discovery::endpoints;
pub use error::OAuthError;
pub use token_endpoint::*;
pub use way::{TokenWay, fetch_app_only, service_account_assertion};

/// Fresh random bytes from the OS, for PKCE verifiers, `state` and assertion ids.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(bytes)
}
