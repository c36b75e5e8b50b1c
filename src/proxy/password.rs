//! The proxy's local password: stored only as an Argon2id hash (a PHC string), checked by
//! the argon2 crate, whose comparison takes the same time however much of it matches.

use anyhow::Result;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// The PHC string for `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&crate::oauth::random::<16>()?)
        .map_err(|e| anyhow::anyhow!("cannot make a salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?
        .to_string())
}

/// Why `phc` is not a hash `hash` could have made, if it is not: a malformed one would match
/// nothing, and the proxy would refuse every other user without saying why.
pub fn check_hash(phc: &str) -> std::result::Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "the algorithm is {}, not argon2id",
            parsed.algorithm
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("it has no salt or no hash part".into());
    }
    // Each check takes this much memory (two may run at once).
    let params = Params::try_from(&parsed).map_err(|e| e.to_string())?;
    if params.m_cost() > 256 * 1024 {
        return Err("it asks for more than 256 MiB per check".into());
    }
    Argon2::default()
        .verify_password(b"", &parsed)
        .or_else(|e| match e {
            argon2::password_hash::Error::Password => Ok(()),
            other => Err(other),
        })
        .map_err(|e| e.to_string())
}

/// The working memory of one check (19 MiB with the default parameters), kept for the next:
/// allocated afresh by each of many session threads, it would stay with each thread's
/// allocator arena, and the proxy would grow by that much per thread.
#[derive(Default)]
pub struct Memory(Vec<Block>);

/// Whether `password` matches `phc`; a malformed hash matches nothing. Computed in `memory`;
/// the comparison takes the same time however much of it matches.
pub fn verify(password: &str, phc: &str, memory: &mut Memory) -> bool {
    check(password, phc, memory).unwrap_or(false)
}

fn check(password: &str, phc: &str, memory: &mut Memory) -> Option<bool> {
    let parsed = PasswordHash::new(phc).ok()?;
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    memory.0.resize(params.block_count(), Block::default());
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory.0)
        .ok()?;
    // `Output`'s equality is constant-time.
    Some(Output::new(&out).ok()? == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        let memory = &mut Memory::default();
        assert!(verify("correct horse", &phc, memory));
        assert!(!verify("correct horsf", &phc, memory));
        assert!(!verify("correct horse", "not a hash", memory));
        // The same answers as the argon2 crate's own check.
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert_ne!(hash("correct horse").unwrap(), phc, "salted");
        assert_eq!(check_hash(&phc), Ok(()));
        for bad in [
            "not a hash",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            &phc[..phc.len() - 10],
            &phc.replace("argon2id", "argon2i"),
            &phc.replace("m=19456", "m=1"),
            &phc.replace("m=19456", "m=4194304"),
        ] {
            assert!(check_hash(bad).is_err(), "{bad}");
        }
    }
}
