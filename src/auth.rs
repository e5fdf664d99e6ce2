//! Credentials: the `Sign` HMAC over raw request bytes, argon2id password hashes (computed off
//! the async threads, a few at a time) and the password rule; [`lockout`] bounds failed checks
//! per account.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub mod lockout;

/// `base64(HMAC-SHA256(secret, message))`, as clients compute it.
pub fn sign(secret: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a `Sign` value in constant time.
pub fn verify_sign(secret: &str, message: &[u8], signature: &str) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    mac.verify_slice(&expected).is_ok()
}

/// Compares two secrets (a factory key, say) in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// A short tag of an access token, to find the sessions opened with it (not a secret).
pub fn token_tag(token: &str) -> u64 {
    let d = Sha256::digest(token.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes")) | 1
}

/// Hashes a password with argon2id and a random salt (blocking: ~19 MiB and tens of ms).
pub fn hash_password(password: &str) -> String {
    hash_password_in(password, &mut Vec::new())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    verify_password_in(password, hash, &mut Vec::new())
}

/// [`hash_password`] in the given memory, grown to what the parameters need. The result is the
/// PHC string `Argon2::hash_password` writes.
fn hash_password_in(password: &str, memory: &mut Vec<Block>) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::default();
    let mut raw_salt = [0u8; Salt::MAX_LENGTH];
    let raw_salt = salt.decode_b64(&mut raw_salt).expect("a generated salt decodes");
    let blocks = blocks(memory, argon2.params());
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        Ok(argon2.hash_password_into_with_memory(password.as_bytes(), raw_salt, out, blocks)?)
    })
    .expect("argon2 accepts any password");
    let params = ParamsString::try_from(argon2.params()).expect("default parameters encode");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// Checks a password against a PHC string, with the hash's own algorithm, version and
/// parameters, in the given memory.
fn verify_password_in(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(hash.algorithm), Params::try_from(&hash)) else { return false };
    let Ok(version) = hash.version.map_or(Ok(Version::default()), Version::try_from) else { return false };
    let mut raw_salt = [0u8; Salt::MAX_LENGTH];
    let Ok(raw_salt) = salt.decode_b64(&mut raw_salt) else { return false };
    let argon2 = Argon2::new(algorithm, version, params);
    let blocks = blocks(memory, argon2.params());
    let Ok(computed) =
        Output::init_with(expected.len(), |out| Ok(argon2.hash_password_into_with_memory(password.as_bytes(), raw_salt, out, blocks)?))
    else {
        return false;
    };
    // `Output` compares in constant time.
    computed == expected
}

/// The first `params.block_count()` blocks of `memory`, growing it when it is smaller.
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    &mut memory[..needed]
}

/// Runs password hashing on the blocking pool, at most `permits` at once, so a login flood costs
/// a queue, not the node's memory. Each permit has its argon2 memory (~19 MiB), allocated at its
/// first use and kept: freeing and allocating it for every check leaves the allocator holding on
/// to ever more of those blocks.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// One block array per permit; a check takes one out and puts it back.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Hasher {
    pub fn new(permits: usize) -> Self {
        Hasher { permits: Arc::new(Semaphore::new(permits)), memory: Arc::new(Mutex::new(Vec::with_capacity(permits))) }
    }

    /// Runs `f` on the blocking pool under a permit, with a block array of the pool.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static) -> Option<T> {
        let _permit = self.permits.acquire().await.ok()?;
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let mut memory = pool.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
            let out = f(&mut memory);
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(memory);
            out
        })
        .await
        .ok()
    }

    pub async fn verify(&self, password: String, hash: String) -> bool {
        self.run(move |memory| verify_password_in(&password, &hash, memory)).await.unwrap_or(false)
    }

    pub async fn hash(&self, password: String) -> String {
        self.run(move |memory| hash_password_in(&password, memory)).await.expect("hashing does not panic and the semaphore is never closed")
    }
}

/// The seed's rule: at least 8 characters from at least two of digits, letters and symbols.
pub fn password_ok(password: &str) -> bool {
    let digits = password.chars().any(|c| c.is_ascii_digit());
    let letters = password.chars().any(|c| c.is_alphabetic());
    let symbols = password.chars().any(|c| !c.is_alphanumeric());
    password.chars().count() >= 8 && [digits, letters, symbols].iter().filter(|b| **b).count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_round_trip_over_raw_bytes() {
        let body = br#"{"email": "a@b.c", "password": "x"}"#;
        let s = sign("secret", body);
        assert!(verify_sign("secret", body, &s));
        assert!(!verify_sign("other", body, &s));
        assert!(!verify_sign("secret", br#"{"email":"a@b.c","password":"x"}"#, &s));
        assert!(!verify_sign("secret", body, "not base64!"));
    }

    #[test]
    fn password_rule() {
        assert!(password_ok("abcd1234"));
        assert!(password_ok("abcdefg!"));
        assert!(!password_ok("abcdefgh"));
        assert!(!password_ok("abc12"));
    }

    #[test]
    fn password_hash_verifies() {
        let h = hash_password("hunter2!x");
        assert!(verify_password("hunter2!x", &h));
        assert!(!verify_password("hunter3!x", &h));
    }

    #[test]
    fn hashes_are_those_of_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("hunter2!x");
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        assert!(Argon2::default().verify_password(b"hunter2!x", &PasswordHash::new(&ours).unwrap()).is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default().hash_password(b"hunter2!x", &salt).unwrap().to_string();
        assert!(verify_password("hunter2!x", &theirs));
        assert!(!verify_password("hunter2!y", &theirs));
        // Other parameters and algorithms stored by older setups still verify, in the same memory.
        let mut memory = Vec::new();
        for (alg, m, t, p) in [(Algorithm::Argon2id, 4096, 3, 1), (Algorithm::Argon2i, 8192, 2, 2), (Algorithm::Argon2id, 32768, 1, 4)] {
            let argon2 = Argon2::new(alg, Version::V0x13, Params::new(m, t, p, None).unwrap());
            let h = argon2.hash_password(b"pw-12345", &salt).unwrap().to_string();
            assert!(verify_password_in("pw-12345", &h, &mut memory), "{h}");
            assert!(!verify_password_in("pw-12346", &h, &mut memory), "{h}");
        }
        assert!(!verify_password("x", "not a hash"));
    }
}
