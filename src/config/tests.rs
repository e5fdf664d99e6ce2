use super::*;

#[test]
fn defaults_resolve() {
    let c = Config::resolve(&Settings::new()).unwrap();
    assert_eq!(c.http, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(c.https, Some("127.0.0.1:8443".parse().unwrap()));
    assert_eq!(c.ack_timeout, Duration::from_secs(3));
    assert!(c.tls_generate);
    assert_eq!(c.metrics, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(Config::resolve(&Settings::new().set("metrics", "off")).unwrap().metrics, None);
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let s = Settings::new().set("http", "nonsense").set("ack_timeout_ms", "abc").set("hb_interval_secs", "0").set("region", "mars");
    let err = Config::resolve(&s).unwrap_err();
    assert_eq!(err.0.len(), 4, "{err}");
}

#[test]
fn flags_win_over_file() {
    let mut s = Settings::new();
    s.offer("ack_timeout_ms", "500");
    let mut errors = Vec::new();
    s.offer_toml("ack_timeout_ms = 900\nhb_interval_secs = 60\nbogus = 1\n", &mut errors);
    assert_eq!(errors, vec!["config file: unknown key `bogus`".to_owned()]);
    let c = Config::resolve(&s).unwrap();
    assert_eq!(c.ack_timeout, Duration::from_millis(500));
    assert_eq!(c.hb_interval, Duration::from_secs(60));
}

#[test]
fn off_disables_a_listener_but_not_both() {
    let c = Config::resolve(&Settings::new().set("https", "off")).unwrap();
    assert!(c.https.is_none());
    let err = Config::resolve(&Settings::new().set("https", "off").set("http", "OFF")).unwrap_err();
    assert!(err.to_string().contains("nothing to serve"));
}

#[test]
fn store_and_rate_limit_settings_are_checked() {
    let c = Config::resolve(&Settings::new()).unwrap();
    assert_eq!((c.database_url.as_deref(), c.rate_limit, c.rate_limit_loopback), (None, 300, false));
    let s = Settings::new()
        .set("database_url", "mysql://x")
        .set("trusted_proxies", "10.0.0.1, nonsense")
        .set("rate_limit_loopback", "maybe")
        .set("rate_limit_window_secs", "0");
    let err = Config::resolve(&s).unwrap_err();
    assert_eq!(err.0.len(), 4, "{err}");
    let c = Config::resolve(
        &Settings::new().set("database_url", "postgres://u@h/db").set("trusted_proxies", "10.0.0.1,::1").set("rate_limit_loopback", "yes"),
    )
    .unwrap();
    assert_eq!(c.database_url.as_deref(), Some("postgres://u@h/db"));
    assert_eq!(c.trusted_proxies.len(), 2);
    assert!(c.rate_limit_loopback);
}

/// `contrib/switchyard.toml` lists every setting as the table declares it. Run with
/// `SWITCHYARD_BLESS=1` to rewrite the file after changing a setting.
#[test]
fn the_sample_config_matches_the_settings() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/switchyard.toml");
    let sample = sample_toml();
    if std::env::var_os("SWITCHYARD_BLESS").is_some() {
        std::fs::write(&path, &sample).unwrap();
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(file == sample, "{} is out of date: run `SWITCHYARD_BLESS=1 cargo test --lib sample_config`", path.display());
    // Uncommented, the sample is a valid configuration that resolves to the defaults.
    let uncommented: String = sample
        .lines()
        .filter_map(|l| l.strip_prefix("# ").filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut settings = Settings::new();
    let mut errors = Vec::new();
    settings.offer_toml(&uncommented, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    for s in SETTINGS {
        assert!(uncommented.contains(&format!("{} = ", s.key())), "{} is missing", s.key());
    }
    Config::resolve(&settings).unwrap();
}
