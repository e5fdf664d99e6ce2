//! Verification codes: what a code is (six random digits, kept only as a hash), how long it lives,
//! how often one address may be sent one, and how it reaches its owner.
//!
//! Delivery goes through the [`CodeSender`] trait, which also delivers seed 003's share invite
//! codes by email. With `--smtp-url` set, [`crate::mail::SmtpSender`] mails them (SMS codes still
//! go to the outbox). The default, [`OutboxSender`], logs the code and
//! appends it as one JSON line to `<data_dir>/outbox/verification-codes.jsonl`, so a self-hoster
//! (and the tests) can read codes without a mail or SMS gateway. The store keeps the live code per
//! address and purpose and counts sends (`store/accounts.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::Rng;
use sha2::{Digest, Sha256};

/// How long a code may be used, in milliseconds.
pub const CODE_TTL_MS: i64 = 10 * 60 * 1000;
/// Wrong guesses a code survives; the next one voids it.
pub const MAX_ATTEMPTS: i64 = 5;
/// Sends allowed per address: at most `.1` within the last `.0` milliseconds (the seed's 3 per
/// minute, 20 per hour, 100 per day).
pub const SEND_LIMITS: [(i64, i64); 3] = [(60_000, 3), (3_600_000, 20), (86_400_000, 100)];

/// What a code is for (the seed's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Register = 0,
    ResetPassword = 1,
    CloseAccount = 3,
    SmsLogin = 4,
}

impl Purpose {
    pub fn from_code(code: i64) -> Option<Purpose> {
        match code {
            0 => Some(Purpose::Register),
            1 => Some(Purpose::ResetPassword),
            3 => Some(Purpose::CloseAccount),
            4 => Some(Purpose::SmsLogin),
            _ => None,
        }
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn name(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::ResetPassword => "reset-password",
            Purpose::CloseAccount => "close-account",
            Purpose::SmsLogin => "sms-login",
        }
    }
}

/// A fresh code: six digits, uniformly random.
pub fn new_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// What the store keeps of a code: bound to its address and purpose, so a code for one cannot be
/// replayed for another.
pub fn code_hash(target: &str, purpose: Purpose, code: &str) -> String {
    hex::encode(Sha256::digest(format!("{}\n{target}\n{}", purpose.code(), code.trim()).as_bytes()))
}

/// Delivers a code to an address (email or phone number with its country code).
pub trait CodeSender: Send + Sync + 'static {
    /// Blocking; callers run it off the async threads. `Ok` means the code was delivered or
    /// queued for delivery (an SMTP sender retries in the background).
    fn send(&self, to: &str, purpose: Purpose, code: &str) -> std::io::Result<()>;

    /// Delivers the code of an invitation to share a device (seed 003's `email` mode) to an email
    /// address. Blocking, as `send`.
    fn send_invite(&self, to: &str, invite: &InviteMail<'_>) -> std::io::Result<()>;
}

/// What an invite email says: who shares which device, the code to accept with, and until when.
#[derive(Debug, Clone, Copy)]
pub struct InviteMail<'a> {
    pub code: &'a str,
    /// The manager's account (email, phone or apikey).
    pub from: &'a str,
    pub deviceid: &'a str,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
}

/// Logs codes and appends them to a JSON-lines file instead of mailing them.
pub struct OutboxSender {
    path: PathBuf,
    /// Serialises appends so lines never interleave.
    lock: Mutex<()>,
}

impl OutboxSender {
    /// Writes to `<data_dir>/outbox/verification-codes.jsonl` (the directory is made on first use).
    pub fn new(data_dir: &Path) -> OutboxSender {
        OutboxSender { path: Self::path_in(data_dir), lock: Mutex::new(()) }
    }

    /// Where codes of a hub with this data directory are written.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("outbox").join("verification-codes.jsonl")
    }
}

impl OutboxSender {
    fn append(&self, line: serde_json::Value) -> std::io::Result<()> {
        let mut line = line.to_string();
        line.push('\n');
        let _guard = crate::sync::lock(&self.lock);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?.write_all(line.as_bytes())
    }
}

impl CodeSender for OutboxSender {
    fn send(&self, to: &str, purpose: Purpose, code: &str) -> std::io::Result<()> {
        tracing::info!(to, purpose = purpose.name(), code, "verification code (outbox delivery)");
        self.append(serde_json::json!({ "to": to, "purpose": purpose.name(), "code": code, "at": crate::clock::now_millis() }))
    }

    /// One line with `purpose` "share-invite" in the same file.
    fn send_invite(&self, to: &str, invite: &InviteMail<'_>) -> std::io::Result<()> {
        tracing::info!(to, from = invite.from, device = invite.deviceid, "share invite (outbox delivery)");
        self.append(serde_json::json!({
            "to": to,
            "purpose": "share-invite",
            "code": invite.code,
            "from": invite.from,
            "deviceid": invite.deviceid,
            "expiresAt": invite.expires_at,
            "at": crate::clock::now_millis(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = new_code();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn hash_binds_target_and_purpose() {
        let h = code_hash("a@x.cc", Purpose::Register, "123456");
        assert_eq!(h, code_hash("a@x.cc", Purpose::Register, " 123456 "));
        assert_ne!(h, code_hash("b@x.cc", Purpose::Register, "123456"));
        assert_ne!(h, code_hash("a@x.cc", Purpose::SmsLogin, "123456"));
    }
}
