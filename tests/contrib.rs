//! The files in `contrib/`: the systemd unit has what the install page promises (a dedicated user,
//! a state directory, enough file descriptors, hardening) and runs a command the binary accepts.
//! (The sample `switchyard.toml` is checked against the settings table in `src/config`.)

mod procs;

use std::collections::HashMap;

fn unit() -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/switchyard.service")).unwrap();
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with('[')) {
        if let Some((k, v)) = line.split_once('=') {
            keys.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    keys
}

#[test]
fn the_service_unit_is_hardened_and_runs_serve() {
    let unit = unit();
    let one = |k: &str| unit.get(k).and_then(|v| v.first()).unwrap_or_else(|| panic!("no {k}=")).clone();
    assert!(!one("User").is_empty() && one("User") != "root");
    assert_eq!(one("StateDirectory"), "switchyard");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65536);
    for (key, value) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes")] {
        assert_eq!(one(key), value, "{key}");
    }
    // The command line is one the binary takes (checked with --help appended).
    let exec = one("ExecStart");
    let mut args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert_eq!(args[0], "serve");
    args.push("--help");
    let out = procs::sy(&args);
    assert!(out.success(), "{out}");
}
