//! Typed configuration of a hub node. Every setting comes from (highest first) a command-line
//! flag, a `SWITCHYARD_*` environment variable, a key of the optional TOML file, or its default.
//! Resolution reads raw strings through [`Settings`] and reports every bad value in one pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Raw setting values by key (`http`, `ack_timeout_ms`, ...), already merged from flags, env and
/// file. Tests build one directly.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

/// Every key a node understands, with its default and what it means (used for `--help` too).
pub const KEYS: &[(&str, &str, &str)] = &[
    ("data_dir", "./data", "directory for the SQLite store and generated files"),
    ("database_url", "", "postgres://… to keep everything in PostgreSQL instead of the embedded SQLite file"),
    ("http", "127.0.0.1:8080", "plain HTTP + WebSocket listener address, or `off`"),
    ("https", "127.0.0.1:8443", "HTTPS + WSS listener address, or `off`"),
    ("metrics", "127.0.0.1:9090", "operator listener for /metrics (keep it private), or `off`"),
    ("tls_cert", "certs/dev-cert.pem", "PEM certificate chain for the TLS listener"),
    ("tls_key", "certs/dev-key.pem", "PEM private key for the TLS listener"),
    ("public_ws", "", "HOST:PORT that /dispatch advertises (default: the TLS listener, else the plain one)"),
    ("public_ip", "", "IP that /dispatch advertises (default: the public_ws host when it is an IP)"),
    ("region", "cn", "region this node serves: cn, as, us or eu"),
    ("ack_timeout_ms", "3000", "how long a routed command waits for the device's ack before 504"),
    ("hb_interval_secs", "145", "heartbeat interval told to clients in config.hbInterval"),
    ("hb_grace_secs", "30", "silence allowed past hbInterval before a session is closed"),
    ("handshake_timeout_ms", "10000", "deadline for the first frame (userOnline/register)"),
    ("max_frame_bytes", "65536", "largest WebSocket message accepted; larger closes with 1009"),
    ("outbox_capacity", "256", "frames queued per session before it counts as a slow consumer and is closed"),
    ("max_inflight", "128", "commands one app session may have waiting for device acks"),
    ("max_connections", "19000", "open connections per node (HTTP and WebSocket together)"),
    ("max_sessions_per_user", "100", "app sessions one user may have open at once on a node"),
    ("access_token_days", "30", "lifetime of an access token"),
    ("refresh_token_days", "60", "lifetime of a refresh token"),
    ("rate_limit", "300", "REST calls one client IP may make to one route per window (0 = no limit)"),
    ("rate_limit_window_secs", "300", "length of the rate-limit window"),
    ("rate_limit_loopback", "false", "apply the rate limit to loopback clients too"),
    ("trusted_proxies", "", "comma-separated proxy IPs whose X-Forwarded-For names the client"),
    ("auth_failures", "10", "failed password or code checks in a row that lock an account (0 = no lockout)"),
    ("auth_lockout_max_secs", "300", "longest lock of an account; locks start at 30 s and double"),
];

