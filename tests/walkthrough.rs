//! The README walk-through, end to end, with nothing but the real binary: `serve`, `admin`, a
//! device emulator, a listening app emulator and a one-shot app command, then a clean SIGTERM
//! shutdown that leaves the device's last state in the store.

mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use procs::{Proc, WAIT, admin_ok, command, free_port, is_uuid, run};
use serde_json::Value;

const APPID: &str = "walk-app";
const SECRET: &str = "walk-secret-1";
const EMAIL: &str = "walker@example.com";
const PASSWORD: &str = "pass1234";
const DEVICEID: &str = "100000abcd";
const FACTORY_KEY: &str = "factory-key-abcd";

/// One plain HTTP/1.1 GET; `None` when nothing listens yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Waits until the hub answers `/healthz` (or fails if it exits first).
fn wait_healthy(hub: &mut Proc, port: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((200, body)) = http_get(port, "/healthz") {
            assert_eq!(body.trim(), "ok");
            return;
        }
        assert!(Instant::now() < deadline, "hub not healthy within {WAIT:?}\n{}", hub.stderr());
        if let Some(status) = hub.try_status() {
            panic!("hub exited early ({status})\n{}", hub.stderr());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

fn is_event(line: &str, event: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == event)
}

fn emulate_app(cwd: &Path, server: &str, ca: &Path, extra: &[&str]) -> std::process::Command {
    emulate_app_as(cwd, server, ca, PASSWORD, extra)
}

fn emulate_app_as(cwd: &Path, server: &str, ca: &Path, password: &str, extra: &[&str]) -> std::process::Command {
    let mut args =
        vec!["emulate", "app", "--appid", APPID, "--secret", SECRET, "--email", EMAIL, "--password", password, "--server", server];
    if server.starts_with("https://") {
        args.extend(["--ca", ca.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let mut c = command(&args);
    c.current_dir(cwd);
    c
}

#[test]
fn readme_walkthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let data = cwd.join("data");
    let data_s = data.to_str().unwrap();
    let (p_http, p_https) = loop {
        let (a, b) = (free_port(), free_port());
        if a != b {
            break (a, b);
        }
    };

    // The store is prepared before the hub starts (app id) and while it runs (user, device).
    admin_ok(&data, &["app", "add", "--appid", APPID, "--secret", SECRET]);

    let http = format!("127.0.0.1:{p_http}");
    let https = format!("127.0.0.1:{p_https}");
    let mut serve_cmd = command(&[
        "serve",
        "--data-dir",
        data_s,
        "--http",
        &http,
        "--https",
        &https,
        "--metrics",
        "127.0.0.1:0",
        "--ack-timeout-ms",
        "5000",
    ]);
    serve_cmd.current_dir(cwd);
    let mut hub = Proc::spawn("serve", serve_cmd);
    wait_healthy(&mut hub, p_http);

    // With the default TLS paths, the hub generated a development pair in its working directory.
    let ca = cwd.join("certs/dev-cert.pem");
    assert!(ca.exists(), "no generated certificate at {}", ca.display());
    assert!(cwd.join("certs/dev-key.pem").exists());

    // Dispatch advertises the TLS listener.
    let (status, body) = http_get(p_http, "/dispatch/app").expect("dispatch");
    assert_eq!(status, 200);
    let dispatch = json_line(&body);
    assert_eq!(dispatch["port"], p_https, "{dispatch}");

    let apikey = admin_ok(&data, &["user", "add", "--email", EMAIL, "--password", PASSWORD]).trim().to_owned();
    assert!(is_uuid(&apikey), "{apikey}");
    let added = admin_ok(
        &data,
        &["device", "add", "--deviceid", DEVICEID, "--factory-apikey", FACTORY_KEY, "--model", "SW1", "--owner", EMAIL, "--name", "Lamp"],
    );
    assert!(added.contains(&apikey), "{added}");

    let https_url = format!("https://127.0.0.1:{p_https}");
    let http_url = format!("http://127.0.0.1:{p_http}");

    // The device: dispatch and register over TLS, trusting the generated certificate.
    let mut dev_cmd = command(&[
        "emulate",
        "device",
        "--deviceid",
        DEVICEID,
        "--factory-apikey",
        FACTORY_KEY,
        "--server",
        &https_url,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    dev_cmd.current_dir(cwd);
    let mut device = Proc::spawn("device", dev_cmd);
    let registered = json_line(&device.wait_line("a registered event", |l| is_event(l, "registered")));
    assert_eq!(registered["deviceid"], DEVICEID, "{registered}");
    // The hub hands the device its owner's apikey in place of the factory key.
    assert_eq!(registered["apikey"], apikey.as_str(), "{registered}");

    // A second session of the same user, listening (until it is killed, as in the README).
    let mut listener = Proc::spawn("listening app", emulate_app(cwd, &https_url, &ca, &["--listen", "0"]));
    let online = json_line(&listener.wait_line("an online event", |l| is_event(l, "online")));
    assert_eq!(online["apikey"], apikey.as_str(), "{online}");

    // The command, to completion: the device's ack comes back.
    let out = run(emulate_app(cwd, &https_url, &ca, &["--update", DEVICEID, "--params", r#"{"switch":"on"}"#]));
    assert!(out.success(), "update failed\n{out}");
    let reply = reply_line(&out);
    assert_eq!(reply["error"], 0, "{out}");
    assert_eq!(reply["deviceid"], DEVICEID, "{out}");
    assert!(reply["sequence"].is_string(), "{out}");

    // The device applied it...
    let state = json_line(&device.wait_line("a state event with switch on", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == "state" && v["params"]["switch"] == "on")
    }));
    assert_eq!(state["deviceid"], DEVICEID);
    // ...and the other session of the user heard about it.
    let update = json_line(&listener.wait_line("an update frame with switch on", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["action"] == "update" && v["params"]["switch"] == "on")
    }));
    assert_eq!(update["deviceid"], DEVICEID, "{update}");

    // A query over the plain HTTP listener (ws:// on the same port) sees the new state.
    let out = run(emulate_app(cwd, &http_url, &ca, &["--query", DEVICEID, "--keys", "switch"]));
    assert!(out.success(), "query failed\n{out}");
    let reply = reply_line(&out);
    assert_eq!(reply["error"], 0, "{out}");
    assert_eq!(reply["params"]["switch"], "on", "{out}");

    // Sharing with Bob while the hub runs: once the hub has reloaded who may reach the lamp,
    // Bob switches it through Alice's apikey (`--shared-by`).
    admin_ok(&data, &["user", "add", "--email", "bob@example.com", "--password", PASSWORD]);
    admin_ok(&data, &["device", "share", "--deviceid", DEVICEID, "--with", "bob@example.com"]);
    let bob_update = || {
        let mut c = command(&[
            "emulate",
            "app",
            "--appid",
            APPID,
            "--secret",
            SECRET,
            "--email",
            "bob@example.com",
            "--password",
            PASSWORD,
            "--server",
            &http_url,
            "--update",
            DEVICEID,
            "--params",
            r#"{"switch":"off"}"#,
            "--shared-by",
            &apikey,
        ]);
        c.current_dir(cwd);
        run(c)
    };
    let deadline = Instant::now() + WAIT;
    let out = loop {
        let out = bob_update();
        if out.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.success(), "Bob could not switch the shared lamp\n{out}");
    assert_eq!(reply_line(&out)["error"], 0, "{out}");
    device.wait_line("a state event with switch off", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == "state" && v["params"]["switch"] == "off")
    });
    listener.wait_line("an update frame with switch off", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["action"] == "update" && v["params"]["switch"] == "off")
    });
    // Alice switches it back on for the rest of the walk.
    let out = run(emulate_app(cwd, &https_url, &ca, &["--update", DEVICEID, "--params", r#"{"switch":"on"}"#]));
    assert!(out.success() && reply_line(&out)["error"] == 0, "{out}");

    // A wrong password is refused with a non-zero exit.
    let out = run(emulate_app_as(cwd, &http_url, &ca, "wrong-pass1", &[]));
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("10001"), "{out}");

    // Stop the device (Ctrl-C): the listener hears it go offline, and an update now is a 504.
    device.signal("INT");
    let status = device.wait_exit();
    assert!(status.success(), "device emulator exited with {status}\n{}", device.stderr());
    let sysmsg = json_line(&listener.wait_line("a sysmsg with online false", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["action"] == "sysmsg" && v["params"]["online"] == false)
    }));
    assert_eq!(sysmsg["deviceid"], DEVICEID, "{sysmsg}");
    let out = run(emulate_app(cwd, &https_url, &ca, &["--update", DEVICEID, "--params", r#"{"switch":"off"}"#]));
    assert!(!out.success(), "an update to an offline device succeeded\n{out}");
    assert_eq!(reply_line(&out)["error"], 504, "{out}");

    // A clean stop: SIGTERM, exit 0.
    hub.terminate();
    let status = hub.wait_exit();
    assert!(status.success(), "serve exited with {status}\n{}", hub.stderr());
    drop(listener);

    // The device's last state is in the store.
    let list = admin_ok(&data, &["device", "list"]);
    let row = list.lines().find(|l| l.starts_with(DEVICEID)).unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains(r#""switch":"on""#), "state not saved\n{list}");
    assert!(row.contains(&apikey) && row.contains("SW1"), "{list}");
}

/// The reply line an app emulator printed for its command: a JSON object with `error` and no
/// `action`.
fn reply_line(out: &procs::Output) -> Value {
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("error").is_some() && v.get("action").is_none())
        .unwrap_or_else(|| panic!("no reply line\n{out}"))
}
