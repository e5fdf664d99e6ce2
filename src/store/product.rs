//! Products: what a device is an instance of (an id, a name, a module model), created by
//! `switchyard admin product add`. A device may belong to one product, and then its MAC is kept
//! normalised ([`normalize_mac`]) with one device per product and MAC. A product that allows user
//! registration lets users register devices of it themselves ([`Store::register_user_device`]):
//! an unowned factory record with that product and MAC is bound to them, else a new device is
//! made with a fresh id and key.

use rand::RngCore;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Sort, Store, StoreError, ThingKind, unique_violation};
use crate::clock::{now_millis, now_secs};
use crate::ids::UserKey;

/// A product as `switchyard admin product add` made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    /// The module model its devices report, "" when not given.
    pub model: String,
    /// Users may register devices of this product themselves.
    pub allow_user_register: bool,
    /// The account the product belongs to, if any.
    pub owner: Option<UserKey>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// What a new product needs.
#[derive(Debug, Clone, Default)]
pub struct NewProduct {
    pub product_id: String,
    pub name: String,
    pub model: String,
    pub allow_user_register: bool,
    pub owner: Option<UserKey>,
}

/// A valid product id: 1 to 64 letters, digits, `-` or `_`.
pub fn valid_product_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A MAC as 12 lowercase hex digits: `AA:BB:CC:DD:EE:FF`, `aa-bb-…`, `aabb.ccdd.eeff` and
/// `aabbccddeeff` are one MAC. `None` for anything else.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let digits: String = mac.trim().chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect();
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digits.to_ascii_lowercase())
}

/// What a user registering a device sends beside the product and MAC (all optional).
#[derive(Debug, Clone, Default)]
pub struct DeviceDetails {
    pub name: Option<String>,
    pub access_key: Option<String>,
    pub mcu_mod: Option<String>,
    pub mcu_version: Option<String>,
    pub firmware_mod: Option<String>,
    pub firmware_version: Option<String>,
}

/// A device a user registered.
#[derive(Debug, Clone)]
pub struct RegisteredDevice {
    pub deviceid: String,
    /// The key the device registers with on the socket, when it was made here (a bound factory
    /// record keeps its factory key, which is not shown).
    pub device_key: Option<String>,
}

/// Why a user could not register a device.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("product {0} not found")]
    UnknownProduct(String),
    #[error("product {0} does not allow user registration")]
    NotAllowed(String),
    #[error("a device with this MAC is already registered under product {0}")]
    MacTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RegisterError {
    fn from(e: sqlx::Error) -> Self {
        RegisterError::Store(e.into())
    }
}

const PRODUCT_COLUMNS: &str = "product_id, name, model, allow_user_register, owner, created_at";

