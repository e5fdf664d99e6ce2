//! Typed configuration of a hub node. Every setting comes from (highest first) a command-line
//! flag, a `SWITCHYARD_*` environment variable, a key of the optional TOML file, or its default.
//! Resolution reads raw strings through [`Settings`] and reports every bad value in one pass.
//!
//! Each setting is declared once, in the `settings!` table below: its [`Config`] field, its key,
//! its flag's placeholder and help line, its default and how its text is read. The flags, the
//! variables, the TOML keys, `serve --help` and the resolution all come from that table.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Raw setting values by key (`http`, `ack_timeout_ms`, ...), already merged from flags, env and
/// file. Tests build one directly.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

/// One setting as the command line, the environment and the TOML file know it.
#[derive(Debug)]
pub struct Setting {
    key: &'static str,
    default: &'static str,
    value_name: &'static str,
    help: &'static str,
}

impl Setting {
    /// The key in the TOML file and in [`Settings`], e.g. `ack_timeout_ms`.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The flag without its dashes: the key with `-` for `_` (`ack-timeout-ms`).
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The environment variable: `SWITCHYARD_` and the key in capitals.
    pub fn env(&self) -> String {
        format!("SWITCHYARD_{}", self.key.to_ascii_uppercase())
    }

    /// The placeholder of the flag's value in `--help`.
    pub fn value_name(&self) -> &'static str {
        self.value_name
    }

    /// The flag's line in `--help`.
    pub fn help(&self) -> &'static str {
        self.help.trim()
    }
}

