//! `serve --log-format json` through the real binary: every stderr line is one JSON object, and a
//! device session's lines carry its span fields (`deviceid`, `peer`, `session`), so one device can
//! be followed through the log. `RUST_LOG` still filters.

mod procs;

use std::time::{Duration, Instant};

use procs::{Proc, WAIT, admin_ok, command, free_port};
use serde_json::Value;

const DEVICEID: &str = "100000f00d";
const FACTORY_KEY: &str = "factory-key-f00d";
const EMAIL: &str = "logs@example.com";

/// The stderr lines so far, each parsed; a line that is not a JSON object fails the test.
fn json_lines(hub: &Proc) -> Vec<Value> {
    hub.stderr()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("a stderr line is not a JSON object: {l}\n{}", hub.stderr()),
        })
        .collect()
}

/// Waits for a stderr line that satisfies `pred`.
fn wait_log(hub: &mut Proc, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = json_lines(hub).into_iter().find(|v| pred(v)) {
            return v;
        }
        if let Some(status) = hub.try_status() {
            panic!("hub exited ({status}) before {what}\n{}", hub.stderr());
        }
        assert!(Instant::now() < deadline, "no log line with {what} within {WAIT:?}\n{}", hub.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_logs_carry_the_device_session_span() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    admin_ok(&data, &["user", "add", "--email", EMAIL, "--password", "pass1234"]);
    admin_ok(&data, &["device", "add", "--deviceid", DEVICEID, "--factory-apikey", FACTORY_KEY, "--owner", EMAIL]);

    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = command(&["serve", "--data-dir", data_s, "--http", &http, "--https", "off", "--metrics", "off", "--log-format", "json"]);
    cmd.current_dir(tmp.path()).env("RUST_LOG", "info,switchyard=debug");
    let mut hub = Proc::spawn("serve", cmd);
    let started = wait_log(&mut hub, "the start", |v| v["fields"]["message"] == "hub started");
    assert_eq!(started["level"], "INFO", "{started}");

    let mut device = Proc::spawn(
        "device",
        command(&["emulate", "device", "--deviceid", DEVICEID, "--factory-apikey", FACTORY_KEY, "--server", &format!("http://{http}")]),
    );
    device.wait_line("a registered event", |l| l.contains("\"registered\""));

    let online = wait_log(&mut hub, "the device's id in its span", |v| v["span"]["deviceid"] == DEVICEID);
    let span = &online["span"];
    assert!(span["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{online}");
    assert!(span["session"].as_str().is_some_and(|s| !s.is_empty()), "{online}");
    assert!(online["fields"]["message"].is_string(), "{online}");
    // The whole span stack is there too, for nested spans.
    assert!(online["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["deviceid"] == DEVICEID)), "{online}");

    // RUST_LOG still filters: the debug lines asked for above appear, trace lines do not.
    assert!(json_lines(&hub).iter().all(|v| v["level"] != "TRACE"));
    drop(device);
    hub.terminate();
    hub.wait_exit();
    let last = json_lines(&hub);
    assert!(last.iter().any(|v| v["fields"]["message"] == "hub stopped"), "{}", hub.stderr());
}

#[test]
fn text_is_the_default_and_a_bad_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = procs::sy(&["serve", "--data-dir", data.to_str().unwrap(), "--https", "off", "--log-format", "xml"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("log_format"), "{out}");
}
