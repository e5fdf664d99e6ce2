//! The `switchyard` command line: `serve`, `admin …` (direct store management, safe while a hub
//! runs) and `emulate …` (a device or an app speaking the real protocol).

use std::path::PathBuf;

use clap::builder::ValueParser;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config::{SETTINGS, Settings};
use crate::emulate;

mod product;
pub use product::ProductCommand;
mod wechat;

pub use wechat::{WeChatAppCommand, WeChatCommand};

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
    #[command(flatten)]
    pub given: GivenSettings,
}

impl ServeArgs {
    /// Flags and environment first, then the TOML file. File problems join `errors`.
    pub fn settings(&self, errors: &mut Vec<String>) -> Settings {
        let mut s = Settings::new();
        for (key, value) in &self.given.0 {
            s.offer(key, value.clone());
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

/// The settings given as flags or `SWITCHYARD_*` variables, by key. Their flags are made from
/// [`SETTINGS`], one per setting, so a setting is declared only there.
#[derive(Debug, Default)]
pub struct GivenSettings(Vec<(&'static str, String)>);

impl Args for GivenSettings {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SETTINGS.iter().fold(cmd, |cmd, setting| {
            cmd.arg(
                Arg::new(setting.key())
                    .long(setting.flag())
                    .env(setting.env())
                    .value_name(setting.value_name())
                    .help(setting.help())
                    .action(ArgAction::Set)
                    .value_parser(ValueParser::string()),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for GivenSettings {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = GivenSettings::default();
        given.update_from_arg_matches(matches)?;
        Ok(given)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            if let Some(value) = matches.get_one::<String>(setting.key()) {
                self.0.retain(|(key, _)| *key != setting.key());
                self.0.push((setting.key(), value.clone()));
            }
        }
        Ok(())
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
    /// Base URL of the WeChat API for `admin wechat …`
    #[arg(long, env = "SWITCHYARD_WECHAT_API_BASE", value_name = "URL", default_value = crate::wechat::DEFAULT_API_BASE, global = true)]
    pub wechat_api_base: String,
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
    /// Products devices belong to (seed 003 user registration, seed 000)
    #[command(subcommand)]
    Product(ProductCommand),
    /// The firmware catalogue that OTA queries answer from
    #[command(subcommand)]
    Firmware(FirmwareCommand),
    /// Copy the SQLite store to FILE while the hub runs (a consistent online copy; not for PostgreSQL)
    Backup {
        /// Where the copy goes; must not exist yet
        file: PathBuf,
    },
    /// Move the SQLite store into an empty PostgreSQL database, in one transaction
    Migrate {
        /// The target database (postgres://user@host/db); its tables are created, and must be empty
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Operators: who may log in to the dashboard on the operator listener
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// WeChat applications the platform calls WeChat as (appid and secret)
    #[command(subcommand, name = "wechat-app")]
    WeChatApp(WeChatAppCommand),
    /// Calls to the WeChat hardware backend: products, public keys, mini-programs, pushes
    #[command(subcommand, name = "wechat")]
    WeChat(WeChatCommand),
}

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Create an operator (there are none until one is made here)
    Add {
        #[arg(long)]
        email: String,
        /// 8 or more characters from at least two of: digits, letters, symbols
        #[arg(long)]
        password: String,
    },
    /// List operators
    List,
    /// Remove an operator, ending their dashboard logins
    Remove {
        #[arg(long)]
        email: String,
    },
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

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// MAC address (kept in the device's `extra`; with --product, one device per product and MAC)
        #[arg(long)]
        mac: Option<String>,
        /// Id of the product the device belongs to (`admin product add`)
        #[arg(long, value_name = "ID")]
        product: Option<String>,
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
            Some(url) if !url.is_empty() => format!("opening the store at {}", crate::config::redact_url(url)),
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
            product,
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
            let model = product::model_for(&store, product.as_deref(), mac.as_deref(), model).await?;
            let details =
                crate::store::device::FactoryDetails { chipid, gsm_id, brand_name: brand, product_model, mac, product_id: product };
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
        AdminCommand::Operator(cmd) => operator(&store, cmd).await?,
        AdminCommand::Firmware(cmd) => firmware(&store, cmd).await?,
        AdminCommand::Product(cmd) => product::run(&store, cmd).await?,
        AdminCommand::WeChatApp(cmd) => wechat::apps(&store, cmd).await?,
        AdminCommand::WeChat(cmd) => wechat::call(&store, &args.wechat_api_base, cmd).await?,
        AdminCommand::Backup { file } => {
            store.backup_to(&file).await?;
            format!("backed up to {}", file.display())
        }
        AdminCommand::Migrate { to } => {
            if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
                bail!("--to must be a PostgreSQL URL (postgres://user@host/db)");
            }
            let target = Store::open(&args.data_dir, Some(&to))
                .await
                .with_context(|| format!("opening the target {}", crate::config::redact_url(&to)))?;
            let copied = store.copy_into(&target).await;
            target.close().await;
            let copied = copied?;
            let rows: u64 = copied.iter().map(|(_, n)| n).sum();
            let mut out = format!("copied {rows} rows in {} tables to {}", copied.len(), crate::config::redact_url(&to));
            for (table, n) in copied.iter().filter(|(_, n)| *n > 0) {
                out.push_str(&format!("\n  {table}: {n}"));
            }
            out
        }
    };
    store.close().await;
    Ok(out)
}

/// `admin operator add|list|remove`.
async fn operator(store: &crate::store::Store, cmd: OperatorCommand) -> anyhow::Result<String> {
    use anyhow::bail;

    match cmd {
        OperatorCommand::Add { email, password } => {
            let email = email.trim().to_ascii_lowercase();
            if !email.contains('@') {
                bail!("--email `{email}` is not an email address");
            }
            if !crate::auth::password_ok(&password) {
                bail!("--password needs 8 or more characters from at least two of: digits, letters, symbols");
            }
            // The hasher app accounts use: argon2id with the same parameters.
            let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password)).await?;
            store.add_operator(&email, &hash).await?;
            Ok(format!("operator {email} added"))
        }
        OperatorCommand::List => {
            let mut out = format!("{:<40} {}", "EMAIL", "CREATED (ms since the epoch)");
            for o in store.operators().await? {
                out.push_str(&format!("\n{:<40} {}", o.email, o.created_at));
            }
            Ok(out)
        }
        OperatorCommand::Remove { email } => {
            if !store.remove_operator(&email).await? {
                bail!("no operator with email {email}");
            }
            Ok(format!("operator {} removed", email.trim().to_ascii_lowercase()))
        }
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
    if let Some(d) = digest
        && (d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        bail!("--bin `{spec}`: the digest must be a SHA-256 of 64 hex digits");
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