/// Declares the settings, each once: the doc line (the flag's `--help` line and the field's
/// documentation), the [`Config`] field and its type, then its key, the placeholder of its value,
/// its raw default and the [`Field`] method that reads it. Fields under `derived` are computed
/// from the [`Settings`] rather than read from one key. Generates [`SETTINGS`], [`Config`] and
/// `Config::read`, which reads the settings in declaration order.
macro_rules! settings {
    (
        $(
            #[doc = $help:literal]
            $field:ident: $ty:ty {
                key: $key:literal, value: $value_name:literal, default: $default:literal,
                read: $read:ident $(($($arg:expr),* $(,)?))?
            }
        ),* $(,)?
        ;
        derived($settings:ident) {
            $( #[doc = $derived_help:literal] $derived:ident: $derived_ty:ty = $compute:expr ),* $(,)?
        }
    ) => {
        /// Every setting a node understands, in `serve --help` order.
        pub const SETTINGS: &[Setting] =
            &[$(Setting { key: $key, default: $default, value_name: $value_name, help: $help }),*];

        /// A resolved node configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            $(#[doc = $help] pub $field: $ty,)*
            $(#[doc = $derived_help] pub $derived: $derived_ty,)*
        }

        impl Config {
            /// Reads every setting in declaration order; each bad value joins `errors` and its
            /// field gets a placeholder.
            fn read($settings: &Settings, errors: &mut Vec<String>) -> Config {
                Config {
                    $($field: Field { key: $key, raw: $settings.get($key), errors: &mut *errors }.$read($($($arg),*)?),)*
                    $($derived: $compute,)*
                }
            }
        }
    };
}

settings! {
    /// Directory for the store and generated files [default: ./data]
    data_dir: PathBuf { key: "data_dir", value: "DIR", default: "./data", read: path },
    /// PostgreSQL URL (postgres://user@host/db) instead of the embedded SQLite file
    database_url: Option<String> { key: "database_url", value: "URL", default: "", read: postgres_url },
    /// Plain HTTP + WebSocket listener, or `off` [default: 127.0.0.1:8080]
    http: Option<SocketAddr> { key: "http", value: "ADDR", default: "127.0.0.1:8080", read: listener },
    /// HTTPS + WSS listener, or `off` [default: 127.0.0.1:8443]
    https: Option<SocketAddr> { key: "https", value: "ADDR", default: "127.0.0.1:8443", read: listener },
    /// PEM certificate chain [default: certs/dev-cert.pem, generated if missing]
    tls_cert: PathBuf { key: "tls_cert", value: "FILE", default: "certs/dev-cert.pem", read: path },
    /// PEM private key [default: certs/dev-key.pem, generated if missing]
    tls_key: PathBuf { key: "tls_key", value: "FILE", default: "certs/dev-key.pem", read: path },
    /// HOST:PORT that /dispatch advertises [default: the TLS listener]
    public_ws: Option<(String, u16)> { key: "public_ws", value: "HOST:PORT", default: "", read: host_port },
    /// IP that /dispatch advertises [default: the public host]
    public_ip: Option<String> { key: "public_ip", value: "IP", default: "", read: ip_text },
    /// Region this node serves: cn, as, us or eu [default: cn]
    region: String { key: "region", value: "REGION", default: "cn", read: one_of(&["cn", "as", "us", "eu"]) },
    /// Wait for a device's ack before answering 504 [default: 3000]
    ack_timeout: Duration { key: "ack_timeout_ms", value: "N", default: "3000", read: millis(10, 60_000) },
    /// Heartbeat interval told to clients [default: 145]
    hb_interval: Duration { key: "hb_interval_secs", value: "N", default: "145", read: secs(1, 3600) },
    /// Silence allowed past the heartbeat interval [default: 30]
    hb_grace: Duration { key: "hb_grace_secs", value: "N", default: "30", read: secs(0, 3600) },
    /// Deadline for the first frame on a socket [default: 10000]
    handshake_timeout: Duration { key: "handshake_timeout_ms", value: "N", default: "10000", read: millis(100, 120_000) },
    /// Largest WebSocket message; larger closes with 1009 [default: 65536]
    max_frame_bytes: usize { key: "max_frame_bytes", value: "N", default: "65536", read: size(1024, 16 << 20) },
    /// Frames queued per session before it is closed as a slow consumer [default: 256]
    outbox_capacity: usize { key: "outbox_capacity", value: "N", default: "256", read: size(1, 1 << 16) },
    /// Commands one app session may have waiting for acks [default: 128]
    max_inflight: usize { key: "max_inflight", value: "N", default: "128", read: size(1, 1 << 16) },
    /// Commands one user may have waiting at one device, across all their sessions; a device's sharees together get twice that [default: 24]
    max_device_queue_per_user: usize { key: "max_device_queue_per_user", value: "N", default: "24", read: size(1, 1024) },
    /// Commands an offline device may have queued (updates sent with `ttl`) [default: 16]
    offline_queue_per_device: usize { key: "offline_queue_per_device", value: "N", default: "16", read: size(1, 1024) },
    /// Longest `ttl` an update for an offline device may ask for, in seconds [default: 604800 (7 days)]
    offline_ttl_max: Duration { key: "offline_ttl_max_secs", value: "N", default: "604800", read: secs(1, 31_536_000) },
    /// Open connections per node [default: 19000]
    max_connections: usize { key: "max_connections", value: "N", default: "19000", read: size(1, 10_000_000) },
    /// App sessions one user may have open at once [default: 100]
    max_sessions_per_user: usize { key: "max_sessions_per_user", value: "N", default: "100", read: size(1, 1_000_000) },
    /// Access token lifetime [default: 30]
    access_token_ttl: Duration { key: "access_token_days", value: "N", default: "30", read: days(1, 3650) },
    /// Refresh token lifetime [default: 60]
    refresh_token_ttl: Duration { key: "refresh_token_days", value: "N", default: "60", read: days(1, 3650) },
    /// REST calls per client IP per route per window, 0 = off [default: 300]
    rate_limit: u32 { key: "rate_limit", value: "N", default: "300", read: count(0, 1_000_000) },
    /// Rate-limit window [default: 300]
    rate_limit_window: Duration { key: "rate_limit_window_secs", value: "N", default: "300", read: secs(1, 86_400) },
    /// Apply the rate limit to loopback clients too [default: false]
    rate_limit_loopback: bool { key: "rate_limit_loopback", value: "BOOL", default: "false", read: flag },
    /// Comma-separated proxy IPs whose X-Forwarded-For names the client [default: none]
    trusted_proxies: Vec<IpAddr> { key: "trusted_proxies", value: "IPS", default: "", read: ips },
    /// Operator listener for /metrics (keep it private), or `off` [default: 127.0.0.1:9090]
    metrics: Option<SocketAddr> { key: "metrics", value: "ADDR", default: "127.0.0.1:9090", read: listener },
    /// How long the recorder gathers reports before one transaction commits them; a device's report is acked after that commit [default: 1]
    commit_window: Duration { key: "commit_window_ms", value: "N", default: "0", read: millis(0, 250) },
    /// History rows kept per device; the oldest go first [default: 1000]
    history_rows_per_device: u64 { key: "history_rows_per_device", value: "N", default: "1000", read: number(1, 100_000_000) },
    /// History bytes kept per device (a row counts as its text plus 80 bytes) [default: 1048576]
    history_bytes_per_device: u64 { key: "history_bytes_per_device", value: "N", default: "1048576", read: number(16_384, 1 << 40) },
    /// History bytes kept for all devices together; the oldest rows of any device go first [default: 4294967296]
    history_bytes_total: u64 { key: "history_bytes_total", value: "N", default: "4294967296", read: number(1 << 20, 1 << 50) },
    /// Params larger than this are recorded in history as a marker with their size and keys [default: 2048]
    history_params_max_bytes: usize { key: "history_params_max_bytes", value: "N", default: "2048", read: size(256, 1 << 20) },
    /// Failed password or code checks in a row that lock an account, 0 = no lockout [default: 10]
    auth_failures: u32 { key: "auth_failures", value: "N", default: "10", read: count(0, 1_000_000) },
    /// Longest lock of an account; locks start at 30 s and double [default: 300]
    auth_lockout_max: Duration { key: "auth_lockout_max_secs", value: "N", default: "300", read: secs(1, 86_400) },
    /// Base URL of the WeChat API [default: https://api.weixin.qq.com]
    wechat_api_base: String { key: "wechat_api_base", value: "URL", default: "https://api.weixin.qq.com", read: wechat_base },
    /// SMTP relay for codes and invites: smtp://host:port, smtp://…?tls=required (STARTTLS) or smtps:// [default: none, mail goes to the outbox file]
    smtp_url: Option<String> { key: "smtp_url", value: "URL", default: "", read: smtp_url },
    /// Sender address of mail, e.g. `Switchyard <hub@example.com>` (needed with smtp_url)
    mail_from: Option<String> { key: "mail_from", value: "ADDRESS", default: "", read: mail_from },
    /// Log lines as `text` or `json` (one object per line on stderr) [default: text]
    log_format: String { key: "log_format", value: "FORMAT", default: "text", read: one_of(&["text", "json"]) },
    /// NATS server of a cluster (nats://host:port); needs database_url [default: none, one node]
    cluster: Option<String> { key: "cluster", value: "URL", default: "", read: nats_url },
    /// This node's name in the cluster, unique among its nodes [default: the host name]
    node_id: String { key: "node_id", value: "NAME", default: "", read: subject_token },
    /// Prefix of every subject and lock of the cluster, so clusters can share a NATS server [default: switchyard]
    cluster_name: String { key: "cluster_name", value: "NAME", default: "switchyard", read: subject_token },
    /// Sessions closed per second at shutdown, so clients reconnect to other nodes gradually [default: 1000 in a cluster; one node closes all at once]
    drain_rate: Option<u32> { key: "drain_rate", value: "N", default: "", read: optional_count(1, 1_000_000) },
    /// Longest drain at shutdown; the sessions still open then close at once [default: 25]
    drain_timeout: Duration { key: "drain_timeout_secs", value: "N", default: "25", read: secs(1, 3600) },
    ;
    derived(settings) {
        /// True when both TLS paths are the defaults, so a development pair may be generated.
        tls_generate: bool = !settings.is_set("tls_cert") && !settings.is_set("tls_key"),
    }
}

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
            if !SETTINGS.iter().any(|s| s.key == key) {
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

    /// The value of `key`, else its default.
    fn get(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or_else(|| SETTINGS.iter().find(|s| s.key == key).map_or("", |s| s.default))
    }

    /// Whether `key` was given at all (by any source), rather than left to its default.
    fn is_set(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
}

/// All the problems found in one pass, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

/// The raw text of one setting on its way to a typed value. A bad value is reported in
/// `errors` as `key: what is wrong`, and a placeholder is returned so that reading goes on.
struct Field<'a> {
    key: &'static str,
    raw: &'a str,
    errors: &'a mut Vec<String>,
}

impl Field<'_> {
    fn fail(self, problem: impl std::fmt::Display) {
        self.errors.push(format!("{}: {problem}", self.key));
    }

    /// The text as given, untrimmed.
    fn path(self) -> PathBuf {
        PathBuf::from(self.raw)
    }

    /// A whole number in `min..=max`.
    fn number(self, min: u64, max: u64) -> u64 {
        match self.raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => {
                self.fail(format_args!("{n} is out of range {min}..={max}"));
                min
            }
            Err(_) => {
                let raw = self.raw;
                self.fail(format_args!("`{raw}` is not a whole number"));
                min
            }
        }
    }

    fn size(self, min: u64, max: u64) -> usize {
        self.number(min, max) as usize
    }

    fn count(self, min: u32, max: u32) -> u32 {
        self.number(min.into(), max.into()) as u32
    }

    /// A whole number in `min..=max`, or empty for none.
    fn optional_count(self, min: u32, max: u32) -> Option<u32> {
        if self.raw.trim().is_empty() { None } else { Some(self.count(min, max)) }
    }

    fn millis(self, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(min, max))
    }

    fn secs(self, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.number(min, max))
    }

    fn days(self, min: u64, max: u64) -> Duration {
        Duration::from_secs(86_400 * self.number(min, max))
    }

    /// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`/empty, in any case.
    fn flag(self) -> bool {
        match self.raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            other => {
                self.fail(format_args!("`{other}` is not true or false"));
                false
            }
        }
    }

    /// One of `choices`, in any case; kept lowercase.
    fn one_of(self, choices: &[&str]) -> String {
        let value = self.raw.trim().to_ascii_lowercase();
        if !choices.contains(&value.as_str()) {
            self.fail(format_args!("`{value}` is not one of {}", choices.join(", ")));
        }
        value
    }

    /// A socket address, or `off` for none.
    fn listener(self) -> Option<SocketAddr> {
        let raw = self.raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return None;
        }
        match raw.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.fail(format_args!("`{raw}` is not an address like 127.0.0.1:8080 or `off`"));
                None
            }
        }
    }

    /// `HOST:PORT` (an IPv6 host may be in brackets); empty for none.
    fn host_port(self) -> Option<(String, u16)> {
        match self.raw.trim() {
            "" => None,
            raw => match raw.rsplit_once(':').map(|(h, p)| (h.trim_matches(['[', ']']), p.parse::<u16>())) {
                Some((host, Ok(port))) if !host.is_empty() => Some((host.to_owned(), port)),
                _ => {
                    self.fail(format_args!("`{raw}` is not HOST:PORT"));
                    None
                }
            },
        }
    }

    /// An IP address kept as text; empty for none.
    fn ip_text(self) -> Option<String> {
        match self.raw.trim() {
            "" => None,
            raw => {
                if raw.parse::<IpAddr>().is_err() {
                    self.fail(format_args!("`{raw}` is not an IP address"));
                }
                Some(raw.to_owned())
            }
        }
    }

    /// A comma-separated list of IP addresses; each bad one is reported.
    fn ips(self) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for part in self.raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse() {
                Ok(ip) => ips.push(ip),
                Err(_) => self.errors.push(format!("{}: `{part}` is not an IP address", self.key)),
            }
        }
        ips
    }

    /// A `postgres://` or `postgresql://` URL; empty for the embedded SQLite store.
    /// A base URL for the WeChat connector (http or https, no query).
    fn wechat_base(self) -> String {
        crate::wechat::connector::check_base(self.raw).unwrap_or_else(|e| {
            self.fail(e);
            String::new()
        })
    }

    /// An SMTP URL as lettre reads it; empty for the outbox file.
    fn smtp_url(self) -> Option<String> {
        match self.raw.trim() {
            "" => None,
            url => {
                let url = url.to_owned();
                if let Err(e) = crate::mail::check_url(&url) {
                    self.fail(e);
                }
                Some(url)
            }
        }
    }

    /// A mailbox (`a@example.com` or `Name <a@example.com>`); empty when mail is not sent.
    fn mail_from(self) -> Option<String> {
        match self.raw.trim() {
            "" => None,
            from => {
                if crate::mail::check_from(from).is_err() {
                    self.fail(format_args!("`{from}` is not an address (`name@example.com` or `Name <name@example.com>`)"));
                }
                Some(from.to_owned())
            }
        }
    }

    /// A `nats://` URL (or `tls://`); empty for a single node.
    fn nats_url(self) -> Option<String> {
        match self.raw.trim() {
            "" => None,
            url if url.starts_with("nats://") || url.starts_with("tls://") => Some(url.to_owned()),
            _ => {
                self.fail("must start with nats:// or tls:// (leave it empty for a single node)");
                None
            }
        }
    }

    /// A name usable as one token of a NATS subject: letters, digits, `-` and `_`.
    fn subject_token(self) -> String {
        let name = self.raw.trim();
        if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.fail("must be at most 64 letters, digits, `-` or `_`");
        }
        name.to_owned()
    }

    fn postgres_url(self) -> Option<String> {
        match self.raw.trim() {
            "" => None,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url.to_owned()),
            _ => {
                self.fail("must start with postgres:// (leave it empty for the embedded SQLite store)");
                None
            }
        }
    }
}

