//! Headless Chromium driven over the DevTools protocol, for tests of the dashboard in a real
//! browser: a small client over tokio-tungstenite (JSON commands with ids, answers matched by id,
//! one page target attached with `flatten`), which records every console error, uncaught
//! exception and browser log error of the page.
//!
//! Chromium is Debian's `chromium` package (`/usr/bin/chromium`, or `SWITCHYARD_TEST_CHROMIUM`).
//! When it is missing the test fails with what to install: `.ci/run` installs it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long one DevTools call or page wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running Chromium with one page. Killed on drop, with its profile directory.
pub struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    out: mpsc::UnboundedSender<Message>,
    next: AtomicU64,
    waiters: Waiters,
    session: String,
    /// Console errors, uncaught exceptions and log errors of the page, as text.
    pub errors: Arc<Mutex<Vec<String>>>,
}

/// The Chromium binary to drive.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_TEST_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "Chromium is not installed at {}: this test needs Debian's `chromium` package \
         (`apt-get install -y chromium`; .ci/run installs it), or SWITCHYARD_TEST_CHROMIUM set to a Chromium binary",
        path.display()
    );
    path
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and attaches to a blank page.
    pub async fn launch() -> Browser {
        let bin = chromium();
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1280,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        // Chromium writes the port it chose and the browser target's path here.
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(started.elapsed() < WAIT, "Chromium did not open its DevTools port: {}", log_of(profile.path()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str()).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let (out, mut outbox) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = outbox.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let waiters: Waiters = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        tokio::spawn({
            let (waiters, errors) = (waiters.clone(), errors.clone());
            async move {
                while let Some(Ok(m)) = stream.next().await {
                    let Message::Text(text) = m else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    if let Some(id) = v["id"].as_u64() {
                        if let Some(w) = waiters.lock().unwrap().remove(&id) {
                            let _ = w.send(v);
                        }
                    } else if let Some(e) = page_error(&v) {
                        errors.lock().unwrap().push(e);
                    }
                }
            }
        });
        let mut browser = Browser { child, profile, out, next: AtomicU64::new(1), waiters, session: String::new(), errors };
        let target = browser.call("Target.createTarget", json!({"url":"about:blank"})).await;
        let attached = browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Sends a DevTools command (to the page once attached) and returns its result.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(id, tx);
        self.out.send(Message::Text(msg.to_string().into())).unwrap();
        let answer = tokio::time::timeout(WAIT, rx).await.unwrap_or_else(|_| panic!("{method}: no answer")).unwrap();
        assert!(answer.get("error").is_none(), "{method} failed: {answer}");
        answer["result"].clone()
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise) and returns its value.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true})).await;
        assert!(r.get("exceptionDetails").is_none(), "evaluating {expression}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is true; fails after [`WAIT`]. Returns how long it took.
    pub async fn wait_for(&self, what: &str, expression: &str) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return started.elapsed();
            }
            assert!(started.elapsed() < WAIT, "timed out waiting until {what} ({expression}); errors: {:?}", self.errors());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens `url` and waits for the page to load.
    pub async fn navigate(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("the page loaded", "document.readyState === 'complete' && location.href !== 'about:blank'").await;
    }

    /// Clicks the middle of the element `selector` with the mouse.
    pub async fn click(&self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return null; e.scrollIntoView({{block:'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            s = json!(selector)
        );
        let at = self.eval(&js).await;
        let (x, y) = (at[0].as_f64().unwrap_or_else(|| panic!("no element {selector}")), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call("Input.dispatchMouseEvent", json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})).await;
        }
    }

    /// Focuses the field `selector`, clears it and types `text` into it.
    pub async fn type_into(&self, selector: &str, text: &str) {
        // Cleared as a user would, with an `input` event; the text is then typed.
        let clear = "(() => { const e = document.querySelector(SEL); e.focus(); \
                     if (e.value) { e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true})); } return true; })()";
        self.eval(&clear.replace("SEL", &json!(selector).to_string())).await;
        if !text.is_empty() {
            self.call("Input.insertText", json!({"text": text})).await;
        }
    }

    /// Saves a PNG of the page to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_of(profile: &Path) -> String {
    std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
}

/// The text of a DevTools event that reports an error in the page, if it is one.
fn page_error(v: &Value) -> Option<String> {
    let p = &v["params"];
    match v["method"].as_str()? {
        "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "assert")) => {
            let args: Vec<String> =
                p["args"].as_array()?.iter().map(|a| a["value"].as_str().map_or_else(|| a.to_string(), str::to_owned)).collect();
            Some(format!("console.{}: {}", p["type"].as_str()?, args.join(" ")))
        }
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            Some(format!("uncaught: {} {}", d["text"], d["exception"]["description"]))
        }
        "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!("log: {} ({})", p["entry"]["text"], p["entry"]["url"])),
        _ => None,
    }
}
