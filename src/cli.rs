//! The `switchyard` command line: `serve`, `admin …` (direct store management, safe while a hub
//! runs) and `emulate …` (a device or an app speaking the real protocol).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::emulate;

#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about = "A self-hostable realtime device-control hub (eWeLink/CoolKit v2 protocol)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub: HTTP + WS on --http, HTTPS + WSS on --https.
    Serve(Box<ServeArgs>),
    /// Manage app ids, users, devices and shares in the store (works while the hub runs).
    Admin(AdminArgs),
    /// Emulate a device or an app against a running hub.
    #[command(subcommand)]
    Emulate(EmulateCommand),
}

/// Every setting is a flag, a `SWITCHYARD_*` variable and a key of the `--config` TOML file
/// (flag > variable > file > default).
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the store and generated files [default: ./data]
    #[arg(long, env = "SWITCHYARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// PostgreSQL URL (postgres://user@host/db) instead of the embedded SQLite file
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Plain HTTP + WebSocket listener, or `off` [default: 127.0.0.1:8080]
    #[arg(long, env = "SWITCHYARD_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
    /// HTTPS + WSS listener, or `off` [default: 127.0.0.1:8443]
    #[arg(long, env = "SWITCHYARD_HTTPS", value_name = "ADDR")]
    pub https: Option<String>,
    /// PEM certificate chain [default: certs/dev-cert.pem, generated if missing]
    #[arg(long, env = "SWITCHYARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key [default: certs/dev-key.pem, generated if missing]
    #[arg(long, env = "SWITCHYARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// HOST:PORT that /dispatch advertises [default: the TLS listener]
    #[arg(long, env = "SWITCHYARD_PUBLIC_WS", value_name = "HOST:PORT")]
    pub public_ws: Option<String>,
    /// IP that /dispatch advertises [default: the public host]
    #[arg(long, env = "SWITCHYARD_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<String>,
    /// Region this node serves: cn, as, us or eu [default: cn]
    #[arg(long, env = "SWITCHYARD_REGION")]
    pub region: Option<String>,
    /// Wait for a device's ack before answering 504 [default: 3000]
    #[arg(long, env = "SWITCHYARD_ACK_TIMEOUT_MS", value_name = "N")]
    pub ack_timeout_ms: Option<String>,
    /// Heartbeat interval told to clients [default: 145]
    #[arg(long, env = "SWITCHYARD_HB_INTERVAL_SECS", value_name = "N")]
    pub hb_interval_secs: Option<String>,
    /// Silence allowed past the heartbeat interval [default: 30]
    #[arg(long, env = "SWITCHYARD_HB_GRACE_SECS", value_name = "N")]
    pub hb_grace_secs: Option<String>,
    /// Deadline for the first frame on a socket [default: 10000]
    #[arg(long, env = "SWITCHYARD_HANDSHAKE_TIMEOUT_MS", value_name = "N")]
    pub handshake_timeout_ms: Option<String>,
    /// Largest WebSocket message; larger closes with 1009 [default: 65536]
    #[arg(long, env = "SWITCHYARD_MAX_FRAME_BYTES", value_name = "N")]
    pub max_frame_bytes: Option<String>,
    /// Frames queued per session before it is closed as a slow consumer [default: 256]
    #[arg(long, env = "SWITCHYARD_OUTBOX_CAPACITY", value_name = "N")]
    pub outbox_capacity: Option<String>,
    /// Commands one app session may have waiting for acks [default: 128]
    #[arg(long, env = "SWITCHYARD_MAX_INFLIGHT", value_name = "N")]
    pub max_inflight: Option<String>,
    /// Open connections per node [default: 19000]
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// App sessions one user may have open at once [default: 100]
    #[arg(long, env = "SWITCHYARD_MAX_SESSIONS_PER_USER", value_name = "N")]
    pub max_sessions_per_user: Option<String>,
    /// Access token lifetime [default: 30]
    #[arg(long, env = "SWITCHYARD_ACCESS_TOKEN_DAYS", value_name = "N")]
    pub access_token_days: Option<String>,
    /// Refresh token lifetime [default: 60]
    #[arg(long, env = "SWITCHYARD_REFRESH_TOKEN_DAYS", value_name = "N")]
    pub refresh_token_days: Option<String>,
    /// REST calls per client IP per route per window, 0 = off [default: 300]
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<String>,
    /// Rate-limit window [default: 300]
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT_WINDOW_SECS", value_name = "N")]
    pub rate_limit_window_secs: Option<String>,
    /// Apply the rate limit to loopback clients too [default: false]
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT_LOOPBACK", value_name = "BOOL")]
    pub rate_limit_loopback: Option<String>,
    /// Comma-separated proxy IPs whose X-Forwarded-For names the client [default: none]
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_name = "IPS")]
    pub trusted_proxies: Option<String>,
    /// Operator listener for /metrics (keep it private), or `off` [default: 127.0.0.1:9090]
    #[arg(long, env = "SWITCHYARD_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Failed password or code checks in a row that lock an account, 0 = off [default: 10]
    #[arg(long, env = "SWITCHYARD_AUTH_FAILURES", value_name = "N")]
    pub auth_failures: Option<String>,
    /// Longest lock of an account; locks start at 30 s and double [default: 300]
    #[arg(long, env = "SWITCHYARD_AUTH_LOCKOUT_MAX_SECS", value_name = "N")]
    pub auth_lockout_max_secs: Option<String>,
}

