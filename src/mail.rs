//! Mail that leaves the box: verification codes and share invites sent over SMTP with `lettre`.
//!
//! [`SmtpSender`] is the [`CodeSender`] a hub uses when `--smtp-url` is set. It owns the SMTP
//! transport and hands each mail to its own delivery task on the hub's [`TaskTracker`], so the
//! request that asked for the mail never waits for the relay. A delivery that fails for a
//! transient reason (relay down, 4xx answer, timeout) is retried with back-off ([`RETRY_DELAYS`]:
//! first after one second, then up to a minute apart) until [`GIVE_UP_AFTER`] has passed; a
//! permanent refusal (5xx) is logged and dropped. At most [`MAX_QUEUED`] mails wait at once; past
//! that `send` fails at once, and the caller answers as for any delivery failure.
//!
//! SMS has no gateway yet: codes for phone numbers still go to the outbox file
//! ([`OutboxSender`]), behind the same seam.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::verify::{CODE_TTL_MS, CodeSender, InviteMail, OutboxSender, Purpose};

/// Waits between delivery attempts; the last one repeats until [`GIVE_UP_AFTER`].
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// How long a mail is retried before it is dropped (the code it carries lives 10 minutes).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);

/// Mails waiting for delivery at once, retries included.
pub const MAX_QUEUED: usize = 1000;

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an SMTP sender could not be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("smtp_url: {0}")]
    Url(String),
    #[error("mail_from: `{0}` is not an address (`name@example.com` or `Name <name@example.com>`)")]
    From(String),
}

/// Checks an SMTP URL the way [`SmtpSender::new`] will read it (for the configuration pass).
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Err("must start with smtp:// or smtps://".into());
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map(drop).map_err(|e| e.to_string())
}

/// Checks a sender address.
pub fn check_from(from: &str) -> Result<Mailbox, MailSetupError> {
    from.parse::<Mailbox>().map_err(|_| MailSetupError::From(from.to_owned()))
}

/// Sends codes and invites by SMTP; SMS codes go to the outbox file.
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    sms: OutboxSender,
    /// The runtime delivery tasks run on (`send` is called from blocking threads).
    runtime: tokio::runtime::Handle,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// One permit per mail waiting for delivery.
    queued: Arc<Semaphore>,
}

impl SmtpSender {
    /// Must be called on the runtime that will run the deliveries.
    pub fn new(
        url: &str,
        from: &str,
        data_dir: &std::path::Path,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<SmtpSender, MailSetupError> {
        check_url(url).map_err(MailSetupError::Url)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailSetupError::Url(e.to_string()))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(SmtpSender {
            transport,
            from: check_from(from)?,
            sms: OutboxSender::new(data_dir),
            runtime: tokio::runtime::Handle::current(),
            tasks,
            shutdown,
            queued: Arc::new(Semaphore::new(MAX_QUEUED)),
        })
    }

    /// Builds the message and starts its delivery; returns at once.
    fn queue(&self, to: &str, subject: String, body: String, what: &'static str) -> std::io::Result<()> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let rcpt: Mailbox = to.parse().map_err(|_| invalid(format!("`{to}` is not an email address")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(rcpt)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| invalid(e.to_string()))?;
        let permit = self
            .queued
            .clone()
            .try_acquire_owned()
            .map_err(|_| std::io::Error::other(format!("{MAX_QUEUED} mails are already waiting for the relay")))?;
        let (transport, shutdown, to) = (self.transport.clone(), self.shutdown.clone(), to.to_owned());
        self.tasks.spawn_on(
            async move {
                let _permit = permit;
                deliver(&transport, &message, &to, what, &shutdown).await;
            },
            &self.runtime,
        );
        Ok(())
    }
}

