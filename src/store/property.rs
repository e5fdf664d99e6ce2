//! Extension properties: up to [`MAX_PROPERTIES`] key/value pairs a device's owner attaches to it
//! (seed 003). The owner and its sharees read them; only the owner changes them. A change merges
//! keys (a `null` value removes one) and is checked whole before anything is written, in one
//! transaction, so a refused change leaves the map as it was.

use serde_json::{Map, Value};
use sqlx::{AnyConnection, Row};

use super::device::Role;
use super::{Store, StoreError};
use crate::ids::UserKey;

/// Most properties one device keeps.
pub const MAX_PROPERTIES: usize = 10;
/// Largest value, as JSON text.
pub const MAX_PROPERTY_VALUE_BYTES: usize = 1024;
/// Longest key, in bytes.
pub const MAX_PROPERTY_KEY_BYTES: usize = 128;

/// Why reading or changing properties was refused.
#[derive(Debug, thiserror::Error)]
pub enum PropertyError {
    #[error("device {0} not found")]
    UnknownDevice(String),
    /// The path names another product than the device's.
    #[error("device {0} is not a device of product {1}")]
    WrongProduct(String, String),
    /// Neither the owner nor a sharee; or a sharee changing them.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("property key `{0}` {1}")]
    BadKey(String, &'static str),
    #[error("the value of property `{0}` {1}")]
    BadValue(String, &'static str),
    #[error("setting `{0}` would make more than {MAX_PROPERTIES} properties")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PropertyError {
    fn from(e: sqlx::Error) -> Self {
        PropertyError::Store(e.into())
    }
}

type PropertyResult<T> = std::result::Result<T, PropertyError>;

/// A key may not be empty, contain `.` or NUL, or start with `$` (the seed's rule), and is at
/// most [`MAX_PROPERTY_KEY_BYTES`].
pub fn check_key(key: &str) -> PropertyResult<()> {
    let why = if key.is_empty() {
        "is empty"
    } else if key.starts_with('$') {
        "starts with `$`"
    } else if key.contains('.') {
        "contains `.`"
    } else if key.contains('\0') {
        "contains NUL"
    } else if key.len() > MAX_PROPERTY_KEY_BYTES {
        "is longer than 128 bytes"
    } else {
        return Ok(());
    };
    Err(PropertyError::BadKey(key.to_owned(), why))
}

/// A value is a string, number or boolean of at most [`MAX_PROPERTY_VALUE_BYTES`] as JSON
/// (`null` means "remove" and is handled before this).
pub fn check_value(key: &str, value: &Value) -> PropertyResult<()> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
        _ => return Err(PropertyError::BadValue(key.to_owned(), "must be a string, number or boolean")),
    }
    if value.to_string().len() > MAX_PROPERTY_VALUE_BYTES {
        return Err(PropertyError::BadValue(key.to_owned(), "is larger than 1 KiB"));
    }
    Ok(())
}

impl Store {
    /// The caller's role on a device of `product_id`, checked in this order: unknown device,
    /// a stranger, the wrong product.
    async fn property_access_in(conn: &mut AnyConnection, user: &UserKey, product_id: &str, deviceid: &str) -> PropertyResult<Role> {
        let product: Option<Option<String>> =
            sqlx::query_scalar("SELECT product_id FROM devices WHERE deviceid = $1").bind(deviceid).fetch_optional(&mut *conn).await?;
        let Some(product) = product else { return Err(PropertyError::UnknownDevice(deviceid.to_owned())) };
        let role = Self::role_in(&mut *conn, user.as_str(), deviceid)
            .await?
            .ok_or(PropertyError::Forbidden("only the device's manager and its sharees may see its properties"))?;
        if product.as_deref() != Some(product_id) {
            return Err(PropertyError::WrongProduct(deviceid.to_owned(), product_id.to_owned()));
        }
        Ok(role)
    }

    async fn properties_in(conn: &mut AnyConnection, deviceid: &str) -> PropertyResult<Map<String, Value>> {
        let rows =
            sqlx::query("SELECT key, value FROM device_properties WHERE deviceid = $1 ORDER BY key").bind(deviceid).fetch_all(conn).await?;
        Ok(rows.into_iter().map(|r| (r.get::<String, _>(0), serde_json::from_str(&r.get::<String, _>(1)).unwrap_or(Value::Null))).collect())
    }

    /// A device's properties, for its owner or a sharee.
    pub async fn device_properties(&self, user: &UserKey, product_id: &str, deviceid: &str) -> PropertyResult<Map<String, Value>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Self::property_access_in(&mut conn, user, product_id, deviceid).await?;
        Self::properties_in(&mut conn, deviceid).await
    }

    /// Merges `changes` into a device's properties (owner only; `null` removes a key) and
    /// returns the whole map. A bad key or value, or more than [`MAX_PROPERTIES`] keys after the
    /// merge, changes nothing.
    pub async fn merge_device_properties(
        &self,
        user: &UserKey,
        product_id: &str,
        deviceid: &str,
        changes: &Map<String, Value>,
    ) -> PropertyResult<Map<String, Value>> {
        for (key, value) in changes {
            check_key(key)?;
            if !value.is_null() {
                check_value(key, value)?;
            }
        }
        let mut tx = self.begin().await?;
        if Self::property_access_in(&mut tx, user, product_id, deviceid).await? != Role::Owner {
            return Err(PropertyError::Forbidden("only the device's manager may change its properties"));
        }
        let before = Self::properties_in(&mut tx, deviceid).await?;
        let mut merged = before.clone();
        for (key, value) in changes {
            if value.is_null() {
                merged.remove(key);
            } else {
                merged.insert(key.clone(), value.clone());
            }
        }
        if merged.len() > MAX_PROPERTIES {
            // Name the first key the change adds: without the added keys the map fits.
            let added = changes.iter().find(|(k, v)| !v.is_null() && !before.contains_key(*k)).map(|(k, _)| k.clone());
            return Err(PropertyError::TooMany(added.unwrap_or_default()));
        }
        for (key, value) in changes {
            if value.is_null() {
                sqlx::query("DELETE FROM device_properties WHERE deviceid = $1 AND key = $2")
                    .bind(deviceid)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO device_properties (deviceid, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (deviceid, key) DO UPDATE SET value = excluded.value",
                )
                .bind(deviceid)
                .bind(key)
                .bind(value.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(merged)
    }
}
