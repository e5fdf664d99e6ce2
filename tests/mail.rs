//! Mail that leaves the box: a hub with `smtp_url` sends verification codes to a real SMTP server
//! on loopback (Python's aiosmtpd, from the venv `.ci/run` makes), answers the request before the
//! mail is out, and retries while the relay is down.
//!
//! The Python with aiosmtpd is `$SWITCHYARD_TEST_PYTHON`, else `.ci/venv/bin/python`, made by
//! the tests themselves when it is missing.

mod common;
mod procs;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PASSWORD, TestHub};
use procs::{Proc, free_port};
use serde_json::{Value, json};

const FROM: &str = "hub@example.com";

/// The Python interpreter that has aiosmtpd: `$SWITCHYARD_TEST_PYTHON`, else the venv
/// `.ci/venv`, made here (once per test run, from PyPI) when it is missing, so the README's test
/// command works on a fresh machine. A venv that cannot be made fails the test and says why.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_TEST_PYTHON") {
        return p.into();
    }
    static VENV: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = VENV.lock().unwrap_or_else(|p| p.into_inner());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv");
    let venv = dir.join("bin/python");
    let has_aiosmtpd = |py: &PathBuf| Command::new(py).args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
    if venv.exists() && has_aiosmtpd(&venv) {
        return venv;
    }
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    eprintln!("making {} with aiosmtpd for the mail tests", dir.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&dir));
    run(Command::new(dir.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", "aiosmtpd"]));
    assert!(
        has_aiosmtpd(&venv),
        "no Python with aiosmtpd for the mail tests: set SWITCHYARD_TEST_PYTHON, or run \
         `python3 -m venv .ci/venv && .ci/venv/bin/pip install aiosmtpd`"
    );
    venv
}

/// An SMTP server on `127.0.0.1:port` that prints each message as a JSON line.
fn smtp_sink(port: u16) -> Proc {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(port.to_string());
    let mut sink = Proc::spawn("smtp sink", cmd);
    sink.wait_line("the sink to be ready", |l| l == "ready");
    sink
}

/// Waits for the message to `to` and returns it as the sink printed it. Blocks its thread: the
/// tests run on a multi-threaded runtime so the hub keeps going meanwhile.
fn received(sink: &mut Proc, to: &str) -> Value {
    let line = sink.wait_line(&format!("a mail to {to}"), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["to"].as_array().is_some_and(|a| a.iter().any(|t| t == to)))
    });
    serde_json::from_str(&line).unwrap()
}

/// A header's value in a raw message (first occurrence, unfolded).
fn header(data: &str, name: &str) -> String {
    let head = data.split("\r\n\r\n").next().unwrap_or(data).replace("\r\n ", " ").replace("\r\n\t", " ");
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {name} header in {data}"))
}

/// The six-digit code in a text.
fn code_in(text: &str) -> String {
    text.as_bytes()
        .windows(6)
        .position(|w| w.iter().all(u8::is_ascii_digit))
        .map(|i| text[i..i + 6].to_owned())
        .unwrap_or_else(|| panic!("no code in {text}"))
}

async fn hub_mailing_to(port: u16) -> TestHub {
    TestHub::start_with(|s| s.set("smtp_url", format!("smtp://127.0.0.1:{port}")).set("mail_from", format!("Switchyard <{FROM}>"))).await
}

async fn ask_code(hub: &TestHub, email: &str) -> Duration {
    let started = Instant::now();
    let r = hub.post_signed("/v2/user/verification-code", &json!({ "type": 0, "email": email }).to_string()).await;
    assert_eq!(r["error"], 0, "{r}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_code_is_mailed_and_registers() {
    let port = free_port();
    let mut sink = smtp_sink(port);
    let hub = hub_mailing_to(port).await;
    let email = "new.user@example.com";
    ask_code(&hub, email).await;

    let mail = received(&mut sink, email);
    assert_eq!(mail["from"], FROM);
    let data = mail["data"].as_str().unwrap();
    assert!(header(data, "From").contains(FROM), "{data}");
    assert!(header(data, "To").contains(email), "{data}");
    let subject = header(data, "Subject");
    assert!(subject.contains("verification code"), "{subject}");
    let body = data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let code = code_in(body);
    assert_eq!(code_in(&subject), code);

    // The mailed code is the one the hub checks.
    let body = json!({ "countryCode": "+86", "email": email, "verificationCode": code, "password": PASSWORD }).to_string();
    let r = hub.post_signed("/v2/user/register", &body).await;
    assert_eq!(r["error"], 0, "{r}");
    // Nothing went to the outbox file.
    assert!(!switchyard::verify::OutboxSender::path_in(&hub.dir.path().join("data")).exists());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_is_retried_until_the_relay_comes_up() {
    let port = free_port();
    let hub = hub_mailing_to(port).await;
    let email = "patient@example.com";
    // Nothing listens yet: the request is answered anyway, without waiting for the relay.
    let took = ask_code(&hub, email).await;
    assert!(took < Duration::from_secs(2), "the code request waited {took:?} for the relay");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut sink = smtp_sink(port);
    let mail = received(&mut sink, email);
    let data = mail["data"].as_str().unwrap();
    assert!(header(data, "To").contains(email), "{data}");
    code_in(&header(data, "Subject"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_invite_is_mailed_with_its_code() {
    use common::xlink::{product, xlink};
    let port = free_port();
    let mut sink = smtp_sink(port);
    let hub = hub_mailing_to(port).await;
    let alice = hub.user("alice@example.com").await;
    product(&hub, "lamp", true).await;
    let x = xlink(&hub, &alice);
    let id = x.register("lamp", "aabbccddee01").await.ok()["device_id"].as_str().unwrap().to_owned();
    let r = x.invite(&id, "email", Some("friend@example.com")).await;
    let code = r.ok()["invite_code"].as_str().unwrap().to_owned();

    let mail = received(&mut sink, "friend@example.com");
    assert_eq!(mail["from"], FROM);
    let data = mail["data"].as_str().unwrap();
    assert!(header(data, "Subject").contains("alice@example.com"), "{data}");
    let body = data.split_once("\r\n\r\n").map_or("", |(_, b)| b).replace("=\r\n", "");
    assert!(body.contains(&code) && body.contains(&id), "{data}");
    hub.stop().await;
}
