//! Credentials: the `Sign` HMAC over raw request bytes, argon2id password hashes (computed off
//! the async threads, a few at a time) and the password rule.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

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
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 accepts any password").to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Runs password hashing on the blocking pool, at most `permits` at once, so a login flood costs
/// a queue, not the node's memory.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    pub fn new(permits: usize) -> Self {
        Hasher { permits: Arc::new(Semaphore::new(permits)) }
    }

    pub async fn verify(&self, password: String, hash: String) -> bool {
        let Ok(_permit) = self.permits.acquire().await else { return false };
        tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false)
    }

    pub async fn hash(&self, password: String) -> String {
        let _permit = self.permits.acquire().await.expect("semaphore is never closed");
        tokio::task::spawn_blocking(move || hash_password(&password)).await.expect("hashing does not panic")
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
}