/// Sessions a cluster node closes per second at shutdown unless `drain_rate` says otherwise.
pub const CLUSTER_DRAIN_RATE: u32 = 1000;

impl Config {
    /// Sessions closed per second at shutdown: `drain_rate`, else [`CLUSTER_DRAIN_RATE`] in a
    /// cluster; `None` (a single node without the setting) closes them all at once.
    pub fn drain_rate(&self) -> Option<u32> {
        self.drain_rate.or(self.cluster.as_ref().map(|_| CLUSTER_DRAIN_RATE))
    }

    pub fn resolve(settings: &Settings) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let config = Config::read(settings, &mut errors);
        if config.smtp_url.is_some() && config.mail_from.is_none() {
            errors.push("mail_from: needed when smtp_url is set".to_owned());
        }
        if config.cluster.is_some() && config.database_url.is_none() {
            errors.push("cluster: the nodes of a cluster share one PostgreSQL store; set database_url (the embedded SQLite store is one node's only)".to_owned());
        }
        if config.cluster.is_some() && config.cluster_name.is_empty() {
            errors.push("cluster_name: must not be empty".to_owned());
        }
        if config.http.is_none() && config.https.is_none() && errors.is_empty() {
            errors.push("http and https are both off: nothing to serve".to_owned());
        }
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }
}

/// The sample `switchyard.toml` (`contrib/switchyard.toml`): every setting, commented out at its
/// default, under its help line. A test keeps the file equal to this.
pub fn sample_toml() -> String {
    let mut out = String::from(
        "# switchyard.toml: settings of `switchyard serve --config FILE`.\n\
         # Every key is also a flag (`--ack-timeout-ms`) and a variable (`SWITCHYARD_ACK_TIMEOUT_MS`);\n\
         # flags beat variables beat this file beat the defaults shown here. Uncomment to change one.\n\
         # (Generated from the settings table in src/config.rs.)\n",
    );
    for s in SETTINGS {
        let value = if !s.default.is_empty() && (s.default.bytes().all(|b| b.is_ascii_digit()) || matches!(s.default, "true" | "false")) {
            s.default.to_owned()
        } else {
            format!("{:?}", s.default)
        };
        out.push_str(&format!("\n# {}\n# {} = {value}\n", s.help(), s.key));
    }
    out
}

#[cfg(test)]
mod tests;

/// A database URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}