impl ServeArgs {
    /// Flags and environment first, then the TOML file. File problems join `errors`.
    pub fn settings(&self, errors: &mut Vec<String>) -> Settings {
        let mut s = Settings::new();
        let pairs: [(&str, &Option<String>); 27] = [
            ("data_dir", &self.data_dir),
            ("database_url", &self.database_url),
            ("http", &self.http),
            ("https", &self.https),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("public_ws", &self.public_ws),
            ("public_ip", &self.public_ip),
            ("region", &self.region),
            ("ack_timeout_ms", &self.ack_timeout_ms),
            ("hb_interval_secs", &self.hb_interval_secs),
            ("hb_grace_secs", &self.hb_grace_secs),
            ("handshake_timeout_ms", &self.handshake_timeout_ms),
            ("max_frame_bytes", &self.max_frame_bytes),
            ("outbox_capacity", &self.outbox_capacity),
            ("max_inflight", &self.max_inflight),
            ("max_connections", &self.max_connections),
            ("max_sessions_per_user", &self.max_sessions_per_user),
            ("access_token_days", &self.access_token_days),
            ("refresh_token_days", &self.refresh_token_days),
            ("rate_limit", &self.rate_limit),
            ("rate_limit_window_secs", &self.rate_limit_window_secs),
            ("rate_limit_loopback", &self.rate_limit_loopback),
            ("trusted_proxies", &self.trusted_proxies),
            ("auth_failures", &self.auth_failures),
            ("auth_lockout_max_secs", &self.auth_lockout_max_secs),
            ("metrics", &self.metrics),
        ];
        for (key, value) in pairs {
            if let Some(v) = value {
                s.offer(key, v.clone());
            }
        }
        if let Some(path) = &self.config {
            match std::fs::read_to_string(path) {
                Ok(text) => s.offer_toml(&text, errors),
                Err(e) => errors.push(format!("config file {}: {e}", path.display())),
            }
        }
        s
    }
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Directory of the store to manage
    #[arg(long, env = "SWITCHYARD_DATA_DIR", value_name = "DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the store to manage, instead of the SQLite file in --data-dir
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", value_name = "URL", global = true)]
    pub database_url: Option<String>,
    /// Region given to new users (must match the hub's to log in)
    #[arg(long, env = "SWITCHYARD_REGION", default_value = "cn", global = true)]
    pub region: String,
    #[command(subcommand)]
    pub what: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// App ids allowed to call the API
    #[command(subcommand)]
    App(AppCommand),
    /// User accounts
    #[command(subcommand)]
    User(UserCommand),
    /// Factory device records, ownership and sharing
    #[command(subcommand)]
    Device(DeviceCommand),
    /// The firmware catalogue that OTA queries answer from
    #[command(subcommand)]
    Firmware(FirmwareCommand),
}

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Allow an app id with its secret (the key of its Sign HMAC)
    Add {
        #[arg(long)]
        appid: String,
        #[arg(long)]
        secret: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; prints the new apikey alone on stdout
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        /// Phone number with its country code, e.g. +8618023456789
        #[arg(long)]
        phone: Option<String>,
        #[arg(long, default_value = "+86")]
        country_code: String,
    },
    /// List users
    List,
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Add a factory device record, bound to its owner when --owner is given
    Add {
        #[arg(long)]
        deviceid: String,
        /// The key burnt into the device at the factory; it registers with it
        #[arg(long)]
        factory_apikey: String,
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value_t = 1)]
        uiid: i64,
        /// Email of the owning user
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
        /// The chip id `POST /v2/device/add` must be sent (any chip id when left out)
        #[arg(long)]
        chipid: Option<String>,
        /// The id on a GSM device's QR code, for `POST /v2/device/add-gsm`
        #[arg(long)]
        gsm_id: Option<String>,
        /// Brand name shown with the device
        #[arg(long)]
        brand: Option<String>,
        /// Product model name shown with the device
        #[arg(long)]
        product_model: Option<String>,
        /// MAC address (kept in the device's `extra`)
        #[arg(long)]
        mac: Option<String>,
    },
    /// List devices
    List,
    /// Share a device with another user (by email)
    Share {
        #[arg(long)]
        deviceid: String,
        #[arg(long, value_name = "EMAIL")]
        with: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FirmwareCommand {
    /// Add a firmware version for a module model
    Add {
        /// The module model devices report (e.g. PSF-B01-GL)
        #[arg(long)]
        model: String,
        /// Dotted version numbers, e.g. 3.5.1
        #[arg(long)]
        version: String,
        /// A file to download: NAME=URL or NAME=URL,SHA256 (repeat for each partition)
        #[arg(long = "bin", value_name = "NAME=URL[,SHA256]", required = true)]
        bins: Vec<String>,
    },
    /// List the catalogue
    List,
}

#[derive(Subcommand, Debug)]
pub enum EmulateCommand {
    /// A device: dispatch, register, date, state reports, heartbeats; applies `switch` commands
    Device(emulate::DeviceArgs),
    /// An app: login, dispatch, userOnline; sends one update/query and/or listens
    App(emulate::AppArgs),
}

/// Runs an admin command; returns the text for stdout.
pub async fn admin(args: AdminArgs) -> anyhow::Result<String> {
    use anyhow::{Context, bail};

    use crate::ids::{DeviceId, UserKey};
    use crate::store::Store;

    let store = Store::open(&args.data_dir, args.database_url.as_deref().filter(|u| !u.is_empty())).await.with_context(|| {
        match &args.database_url {
            Some(url) if !url.is_empty() => format!("opening the store at {}", redact_url(url)),
            _ => format!("opening the store in {}", args.data_dir.display()),
        }
    })?;
    let out = match args.what {
        AdminCommand::App(AppCommand::Add { appid, secret }) => {
            if appid.is_empty() || secret.len() < 8 {
                bail!("--appid must not be empty and --secret needs at least 8 characters");
            }
            store.add_app(&appid, &secret).await?;
            format!("app {appid} added")
        }
        AdminCommand::User(UserCommand::Add { email, password, phone, country_code }) => {
            if !email.contains('@') {
                bail!("--email `{email}` is not an email address");
            }
            if !crate::auth::password_ok(&password) {
                bail!("--password needs 8 or more characters from at least two of: digits, letters, symbols");
            }
            if !country_code.starts_with('+') {
                bail!("--country-code must start with +");
            }
            if phone.as_deref().is_some_and(|p| !p.starts_with(country_code.as_str())) {
                bail!("--phone must start with its country code {country_code}");
            }
            let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password)).await?;
            let key = store.add_user(Some(&email), phone.as_deref(), &country_code, &hash, &args.region).await?;
            key.to_string()
        }
        AdminCommand::User(UserCommand::List) => {
            let mut out = format!("{:<38} {:<30} {:<16} {}", "APIKEY", "EMAIL", "PHONE", "REGION");
            for u in store.users().await? {
                out.push_str(&format!(
                    "\n{:<38} {:<30} {:<16} {}",
                    u.apikey,
                    u.email.as_deref().unwrap_or("-"),
                    u.phone.as_deref().unwrap_or("-"),
                    u.region
                ));
            }
            out
        }
        AdminCommand::Device(DeviceCommand::Add {
            deviceid,
            factory_apikey,
            model,
            uiid,
            owner,
            name,
            chipid,
            gsm_id,
            brand,
            product_model,
            mac,
        }) => {
            if !crate::ids::valid_device_id(&deviceid) {
                bail!("--deviceid `{deviceid}` must be 1 to 64 letters, digits, `-` or `_`");
            }
            if factory_apikey.is_empty() {
                bail!("--factory-apikey must not be empty");
            }
            let owner: Option<UserKey> = match owner {
                None => None,
                Some(email) => Some(store.user_by_email(&email).await?.with_context(|| format!("no user with email {email}"))?.apikey),
            };
            if gsm_id.as_deref().is_some_and(str::is_empty) {
                bail!("--gsm-id must not be empty");
            }
            let details = crate::store::device::FactoryDetails { chipid, gsm_id, brand_name: brand, product_model, mac };
            store
                .add_factory_device(&DeviceId::new(deviceid.as_str()), &factory_apikey, &model, uiid, owner.as_ref(), &name, &details)
                .await?;
            match owner {
                Some(o) => format!("device {deviceid} added, owned by {o}"),
                None => format!("device {deviceid} added, not bound to a user"),
            }
        }
        AdminCommand::Device(DeviceCommand::List) => {
            let mut out = format!("{:<16} {:<14} {:<6} {:<38} {:<8} {}", "DEVICEID", "MODEL", "UIID", "OWNER", "SHARES", "PARAMS");
            for d in store.devices().await? {
                let shares = store.audience(&d.deviceid).await?.map_or(0, |a| a.sharees.len());
                out.push_str(&format!(
                    "\n{:<16} {:<14} {:<6} {:<38} {:<8} {}",
                    d.deviceid,
                    if d.model.is_empty() { "-" } else { &d.model },
                    d.uiid,
                    d.owner.as_ref().map_or("-".to_owned(), ToString::to_string),
                    shares,
                    d.params
                ));
            }
            out
        }
        AdminCommand::Device(DeviceCommand::Share { deviceid, with }) => {
            let user = store.user_by_email(&with).await?.with_context(|| format!("no user with email {with}"))?;
            store.share_device(&DeviceId::new(deviceid.as_str()), &user.apikey, 15).await?;
            format!("device {deviceid} shared with {with} ({})", user.apikey)
        }
        AdminCommand::Firmware(cmd) => firmware(&store, cmd).await?,
    };
    store.close().await;
    Ok(out)
}

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

