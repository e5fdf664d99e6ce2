//! The real `switchyard` binary: configuration errors, help, and the `admin` commands against a
//! store in a temporary directory.

mod procs;

use procs::{Proc, admin, admin_ok, command, is_uuid, open_test_store, run, sy};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// --- serve: configuration problems ---------------------------------------------------------

#[test]
fn serve_reports_every_bad_flag_at_once() {
    let dir = tmp();
    let data = dir.path().join("data");
    let out = sy(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--http",
        "nonsense",
        "--ack-timeout-ms",
        "abc",
        "--region",
        "mars",
        "--https",
        "off",
    ]);
    assert!(!out.success(), "{out}");
    assert_eq!(out.status.code(), Some(2), "{out}");
    for needle in ["http", "nonsense", "ack_timeout_ms", "abc", "region", "mars"] {
        assert!(out.stderr.contains(needle), "stderr does not mention `{needle}`\n{out}");
    }
    // Three problems, three lines.
    let problems = out.stderr.lines().filter(|l| l.contains("nonsense") || l.contains("`abc`") || l.contains("mars")).count();
    assert_eq!(problems, 3, "{out}");
    // Nothing was started or written.
    assert!(!data.exists(), "the store was opened despite the bad configuration");
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn serve_rejects_out_of_range_and_both_listeners_off() {
    let dir = tmp();
    let data = dir.path().join("data");
    let out = sy(&["serve", "--data-dir", data.to_str().unwrap(), "--hb-interval-secs", "0", "--https", "off", "--http", "off"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("hb_interval_secs"), "{out}");
    let out = sy(&["serve", "--data-dir", data.to_str().unwrap(), "--https", "off", "--http", "off"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("both off"), "{out}");
    assert!(!data.exists());
}

#[test]
fn serve_reports_unknown_config_file_keys() {
    let dir = tmp();
    let data = dir.path().join("data");
    let file = dir.path().join("switchyard.toml");
    // Valid listeners (port 0, TLS off) so the only problems are the file's.
    std::fs::write(&file, "http = \"127.0.0.1:0\"\nhttps = \"off\"\nregion = \"mars\"\nbogus_key = 1\n").unwrap();
    let out = sy(&["serve", "--config", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--region", "eu"]);
    assert!(!out.success(), "{out}");
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("bogus_key"), "{out}");
    // The flag wins over the file, so the file's bad region is not a problem.
    assert!(!out.stderr.contains("mars"), "{out}");
    assert!(!data.exists());

    // Bad values in the file are reported together with unknown keys.
    std::fs::write(&file, "http = \"127.0.0.1:0\"\nhttps = \"off\"\nack_timeout_ms = \"soon\"\nlisten = \"x\"\n").unwrap();
    let out = sy(&["serve", "--config", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("listen"), "{out}");
    assert!(out.stderr.contains("ack_timeout_ms") && out.stderr.contains("soon"), "{out}");

    // A file that is not TOML, and one that does not exist.
    std::fs::write(&file, "http = [unclosed\n").unwrap();
    let out = sy(&["serve", "--config", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--https", "off"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("config file"), "{out}");
    let missing = dir.path().join("missing.toml");
    let out = sy(&["serve", "--config", missing.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--https", "off"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("missing.toml"), "{out}");
    assert!(!data.exists());
}

#[test]
fn serve_reports_invalid_environment_values() {
    let dir = tmp();
    let data = dir.path().join("data");
    let mut cmd = command(&["serve", "--data-dir", data.to_str().unwrap(), "--http", "127.0.0.1:0", "--https", "off"]);
    cmd.env("SWITCHYARD_ACK_TIMEOUT_MS", "abc");
    let out = run(cmd);
    assert!(!out.success(), "{out}");
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("ack_timeout_ms") && out.stderr.contains("abc"), "{out}");
    assert!(!data.exists());

    // A flag overrides the variable: then the variable's bad value does not matter, and the
    // remaining problem (from another variable) is still found.
    let mut cmd =
        command(&["serve", "--data-dir", data.to_str().unwrap(), "--http", "127.0.0.1:0", "--https", "off", "--ack-timeout-ms", "500"]);
    cmd.env("SWITCHYARD_ACK_TIMEOUT_MS", "abc").env("SWITCHYARD_REGION", "moon");
    let out = run(cmd);
    assert!(!out.success(), "{out}");
    assert!(!out.stderr.contains("abc"), "{out}");
    assert!(out.stderr.contains("moon"), "{out}");
}

/// A public listener with loopback exempt from the rate limit and no trusted proxy is warned
/// about at start: behind a reverse proxy on the same host, nobody would be limited.
#[test]
fn serve_warns_when_a_local_proxy_would_exempt_everyone() {
    let started = |extra: &[&str]| {
        let dir = tmp();
        let data = dir.path().join("data");
        let mut args = vec!["serve", "--data-dir", data.to_str().unwrap(), "--http", "0.0.0.0:0", "--https", "off", "--metrics", "off"];
        args.extend_from_slice(extra);
        let hub = Proc::spawn("serve", command(&args));
        let deadline = std::time::Instant::now() + procs::WAIT;
        while !hub.stderr().contains("hub started") {
            assert!(std::time::Instant::now() < deadline, "the hub did not start:\n{}", hub.stderr());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        hub.stderr()
    };
    let log = started(&[]);
    assert!(log.contains("loopback clients are exempt") && log.contains("--trusted-proxies"), "{log}");
    for extra in [&["--trusted-proxies", "127.0.0.1"][..], &["--rate-limit-loopback", "true"]] {
        let log = started(extra);
        assert!(!log.contains("loopback clients are exempt"), "{extra:?}: {log}");
    }
}

// --- help ----------------------------------------------------------------------------------

#[test]
fn help_lists_commands_and_flags() {
    let top = sy(&["--help"]);
    assert!(top.success(), "{top}");
    for cmd in ["serve", "admin", "emulate"] {
        assert!(top.stdout.contains(cmd), "`switchyard --help` does not list {cmd}\n{top}");
    }

    let serve = sy(&["serve", "--help"]);
    assert!(serve.success(), "{serve}");
    for flag in
        ["--data-dir", "--http ", "--https", "--ack-timeout-ms", "--hb-interval-secs", "--config", "--tls-cert", "--tls-key", "--region"]
    {
        assert!(serve.stdout.contains(flag), "`serve --help` does not mention {flag}\n{serve}");
    }
    // Every flag names its environment variable.
    assert!(serve.stdout.contains("SWITCHYARD_ACK_TIMEOUT_MS"), "{serve}");

    let adm = sy(&["admin", "--help"]);
    assert!(adm.success(), "{adm}");
    assert!(adm.stdout.contains("--data-dir"), "{adm}");
    for cmd in ["app", "user", "device"] {
        assert!(adm.stdout.contains(cmd), "{adm}");
    }

    let emu = sy(&["emulate", "device", "--help"]);
    assert!(emu.success(), "{emu}");
    for flag in ["--deviceid", "--factory-apikey", "--server", "--ca"] {
        assert!(emu.stdout.contains(flag), "{emu}");
    }

    // An unknown flag is a usage error, not a start.
    let bad = sy(&["serve", "--no-such-flag"]);
    assert!(!bad.success(), "{bad}");
    assert!(bad.stderr.contains("--no-such-flag"), "{bad}");
}

// --- admin ---------------------------------------------------------------------------------

#[test]
fn admin_app_add() {
    let dir = tmp();
    let out = admin_ok(dir.path(), &["app", "add", "--appid", "my-app", "--secret", "s3cret-value"]);
    assert!(out.contains("my-app"), "{out}");
    // Twice is an error, and so is a short secret.
    let dup = admin(dir.path(), &["app", "add", "--appid", "my-app", "--secret", "s3cret-value"]);
    assert!(!dup.success(), "{dup}");
    assert!(dup.stderr.contains("already exists"), "{dup}");
    let short = admin(dir.path(), &["app", "add", "--appid", "other", "--secret", "short"]);
    assert!(!short.success(), "{short}");
    assert!(short.stderr.contains("--secret"), "{short}");
}

#[test]
fn admin_user_add_prints_only_the_apikey() {
    let dir = tmp();
    let out = admin(dir.path(), &["user", "add", "--email", "alice@example.com", "--password", "pass1234"]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.ends_with('\n'), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be the apikey alone\n{out}");
    assert!(is_uuid(lines[0]), "not an apikey: {:?}", lines[0]);

    // A second user gets a different key.
    let bob = admin_ok(dir.path(), &["user", "add", "--email", "bob@example.com", "--password", "pass!word", "--phone", "+8618023456789"]);
    assert!(is_uuid(bob.trim()));
    assert_ne!(bob.trim(), lines[0]);

    let list = admin_ok(dir.path(), &["user", "list"]);
    assert!(list.contains("alice@example.com") && list.contains(lines[0]), "{list}");
    assert!(list.contains("bob@example.com") && list.contains(bob.trim()) && list.contains("+8618023456789"), "{list}");
    assert_eq!(list.lines().count(), 3, "a header and two users\n{list}");
}

#[test]
fn admin_user_add_refuses_duplicates_and_weak_passwords() {
    let dir = tmp();
    admin_ok(dir.path(), &["user", "add", "--email", "carol@example.com", "--password", "pass1234"]);

    // The same email, also in another case, is a clear error with nothing on stdout.
    for email in ["carol@example.com", "Carol@Example.COM"] {
        let dup = admin(dir.path(), &["user", "add", "--email", email, "--password", "pass1234"]);
        assert!(!dup.success(), "{dup}");
        assert!(dup.stdout.trim().is_empty(), "{dup}");
        assert!(dup.stderr.contains("already exists") && dup.stderr.to_lowercase().contains("carol@example.com"), "{dup}");
    }

    // Weak passwords: too short, only letters, only digits.
    for weak in ["abc12", "abcdefgh", "12345678"] {
        let out = admin(dir.path(), &["user", "add", "--email", "dan@example.com", "--password", weak]);
        assert!(!out.success(), "password {weak} accepted\n{out}");
        assert!(out.stderr.contains("--password"), "{out}");
        assert!(out.stdout.trim().is_empty(), "{out}");
    }
    // Not an email; a phone without its country code.
    let out = admin(dir.path(), &["user", "add", "--email", "not-an-email", "--password", "pass1234"]);
    assert!(!out.success() && out.stderr.contains("--email"), "{out}");
    let out = admin(dir.path(), &["user", "add", "--email", "dan@example.com", "--password", "pass1234", "--phone", "18023456789"]);
    assert!(!out.success() && out.stderr.contains("--phone"), "{out}");

    let list = admin_ok(dir.path(), &["user", "list"]);
    assert!(!list.contains("dan@example.com"), "a refused user was stored\n{list}");
    assert_eq!(list.lines().count(), 2, "{list}");
}

#[tokio::test]
async fn admin_devices_owners_and_shares() {
    let dir = tmp();
    let owner = admin_ok(dir.path(), &["user", "add", "--email", "owner@example.com", "--password", "pass1234"]).trim().to_owned();
    let friend = admin_ok(dir.path(), &["user", "add", "--email", "friend@example.com", "--password", "pass1234"]).trim().to_owned();

    let out = admin_ok(
        dir.path(),
        &["device", "add", "--deviceid", "1000000001", "--factory-apikey", "fkey-1", "--model", "EMU-SW1", "--owner", "owner@example.com"],
    );
    assert!(out.contains("1000000001") && out.contains(&owner), "{out}");
    let out = admin_ok(dir.path(), &["device", "add", "--deviceid", "1000000002", "--factory-apikey", "fkey-2"]);
    assert!(out.contains("not bound"), "{out}");

    // Bad adds: unknown owner, duplicate id, invalid id, empty factory key.
    let out = admin(dir.path(), &["device", "add", "--deviceid", "1000000003", "--factory-apikey", "k", "--owner", "ghost@example.com"]);
    assert!(!out.success() && out.stderr.contains("ghost@example.com"), "{out}");
    let out = admin(dir.path(), &["device", "add", "--deviceid", "1000000001", "--factory-apikey", "k"]);
    assert!(!out.success() && out.stderr.contains("already exists"), "{out}");
    let out = admin(dir.path(), &["device", "add", "--deviceid", "bad id!", "--factory-apikey", "k"]);
    assert!(!out.success() && out.stderr.contains("--deviceid"), "{out}");
    let out = admin(dir.path(), &["device", "add", "--deviceid", "1000000004", "--factory-apikey", ""]);
    assert!(!out.success() && out.stderr.contains("--factory-apikey"), "{out}");

    let out = admin_ok(dir.path(), &["device", "share", "--deviceid", "1000000001", "--with", "friend@example.com"]);
    assert!(out.contains("1000000001") && out.contains("friend@example.com"), "{out}");
    // Sharing again, with the owner, with nobody, or a device without owner fails.
    let out = admin(dir.path(), &["device", "share", "--deviceid", "1000000001", "--with", "friend@example.com"]);
    assert!(!out.success() && out.stderr.contains("already exists"), "{out}");
    let out = admin(dir.path(), &["device", "share", "--deviceid", "1000000001", "--with", "owner@example.com"]);
    assert!(!out.success(), "{out}");
    let out = admin(dir.path(), &["device", "share", "--deviceid", "1000000001", "--with", "ghost@example.com"]);
    assert!(!out.success() && out.stderr.contains("ghost@example.com"), "{out}");
    let out = admin(dir.path(), &["device", "share", "--deviceid", "1000000002", "--with", "friend@example.com"]);
    assert!(!out.success(), "{out}");
    let out = admin(dir.path(), &["device", "share", "--deviceid", "9999999999", "--with", "friend@example.com"]);
    assert!(!out.success() && out.stderr.contains("9999999999"), "{out}");

    let list = admin_ok(dir.path(), &["device", "list"]);
    assert_eq!(list.lines().count(), 3, "a header and two devices\n{list}");
    let row1 = list.lines().find(|l| l.starts_with("1000000001")).unwrap_or_else(|| panic!("{list}"));
    assert!(row1.contains("EMU-SW1") && row1.contains(&owner), "{list}");
    let row2 = list.lines().find(|l| l.starts_with("1000000002")).unwrap_or_else(|| panic!("{list}"));
    assert!(!row2.contains(&owner), "{list}");
    let users = admin_ok(dir.path(), &["user", "list"]);
    assert!(users.contains(&owner) && users.contains(&friend), "{users}");

    // The store the commands wrote holds the share (the listing does not show shares).
    let store = open_test_store(dir.path()).await;
    let audience = store.audience(&switchyard::ids::DeviceId::new("1000000001")).await.unwrap().expect("owned device");
    assert_eq!(audience.owner.as_str(), owner);
    assert_eq!(audience.sharees.iter().map(|k| k.as_str().to_owned()).collect::<Vec<_>>(), [friend]);
    assert!(store.audience(&switchyard::ids::DeviceId::new("1000000002")).await.unwrap().is_none());
    store.close().await;
}

#[test]
fn admin_data_dir_from_environment() {
    let dir = tmp();
    let mut cmd = command(&["admin", "user", "add", "--email", "env@example.com", "--password", "pass1234"]);
    cmd.env("SWITCHYARD_DATA_DIR", dir.path());
    let out = run(cmd);
    assert!(out.success(), "{out}");
    let list = admin_ok(dir.path(), &["user", "list"]);
    assert!(list.contains("env@example.com") && list.contains(out.stdout.trim()), "{list}");
}

#[tokio::test]
async fn admin_products_and_devices_under_them() {
    let dir = tmp();
    let owner = admin_ok(dir.path(), &["user", "add", "--email", "maker@example.com", "--password", "pass1234"]).trim().to_owned();
    let out = admin_ok(
        dir.path(),
        &[
            "product",
            "add",
            "--product-id",
            "lamp-1",
            "--name",
            "Desk lamp",
            "--model",
            "PSF-B01",
            "--allow-user-register",
            "--owner",
            "maker@example.com",
        ],
    );
    assert!(out.contains("lamp-1") && out.contains("users may register"), "{out}");
    admin_ok(dir.path(), &["product", "add", "--product-id", "plug", "--name", "Plug"]);

    // Bad adds: a taken id, a bad id, an empty name, an unknown owner.
    let out = admin(dir.path(), &["product", "add", "--product-id", "plug", "--name", "Again"]);
    assert!(!out.success() && out.stderr.contains("already exists"), "{out}");
    let out = admin(dir.path(), &["product", "add", "--product-id", "bad id", "--name", "x"]);
    assert!(!out.success() && out.stderr.contains("--product-id"), "{out}");
    let out = admin(dir.path(), &["product", "add", "--product-id", "p2", "--name", " "]);
    assert!(!out.success() && out.stderr.contains("--name"), "{out}");
    let out = admin(dir.path(), &["product", "add", "--product-id", "p3", "--name", "x", "--owner", "ghost@example.com"]);
    assert!(!out.success() && out.stderr.contains("ghost@example.com"), "{out}");

    // Devices under a product: its model by default, one per MAC, the MAC checked.
    admin_ok(
        dir.path(),
        &["device", "add", "--deviceid", "2000000001", "--factory-apikey", "k1", "--product", "lamp-1", "--mac", "AA:BB:CC:DD:EE:01"],
    );
    let out = admin(
        dir.path(),
        &["device", "add", "--deviceid", "2000000002", "--factory-apikey", "k2", "--product", "lamp-1", "--mac", "aabbccddee01"],
    );
    assert!(!out.success() && out.stderr.contains("already exists"), "{out}");
    let out =
        admin(dir.path(), &["device", "add", "--deviceid", "2000000003", "--factory-apikey", "k3", "--product", "lamp-1", "--mac", "nope"]);
    assert!(!out.success() && out.stderr.contains("--mac"), "{out}");
    let out = admin(dir.path(), &["device", "add", "--deviceid", "2000000004", "--factory-apikey", "k4", "--product", "ghost"]);
    assert!(!out.success() && out.stderr.contains("ghost"), "{out}");
    admin_ok(dir.path(), &["device", "add", "--deviceid", "2000000005", "--factory-apikey", "k5", "--product", "plug", "--model", "OWN"]);

    let list = admin_ok(dir.path(), &["product", "list"]);
    assert_eq!(list.lines().count(), 3, "a header and two products\n{list}");
    let lamp = list.lines().find(|l| l.starts_with("lamp-1")).unwrap_or_else(|| panic!("{list}"));
    assert!(lamp.contains("Desk lamp") && lamp.contains("PSF-B01") && lamp.contains("yes") && lamp.contains(&owner), "{list}");
    assert!(lamp.trim_end().ends_with(" 1"), "one device: {list}");
    let plug = list.lines().find(|l| l.starts_with("plug")).unwrap_or_else(|| panic!("{list}"));
    assert!(plug.contains(" no ") && plug.trim_end().ends_with(" 1"), "{list}");

    let store = open_test_store(dir.path()).await;
    let product = store.product("lamp-1").await.unwrap().expect("stored");
    assert!(product.allow_user_register && product.owner.as_ref().map(|k| k.as_str()) == Some(owner.as_str()));
    assert_eq!(store.device_product("2000000001").await.unwrap().as_deref(), Some("lamp-1"));
    assert_eq!(store.device("2000000001").await.unwrap().unwrap().model, "PSF-B01");
    assert_eq!(store.device("2000000005").await.unwrap().unwrap().model, "OWN");
    let key = switchyard::ids::UserKey::new(owner.as_str());
    let bound = store.register_user_device(&key, "lamp-1", "aabbccddee01", &Default::default()).await.unwrap();
    assert_eq!((bound.deviceid.as_str(), bound.device_key), ("2000000001", None), "a user's registration binds the factory record");
    store.close().await;
}
