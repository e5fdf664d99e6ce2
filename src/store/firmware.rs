//! The firmware catalogue the operator fills (`switchyard admin firmware add`): per module model
//! and version, the bin files a device downloads. `POST /v2/device/ota/query` offers the newest
//! version of a model to devices running an older one.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Result, Store, StoreError, unique_violation};
use crate::clock::now_millis;

/// One downloadable file of a firmware version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FirmwareBin {
    /// File name, e.g. `user1.bin`.
    pub name: String,
    #[serde(rename = "downloadUrl")]
    pub download_url: String,
    /// SHA-256 of the file, 64 hex digits.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub digest: Option<String>,
}

/// One catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub model: String,
    pub version: String,
    pub bins: Vec<FirmwareBin>,
    /// When it was added, milliseconds since the epoch.
    pub created_at: i64,
}

/// Compares dotted versions numerically, part by part (`1.10` > `1.9`; missing parts are 0;
/// a part's leading digits count, so `2.0.1b` reads as `2.0.1`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.trim()
            .split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(0)
            })
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        match a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

/// Whether `v` is a dotted version of 1 to 4 numbers (what the catalogue accepts).
pub fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (1..=4).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Store {
    /// Adds a version of a model's firmware; the same model and version twice is a conflict.
    pub async fn add_firmware(&self, model: &str, version: &str, bins: &[FirmwareBin]) -> Result<()> {
        let bins = serde_json::to_string(bins).expect("bins serialize");
        sqlx::query("INSERT INTO firmware (model, version, bins, created_at) VALUES ($1, $2, $3, $4)")
            .bind(model)
            .bind(version)
            .bind(bins)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| if unique_violation(&e) { StoreError::Conflict(format!("firmware {model} {version}")) } else { e.into() })?;
        Ok(())
    }

    /// The whole catalogue, by model, newest version first.
    pub async fn firmware(&self) -> Result<Vec<Firmware>> {
        let rows = sqlx::query("SELECT model, version, bins, created_at FROM firmware").fetch_all(&self.pool).await?;
        let mut all: Vec<Firmware> = rows.into_iter().map(Self::firmware_from).collect();
        all.sort_by(|a, b| a.model.cmp(&b.model).then_with(|| compare_versions(&b.version, &a.version)));
        Ok(all)
    }

    /// The newest version of each of `models` in the catalogue (models without one are absent).
    pub async fn latest_firmware(&self, models: &[String]) -> Result<Vec<Firmware>> {
        let mut latest: Vec<Firmware> = Vec::new();
        for model in models {
            if latest.iter().any(|f| &f.model == model) {
                continue;
            }
            let rows = sqlx::query("SELECT model, version, bins, created_at FROM firmware WHERE model = $1")
                .bind(model)
                .fetch_all(&self.pool)
                .await?;
            if let Some(newest) = rows.into_iter().map(Self::firmware_from).max_by(|a, b| compare_versions(&a.version, &b.version)) {
                latest.push(newest);
            }
        }
        Ok(latest)
    }

    fn firmware_from(r: sqlx::any::AnyRow) -> Firmware {
        Firmware {
            model: r.get(0),
            version: r.get(1),
            bins: serde_json::from_str(&r.get::<String, _>(2)).unwrap_or_default(),
            created_at: r.get(3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("3.5.0", "3.5.1"), Ordering::Less);
        assert_eq!(compare_versions("2.0.1b", "2.0.1"), Ordering::Equal);
        assert!(valid_version("1.2.3") && valid_version("10"));
        assert!(!valid_version("1..2") && !valid_version("v1.2") && !valid_version("") && !valid_version("1.2.3.4.5"));
    }
}