fn product_from(r: AnyRow) -> Product {
    Product {
        product_id: r.get(0),
        name: r.get(1),
        model: r.get(2),
        allow_user_register: r.get::<i64, _>(3) != 0,
        owner: r.get::<Option<String>, _>(4).map(UserKey::new),
        created_at: r.get(5),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A fresh device key in the UUID shape factory keys have.
fn new_device_key() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Store {
    /// Adds a product; an id already used → `Conflict`.
    pub async fn add_product(&self, p: &NewProduct) -> Result<()> {
        sqlx::query(
            "INSERT INTO products (product_id, name, model, allow_user_register, owner, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&p.product_id)
        .bind(&p.name)
        .bind(&p.model)
        .bind(i64::from(p.allow_user_register))
        .bind(p.owner.as_ref().map(UserKey::as_str))
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| if unique_violation(&e) { StoreError::Conflict(format!("product {}", p.product_id)) } else { e.into() })?;
        Ok(())
    }

    pub async fn product(&self, product_id: &str) -> Result<Option<Product>> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE product_id = $1");
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(product_id).fetch_optional(&self.pool).await?.map(product_from))
    }

    /// Every product, by id.
    pub async fn products(&self) -> Result<Vec<Product>> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products ORDER BY product_id");
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?.into_iter().map(product_from).collect())
    }

    /// The product a device belongs to (`None` for an unknown device or one without a product).
    pub async fn device_product(&self, deviceid: &str) -> Result<Option<String>> {
        let found: Option<Option<String>> =
            sqlx::query_scalar("SELECT product_id FROM devices WHERE deviceid = $1").bind(deviceid).fetch_optional(&self.pool).await?;
        Ok(found.flatten())
    }

    /// How many devices each product has, by product id.
    pub async fn product_device_counts(&self) -> Result<std::collections::HashMap<String, i64>> {
        let rows = sqlx::query("SELECT product_id, COUNT(*) FROM devices WHERE product_id IS NOT NULL GROUP BY product_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect())
    }

    /// `user` registers a device of `product_id` with `mac` (already normalised), becoming its
    /// owner: an unowned factory record of that product and MAC is bound to them (keeping its
    /// factory key), else a device is made with a fresh id and key. Either way it is placed in
    /// the user's current family, as a device added through `/v2/device/add` is. One
    /// transaction; a MAC the product already has an owned device for → `MacTaken`.
    pub async fn register_user_device(
        &self,
        user: &UserKey,
        product_id: &str,
        mac: &str,
        details: &DeviceDetails,
    ) -> std::result::Result<RegisteredDevice, RegisterError> {
        let mut tx = self.begin().await?;
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE product_id = $1");
        let product = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(product_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(product_from)
            .ok_or_else(|| RegisterError::UnknownProduct(product_id.to_owned()))?;
        if !product.allow_user_register {
            return Err(RegisterError::NotAllowed(product_id.to_owned()));
        }
        let name = details.name.clone().unwrap_or_else(|| product.name.clone());
        let existing = sqlx::query("SELECT deviceid, owner FROM devices WHERE product_id = $1 AND mac = $2")
            .bind(product_id)
            .bind(mac)
            .fetch_optional(&mut *tx)
            .await?;
        let registered = match existing {
            Some(row) if row.get::<Option<String>, _>(1).is_some() => return Err(RegisterError::MacTaken(product_id.to_owned())),
            Some(row) => {
                let deviceid: String = row.get(0);
                let bound = sqlx::query(
                    "UPDATE devices SET owner = $1, name = $2, owned_at = $3, access_key = COALESCE($4, access_key), \
                     mcu_mod = COALESCE($5, mcu_mod), mcu_version = COALESCE($6, mcu_version), \
                     firmware_mod = COALESCE($7, firmware_mod), firmware_version = COALESCE($8, firmware_version) \
                     WHERE deviceid = $9 AND owner IS NULL",
                )
                .bind(user.as_str())
                .bind(&name)
                .bind(now_millis())
                .bind(details.access_key.as_deref())
                .bind(details.mcu_mod.as_deref())
                .bind(details.mcu_version.as_deref())
                .bind(details.firmware_mod.as_deref())
                .bind(details.firmware_version.as_deref())
                .bind(&deviceid)
                .execute(&mut *tx)
                .await?;
                if bound.rows_affected() == 0 {
                    return Err(RegisterError::MacTaken(product_id.to_owned()));
                }
                RegisteredDevice { deviceid, device_key: None }
            }
            None => {
                // 40 random bits in the shape of the cloud's ids; a clash is checked, not assumed away.
                let mut deviceid = random_hex(5);
                while sqlx::query_scalar::<_, String>("SELECT deviceid FROM devices WHERE deviceid = $1")
                    .bind(&deviceid)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some()
                {
                    deviceid = random_hex(5);
                }
                let key = new_device_key();
                let extra = serde_json::json!({ "model": product.model, "uiid": 1, "mac": mac });
                sqlx::query(
                    "INSERT INTO devices (deviceid, factory_apikey, model, uiid, owner, name, created_at, owned_at, extra, product_id, mac, \
                     access_key, mcu_mod, mcu_version, firmware_mod, firmware_version) \
                     VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(&deviceid)
                .bind(&key)
                .bind(&product.model)
                .bind(user.as_str())
                .bind(&name)
                .bind(now_secs())
                .bind(now_millis())
                .bind(extra.to_string())
                .bind(product_id)
                .bind(mac)
                .bind(details.access_key.as_deref().unwrap_or(""))
                .bind(details.mcu_mod.as_deref().unwrap_or(""))
                .bind(details.mcu_version.as_deref().unwrap_or(""))
                .bind(details.firmware_mod.as_deref().unwrap_or(""))
                .bind(details.firmware_version.as_deref().unwrap_or(""))
                .execute(&mut *tx)
                .await
                .map_err(|e| if unique_violation(&e) { RegisterError::MacTaken(product_id.to_owned()) } else { e.into() })?;
                RegisteredDevice { deviceid, device_key: Some(key) }
            }
        };
        Self::place_thing_in(&mut tx, user.as_str(), ThingKind::OwnDevice, &registered.deviceid, None, None, Sort::First).await?;
        Self::bump_acl_in(&mut tx).await?;
        tx.commit().await?;
        Ok(registered)
    }
}