/// `admin firmware add|list`.
async fn firmware(store: &crate::store::Store, cmd: FirmwareCommand) -> anyhow::Result<String> {
    use anyhow::bail;

    match cmd {
        FirmwareCommand::Add { model, version, bins } => {
            if model.trim().is_empty() {
                bail!("--model must not be empty");
            }
            if !crate::store::valid_version(&version) {
                bail!("--version `{version}` must be 1 to 4 dot-separated numbers, e.g. 3.5.1");
            }
            let mut parsed: Vec<crate::store::FirmwareBin> = Vec::new();
            for spec in &bins {
                let bin = parse_bin(spec)?;
                if parsed.iter().any(|b| b.name == bin.name) {
                    bail!("--bin name `{}` given twice", bin.name);
                }
                parsed.push(bin);
            }
            store.add_firmware(&model, &version, &parsed).await?;
            Ok(format!("firmware {model} {version} added ({} file{})", parsed.len(), if parsed.len() == 1 { "" } else { "s" }))
        }
        FirmwareCommand::List => {
            let mut out = format!("{:<20} {:<12} {}", "MODEL", "VERSION", "BINS");
            for f in store.firmware().await? {
                let bins: Vec<String> = f
                    .bins
                    .iter()
                    .map(|b| match &b.digest {
                        Some(d) => format!("{}={},{d}", b.name, b.download_url),
                        None => format!("{}={}", b.name, b.download_url),
                    })
                    .collect();
                out.push_str(&format!("\n{:<20} {:<12} {}", f.model, f.version, bins.join(" ")));
            }
            Ok(out)
        }
    }
}

/// `NAME=URL` or `NAME=URL,SHA256`: an http(s) URL and a 64-hex-digit digest.
fn parse_bin(spec: &str) -> anyhow::Result<crate::store::FirmwareBin> {
    use anyhow::bail;

    let Some((name, rest)) = spec.split_once('=') else { bail!("--bin `{spec}` must be NAME=URL or NAME=URL,SHA256") };
    let name = name.trim();
    if name.is_empty() || name.contains(['/', '\\']) {
        bail!("--bin `{spec}`: the name must be a plain file name");
    }
    let (url, digest) = match rest.rsplit_once(',') {
        Some((url, digest)) => (url, Some(digest.trim())),
        None => (rest, None),
    };
    if let Some(d) = digest {
        if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--bin `{spec}`: the digest must be a SHA-256 of 64 hex digits");
        }
    }
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| anyhow::anyhow!("--bin `{spec}`: bad URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        bail!("--bin `{spec}`: the URL must be http:// or https:// with a host");
    }
    Ok(crate::store::FirmwareBin {
        name: name.to_owned(),
        download_url: url.trim().to_owned(),
        digest: digest.map(str::to_ascii_lowercase),
    })
}