impl Settings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` unless a higher-priority source already did.
    pub fn offer(&mut self, key: &str, value: impl Into<String>) {
        self.values.entry(key.to_owned()).or_insert_with(|| value.into());
    }

    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.insert(key.to_owned(), value.into());
        self
    }

    /// Merges a TOML document below what is already set. Unknown keys and non-scalar values are
    /// errors, collected with the rest.
    pub fn offer_toml(&mut self, text: &str, errors: &mut Vec<String>) {
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("config file: {e}"));
                return;
            }
        };
        for (key, value) in table {
            if !KEYS.iter().any(|(k, _, _)| *k == key) {
                errors.push(format!("config file: unknown key `{key}`"));
                continue;
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    errors.push(format!("config file: `{key}` must be a string or number, not {}", other.type_str()));
                    continue;
                }
            };
            self.offer(&key, text);
        }
    }

    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| KEYS.iter().find(|(k, _, _)| *k == key).map(|(_, d, _)| *d).unwrap_or(""))
    }
}

/// A resolved node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded SQLite file.
    pub database_url: Option<String>,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// The operator listener (`/metrics`), apart from the public ones.
    pub metrics: Option<SocketAddr>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// True when both TLS paths are the defaults, so a development pair may be generated.
    pub tls_generate: bool,
    pub public_ws: Option<(String, u16)>,
    pub public_ip: Option<String>,
    pub region: String,
    pub ack_timeout: Duration,
    pub hb_interval: Duration,
    pub hb_grace: Duration,
    pub handshake_timeout: Duration,
    pub max_frame_bytes: usize,
    pub outbox_capacity: usize,
    pub max_inflight: usize,
    pub max_connections: usize,
    pub max_sessions_per_user: usize,
    /// Calls per client IP per route per window; 0 turns the limit off.
    pub rate_limit: u32,
    pub rate_limit_window: Duration,
    pub rate_limit_loopback: bool,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Failed secret checks in a row that lock an account; 0 turns the lockout off.
    pub auth_failures: u32,
    /// The longest lock of an account.
    pub auth_lockout_max: Duration,
}

/// All the problems found in one pass, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

struct Reader<'a> {
    settings: &'a Settings,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn number(&mut self, key: &str, min: u64, max: u64) -> u64 {
        let raw = self.settings.get(key);
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => {
                self.errors.push(format!("{key}: {n} is out of range {min}..={max}"));
                min
            }
            Err(_) => {
                self.errors.push(format!("{key}: `{raw}` is not a whole number"));
                min
            }
        }
    }

    fn flag(&mut self, key: &str) -> bool {
        match self.settings.get(key).trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            other => {
                self.errors.push(format!("{key}: `{other}` is not true or false"));
                false
            }
        }
    }

    fn listener(&mut self, key: &str) -> Option<SocketAddr> {
        let raw = self.settings.get(key).trim().to_owned();
        if raw.eq_ignore_ascii_case("off") {
            return None;
        }
        match raw.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.errors.push(format!("{key}: `{raw}` is not an address like 127.0.0.1:8080 or `off`"));
                None
            }
        }
    }
}

impl Config {
    pub fn resolve(settings: &Settings) -> Result<Config, ConfigErrors> {
        let mut r = Reader { settings, errors: Vec::new() };
        let http = r.listener("http");
        let https = r.listener("https");
        let metrics = r.listener("metrics");
        let public_ws = match settings.get("public_ws").trim() {
            "" => None,
            raw => match raw.rsplit_once(':').map(|(h, p)| (h.trim_matches(['[', ']']), p.parse::<u16>())) {
                Some((host, Ok(port))) if !host.is_empty() => Some((host.to_owned(), port)),
                _ => {
                    r.errors.push(format!("public_ws: `{raw}` is not HOST:PORT"));
                    None
                }
            },
        };
        let public_ip = match settings.get("public_ip").trim() {
            "" => None,
            raw => {
                if raw.parse::<std::net::IpAddr>().is_err() {
                    r.errors.push(format!("public_ip: `{raw}` is not an IP address"));
                }
                Some(raw.to_owned())
            }
        };
        let region = settings.get("region").trim().to_ascii_lowercase();
        if !matches!(region.as_str(), "cn" | "as" | "us" | "eu") {
            r.errors.push(format!("region: `{region}` is not one of cn, as, us, eu"));
        }
        let ack_timeout = Duration::from_millis(r.number("ack_timeout_ms", 10, 60_000));
        let hb_interval = Duration::from_secs(r.number("hb_interval_secs", 1, 3600));
        let hb_grace = Duration::from_secs(r.number("hb_grace_secs", 0, 3600));
        let handshake_timeout = Duration::from_millis(r.number("handshake_timeout_ms", 100, 120_000));
        let max_frame_bytes = r.number("max_frame_bytes", 1024, 16 << 20) as usize;
        let outbox_capacity = r.number("outbox_capacity", 1, 1 << 16) as usize;
        let max_inflight = r.number("max_inflight", 1, 1 << 16) as usize;
        let max_connections = r.number("max_connections", 1, 10_000_000) as usize;
        let max_sessions_per_user = r.number("max_sessions_per_user", 1, 1_000_000) as usize;
        let access_token_ttl = Duration::from_secs(86_400 * r.number("access_token_days", 1, 3650));
        let refresh_token_ttl = Duration::from_secs(86_400 * r.number("refresh_token_days", 1, 3650));
        let database_url = match settings.get("database_url").trim() {
            "" => None,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url.to_owned()),
            _ => {
                r.errors.push("database_url: must start with postgres:// (leave it empty for the embedded SQLite store)".to_owned());
                None
            }
        };
        let rate_limit = r.number("rate_limit", 0, 1_000_000) as u32;
        let rate_limit_window = Duration::from_secs(r.number("rate_limit_window_secs", 1, 86_400));
        let rate_limit_loopback = r.flag("rate_limit_loopback");
        let mut trusted_proxies = Vec::new();
        for part in settings.get("trusted_proxies").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse() {
                Ok(ip) => trusted_proxies.push(ip),
                Err(_) => r.errors.push(format!("trusted_proxies: `{part}` is not an IP address")),
            }
        }
        let auth_failures = r.number("auth_failures", 0, 1_000_000) as u32;
        let auth_lockout_max = Duration::from_secs(r.number("auth_lockout_max_secs", 1, 86_400));
        if http.is_none() && https.is_none() && r.errors.is_empty() {
            r.errors.push("http and https are both off: nothing to serve".to_owned());
        }
        let tls_cert = PathBuf::from(settings.get("tls_cert"));
        let tls_key = PathBuf::from(settings.get("tls_key"));
        let tls_generate = !settings.values.contains_key("tls_cert") && !settings.values.contains_key("tls_key");
        if r.errors.is_empty() {
            Ok(Config {
                data_dir: PathBuf::from(settings.get("data_dir")),
                database_url,
                http,
                https,
                metrics,
                tls_cert,
                tls_key,
                tls_generate,
                public_ws,
                public_ip,
                region,
                ack_timeout,
                hb_interval,
                hb_grace,
                handshake_timeout,
                max_frame_bytes,
                outbox_capacity,
                max_inflight,
                max_connections,
                max_sessions_per_user,
                rate_limit,
                rate_limit_window,
                rate_limit_loopback,
                trusted_proxies,
                access_token_ttl,
                refresh_token_ttl,
                auth_failures,
                auth_lockout_max,
            })
        } else {
            Err(ConfigErrors(r.errors))
        }
    }

    /// A configuration for tests and embedding: defaults, with the data dir given.
    pub fn for_data_dir(dir: impl Into<PathBuf>) -> Config {
        let dir: PathBuf = dir.into();
        Config::resolve(&Settings::new().set("data_dir", dir.to_string_lossy())).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests;
