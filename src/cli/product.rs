//! `switchyard admin product add|list`, and what `admin device add --product` checks.

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::store::{NewProduct, Store, normalize_mac, valid_product_id};

#[derive(Subcommand, Debug)]
pub enum ProductCommand {
    /// Add a product
    Add {
        /// 1 to 64 letters, digits, `-` or `_`
        #[arg(long, value_name = "ID")]
        product_id: String,
        #[arg(long)]
        name: String,
        /// The module model its devices report (the default model of its devices)
        #[arg(long, default_value = "")]
        model: String,
        /// Let users register devices of this product themselves (`POST /v2/user/{user_id}/register_device`)
        #[arg(long)]
        allow_user_register: bool,
        /// Email of the account the product belongs to
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
    },
    /// List products
    List,
}

pub async fn run(store: &Store, cmd: ProductCommand) -> anyhow::Result<String> {
    match cmd {
        ProductCommand::Add { product_id, name, model, allow_user_register, owner } => {
            if !valid_product_id(&product_id) {
                bail!("--product-id `{product_id}` must be 1 to 64 letters, digits, `-` or `_`");
            }
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let owner = match owner {
                None => None,
                Some(email) => Some(store.user_by_email(&email).await?.with_context(|| format!("no user with email {email}"))?.apikey),
            };
            let product = NewProduct { product_id, name: name.trim().to_owned(), model, allow_user_register, owner };
            store.add_product(&product).await?;
            Ok(format!("product {} added{}", product.product_id, if allow_user_register { ", users may register its devices" } else { "" }))
        }
        ProductCommand::List => {
            let counts = store.product_device_counts().await?;
            let mut out = format!("{:<24} {:<24} {:<14} {:<9} {:<38} {}", "PRODUCT", "NAME", "MODEL", "USER-REG", "OWNER", "DEVICES");
            for p in store.products().await? {
                out.push_str(&format!(
                    "\n{:<24} {:<24} {:<14} {:<9} {:<38} {}",
                    p.product_id,
                    p.name,
                    if p.model.is_empty() { "-" } else { &p.model },
                    if p.allow_user_register { "yes" } else { "no" },
                    p.owner.as_ref().map_or("-".to_owned(), ToString::to_string),
                    counts.get(&p.product_id).copied().unwrap_or(0)
                ));
            }
            Ok(out)
        }
    }
}

/// For `admin device add`: with `--product`, the product must exist and a `--mac` must be a MAC;
/// the device's model defaults to the product's. Answers the model to store.
pub async fn model_for(store: &Store, product: Option<&str>, mac: Option<&str>, model: String) -> anyhow::Result<String> {
    let Some(id) = product else { return Ok(model) };
    let product = store.product(id).await?.with_context(|| format!("no product {id} (see `admin product list`)"))?;
    if let Some(mac) = mac
        && normalize_mac(mac).is_none()
    {
        bail!("--mac `{mac}` is not a MAC address (12 hex digits, separators allowed)");
    }
    Ok(if model.is_empty() { product.model } else { model })
}