/// Sends `message` until it is accepted, refused for good, too old, or the hub stops.
async fn deliver(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: &Message,
    to: &str,
    what: &'static str,
    shutdown: &CancellationToken,
) {
    let started = tokio::time::Instant::now();
    for attempt in 0usize.. {
        let error = match transport.send(message.clone()).await {
            Ok(_) => {
                tracing::info!(to, what, attempt, "mail sent");
                return;
            }
            Err(e) => e,
        };
        if error.is_permanent() {
            tracing::error!(to, what, error = %error, "the relay refused the mail; not retrying");
            return;
        }
        let delay = RETRY_DELAYS[attempt.min(RETRY_DELAYS.len() - 1)];
        if started.elapsed() + delay > GIVE_UP_AFTER {
            tracing::error!(to, what, error = %error, attempts = attempt + 1, "cannot deliver the mail; giving up");
            return;
        }
        log_retry(to, what, &error, attempt, delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {
                tracing::warn!(to, what, "the hub is stopping: an undelivered mail is dropped");
                return;
            }
        }
    }
}

fn log_retry(to: &str, what: &str, error: &SmtpError, attempt: usize, delay: Duration) {
    if attempt == 0 {
        tracing::warn!(to, what, error = %error, retry_in = ?delay, "cannot reach the mail relay; retrying");
    } else {
        tracing::debug!(to, what, error = %error, attempt, retry_in = ?delay, "mail still undelivered; retrying");
    }
}

/// Whether a code's target is an email address (else a phone number).
fn is_email(to: &str) -> bool {
    to.contains('@')
}

/// What a code lets its owner do, for the mail's text.
fn doing(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Register => "finish creating your account",
        Purpose::ResetPassword => "reset your password",
        Purpose::CloseAccount => "close your account",
        Purpose::SmsLogin => "log in",
    }
}

/// The subject and body of a verification code mail.
pub fn code_mail(purpose: Purpose, code: &str) -> (String, String) {
    let minutes = CODE_TTL_MS / 60_000;
    (
        format!("Your verification code: {code}"),
        format!(
            "Your verification code is {code}.\n\nUse it to {} within {minutes} minutes. If you did not ask for it, ignore this mail.\n",
            doing(purpose)
        ),
    )
}

/// The subject and body of a share invite mail.
pub fn invite_mail(invite: &InviteMail<'_>) -> (String, String) {
    let expires = time::OffsetDateTime::from_unix_timestamp(invite.expires_at / 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| invite.expires_at.to_string());
    (
        format!("{} wants to share a device with you", invite.from),
        format!(
            "{} invites you to share the device {}.\n\nAccept in the app with this code: {}\n\nThe invitation expires at {expires}.\n",
            invite.from, invite.deviceid, invite.code
        ),
    )
}

impl CodeSender for SmtpSender {
    fn send(&self, to: &str, purpose: Purpose, code: &str) -> std::io::Result<()> {
        if !is_email(to) {
            return self.sms.send(to, purpose, code);
        }
        let (subject, body) = code_mail(purpose, code);
        self.queue(to, subject, body, purpose.name())
    }

    fn send_invite(&self, to: &str, invite: &InviteMail<'_>) -> std::io::Result<()> {
        let (subject, body) = invite_mail(invite);
        self.queue(to, subject, body, "share-invite")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_lettre() {
        assert!(check_url("smtp://127.0.0.1:2525").is_ok());
        assert!(check_url("smtp://relay.example.com:587?tls=required").is_ok());
        assert!(check_url("smtps://user:pass@relay.example.com").is_ok());
        assert!(check_url("http://relay.example.com").is_err());
        assert!(check_url("smtp://").is_err());
    }

    #[test]
    fn retries_start_soon_and_last_long_enough() {
        assert!(RETRY_DELAYS[0] <= Duration::from_secs(5));
        assert!(GIVE_UP_AFTER >= Duration::from_secs(600));
    }

    #[test]
    fn mails_carry_the_code() {
        let (subject, body) = code_mail(Purpose::Register, "123456");
        assert!(subject.contains("123456") && body.contains("123456"));
        let invite = InviteMail { code: "654321", from: "a@x.cc", deviceid: "1000000001", expires_at: 1_800_000_000_000 };
        let (subject, body) = invite_mail(&invite);
        assert!(subject.contains("a@x.cc"));
        assert!(body.contains("654321") && body.contains("1000000001") && body.contains("2027-01-15"));
    }
}
