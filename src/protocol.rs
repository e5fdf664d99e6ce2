//! The realtime frames as plain serde types, and nothing else: no sockets, no state.
//!
//! Inbound frames borrow from the received text; fields whose value the hub only passes along
//! (`sequence`, `params`) stay raw JSON so they are echoed byte-for-byte and never re-encoded.
//! Outbound frames are one flat struct whose absent fields are skipped.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Anything an app or a device sends on `/api/ws`. Unknown fields (`ts`, `version`, `nonce`,
/// `romVersion`, ...) are ignored; a known field with the wrong type fails the whole frame.
#[derive(Debug, Deserialize)]
pub struct Inbound<'a> {
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub deviceid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub apikey: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "selfApikey")]
    pub self_apikey: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "userAgent")]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub appid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub sequence: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub d_seq: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    #[serde(default)]
    pub error: Option<i64>,
    /// An app's `update` may ask to be kept this many seconds for a device that is offline.
    #[serde(borrow, default)]
    pub ttl: Option<&'a RawValue>,
}

/// Why an inbound frame could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}` has the wrong type")]
    WrongType(&'static str),
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    #[error("field `{0}` holds a number out of range")]
    OutOfRange(&'static str),
    /// JSON syntax that JSON parsers refuse to read back (a lone surrogate escape such as
    /// `"\ud800"`, a number no `f64` holds): refused rather than echoed to a client.
    #[error("field `{0}` holds an invalid escape or a number out of range")]
    Unreadable(&'static str),
}

impl<'a> Inbound<'a> {
    pub fn parse(text: &'a str) -> Result<Self, FrameError> {
        let frame: Inbound<'a> = serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if let Some(seq) = frame.sequence
            && !is_scalar_id(seq)
        {
            return Err(FrameError::WrongType("sequence"));
        }
        // Both are echoed as received in answers, so they must be JSON every client can read.
        for (name, raw) in [("sequence", frame.sequence), ("d_seq", frame.d_seq)] {
            if raw.is_some_and(|r| !readable::readable(r)) {
                return Err(FrameError::Unreadable(name));
            }
        }
        Ok(frame)
    }

    pub fn require_deviceid(&self) -> Result<&str, FrameError> {
        match self.deviceid.as_deref() {
            Some(id) if !id.is_empty() => Ok(id),
            _ => Err(FrameError::Missing("deviceid")),
        }
    }

    /// `params` as an object, the shape every `update` needs, that every later reader can parse
    /// (see [`readable`]).
    pub fn object_params(&self) -> Result<&'a RawValue, FrameError> {
        match self.params {
            Some(p) if p.get().trim_start().starts_with('{') => {
                if readable::readable(p) {
                    Ok(p)
                } else {
                    Err(FrameError::OutOfRange("params"))
                }
            }
            Some(_) => Err(FrameError::WrongType("params")),
            None => Err(FrameError::Missing("params")),
        }
    }
}

/// Whether every later reader can parse `raw` as JSON (see [`readable`]).
pub fn is_readable(raw: &RawValue) -> bool {
    readable::readable(raw)
}

/// A sequence (or `d_seq`) must be a string or a number; it is echoed as received.
fn is_scalar_id(raw: &RawValue) -> bool {
    let t = raw.get().trim_start();
    t.starts_with('"') || t.starts_with('-') || t.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// The text a sequence is matched by, so `"17"` and `17` name the same request.
pub fn sequence_key(raw: &RawValue) -> std::sync::Arc<str> {
    let t = raw.get().trim();
    match serde_json::from_str::<Cow<'_, str>>(t) {
        Ok(s) => s.into(),
        Err(_) => t.into(),
    }
}

#[derive(Debug, Serialize)]
pub struct HbConfig {
    pub hb: u8,
    #[serde(rename = "hbInterval")]
    pub hb_interval: u64,
}

#[derive(Debug, Serialize)]
pub struct RegConfig {
    #[serde(rename = "regInterval")]
    pub reg_interval: u64,
}

/// Every frame the hub sends. Fields are written in this order and skipped when `None`.
#[derive(Debug, Default, Serialize)]
pub struct Outbound<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<i64>,
    /// `true` in the answer to a command kept for a device that is offline (see `crate::offline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deviceid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apikey: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "userAgent")]
    pub user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_seq: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<HbConfig>,
}

impl Outbound<'_> {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("outbound frames always serialize")
    }
}

/// The refusal real firmware understands: it waits `regInterval` seconds and registers again.
pub fn register_refusal(error: i64, reason: &str, deviceid: &str) -> String {
    #[derive(Serialize)]
    struct Refusal<'a> {
        error: i64,
        reason: &'a str,
        deviceid: &'a str,
        config: RegConfig,
        #[serde(rename = "actionName")]
        action_name: &'static str,
    }
    serde_json::to_string(&Refusal { error, reason, deviceid, config: RegConfig { reg_interval: 15 }, action_name: "register" })
        .expect("refusal serializes")
}

/// An error frame: `{"error":N,"reason":..}` plus the sequence when the request had one.
pub fn error_frame(error: i64, reason: &str, sequence: Option<&RawValue>) -> String {
    Outbound { error: Some(error), reason: Some(reason), sequence, ..Default::default() }.to_text()
}

/// The literal `0` that old firmware expects when a query has nothing to answer.
pub fn zero() -> &'static RawValue {
    static ZERO: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    ZERO.get_or_init(|| RawValue::from_string("0".to_owned()).expect("0 is JSON"))
}

/// Builds a raw JSON value from trusted text.
pub fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).expect("caller passes valid JSON")
}

mod readable;
/// What an app asked a device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Update,
    Query,
    Upgrade,
}

impl CommandKind {
    pub fn action(self) -> &'static str {
        match self {
            CommandKind::Update => "update",
            CommandKind::Query => "query",
            CommandKind::Upgrade => "upgrade",
        }
    }
}

#[cfg(test)]
mod tests;
