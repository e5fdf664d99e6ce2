//! `switchyard admin wechat-app …` (the WeChat applications in the store) and
//! `switchyard admin wechat …` (operator calls to the WeChat backend through the connector).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{ArgGroup, Subcommand};

use crate::store::Store;
use crate::wechat::{CreateProduct, MAX_PUSH_BYTES, Options, WeChat, WeChatError};

#[derive(Subcommand, Debug)]
pub enum WeChatAppCommand {
    /// Add a WeChat application with its AppSecret (kept in the store, never printed back)
    Add {
        /// The application's appid, wx…
        #[arg(long)]
        appid: String,
        #[arg(long)]
        secret: String,
    },
    /// List the WeChat applications (appid and when each was added)
    List,
}

#[derive(Subcommand, Debug)]
pub enum WeChatCommand {
    /// `createproduct`: create a hardware product with WeChat; prints its product_id
    CreateProduct {
        /// The WeChat application (added with `admin wechat-app add`) to call as
        #[arg(long)]
        appid: String,
        #[arg(long)]
        english_product_name: String,
        #[arg(long)]
        chinese_product_name: String,
        /// The name devices of the product are shown with
        #[arg(long)]
        device_default_name: String,
    },
    /// `registerpubkey`: submit a product's public key; prints its key_version
    #[command(group(ArgGroup::new("key").required(true).args(["pubkey", "pubkey_file"])))]
    RegisterPubkey {
        #[arg(long)]
        appid: String,
        #[arg(long)]
        product_id: u64,
        /// The public key text
        #[arg(long)]
        pubkey: Option<String>,
        /// A file holding the public key text
        #[arg(long, value_name = "FILE")]
        pubkey_file: Option<PathBuf>,
    },
    /// `bindwxaapp`: let a mini-program (same owner) run the product
    BindWxaApp {
        #[arg(long)]
        appid: String,
        #[arg(long)]
        product_id: u64,
        /// The mini-program's appid
        #[arg(long)]
        wxa_appid: String,
    },
    /// `pushappmsg`: push one message to a WeChat user (at most 5 KB; larger is refused with 45002)
    Push {
        #[arg(long)]
        appid: String,
        /// The push_token the mini-program got for the user
        #[arg(long)]
        push_token: String,
        #[arg(long)]
        msg: String,
    },
}

/// A WeChat appid as WeChat issues them: `wx` and letters or digits.
pub fn valid_appid(appid: &str) -> bool {
    appid.starts_with("wx") && (3..=32).contains(&appid.len()) && appid.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `admin wechat-app add|list`.
pub async fn apps(store: &Store, cmd: WeChatAppCommand) -> anyhow::Result<String> {
    match cmd {
        WeChatAppCommand::Add { appid, secret } => {
            if !valid_appid(&appid) {
                bail!("--appid `{appid}` is not a WeChat appid (wx followed by letters or digits)");
            }
            if !(8..=128).contains(&secret.len()) || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("--secret must be 8 to 128 characters without spaces");
            }
            store.add_wechat_app(&appid, &secret).await?;
            Ok(format!("WeChat application {appid} added"))
        }
        WeChatAppCommand::List => {
            let mut out = format!("{:<34} {}", "APPID", "ADDED");
            for app in store.wechat_apps().await? {
                out.push_str(&format!("\n{:<34} {}", app.appid, rfc3339(app.created_at)));
            }
            Ok(out)
        }
    }
}

/// `admin wechat …`: one call through the connector, as the stored application.
pub async fn call(store: &Store, api_base: &str, cmd: WeChatCommand) -> anyhow::Result<String> {
    let appid = match &cmd {
        WeChatCommand::CreateProduct { appid, .. }
        | WeChatCommand::RegisterPubkey { appid, .. }
        | WeChatCommand::BindWxaApp { appid, .. }
        | WeChatCommand::Push { appid, .. } => appid.clone(),
    };
    let wechat = WeChat::new(api_base, Options::default()).context("--wechat-api-base")?;
    let app = || async {
        store
            .wechat_app(&appid)
            .await?
            .with_context(|| format!("no WeChat application {appid} (add it with `switchyard admin wechat-app add`)"))
    };
    Ok(match cmd {
        WeChatCommand::CreateProduct { english_product_name, chinese_product_name, device_default_name, .. } => {
            let product = CreateProduct { english_product_name, chinese_product_name, device_default_name };
            let names = [&product.english_product_name, &product.chinese_product_name, &product.device_default_name];
            if names.iter().any(|n| n.trim().is_empty()) {
                bail!("the product names must not be empty");
            }
            let product_id = wechat.create_product(&app().await?, &product).await.context("createproduct")?;
            format!("product_id {product_id}")
        }
        WeChatCommand::RegisterPubkey { product_id, pubkey, pubkey_file, .. } => {
            let pubkey = match (pubkey, pubkey_file) {
                (Some(k), _) => k,
                (None, Some(path)) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                (None, None) => bail!("give --pubkey or --pubkey-file"),
            };
            if pubkey.trim().is_empty() {
                bail!("the public key is empty");
            }
            let version = wechat.register_pubkey(&app().await?, product_id, pubkey.trim()).await.context("registerpubkey")?;
            format!("key_version {version}")
        }
        WeChatCommand::BindWxaApp { product_id, wxa_appid, .. } => {
            if !valid_appid(&wxa_appid) {
                bail!("--wxa-appid `{wxa_appid}` is not a WeChat appid (wx followed by letters or digits)");
            }
            wechat.bind_wxa_app(&app().await?, product_id, &wxa_appid).await.context("bindwxaapp")?;
            format!("product {product_id} bound to mini-program {wxa_appid}")
        }
        WeChatCommand::Push { push_token, msg, .. } => {
            // Refused before the store is read or WeChat is called.
            if msg.len() > MAX_PUSH_BYTES {
                return Err(WeChatError::MessageTooLong { bytes: msg.len(), max: MAX_PUSH_BYTES }).context("pushappmsg");
            }
            if push_token.is_empty() {
                bail!("--push-token must not be empty");
            }
            wechat.push_app_msg(&app().await?, &push_token, &msg).await.context("pushappmsg")?;
            format!("pushed {} bytes", msg.len())
        }
    })
}

fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| millis.to_string())
}
