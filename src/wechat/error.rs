//! What a WeChat call can end in, typed so callers can match: a route answers WeChat's own
//! errcodes inside its `resp` and a timeout as 504; an operator command prints the message.

use std::time::Duration;

/// errcode of an invalid parameter (`参数错误`).
pub const ERR_INVALID_PARAMETER: i64 = 40101;
/// errcode of a push message over the size limit (`推送内容长度超过限制`).
pub const ERR_MESSAGE_TOO_LONG: i64 = 45002;
/// errcode of an invalid access token (`token无效`).
pub const ERR_TOKEN_INVALID: i64 = 48012;

/// errcodes that mean "this access token is no good": the connector fetches a new token once
/// and repeats the call. 40001 invalid credential, 40014 invalid token, 42001 expired, 48012.
pub const TOKEN_ERRCODES: [i64; 4] = [40001, 40014, 42001, ERR_TOKEN_INVALID];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeChatError {
    /// WeChat answered 40101.
    #[error("WeChat refused the parameters (errcode 40101): {errmsg}")]
    InvalidParameter { errmsg: String },
    /// A push message over [`super::MAX_PUSH_BYTES`]; refused before anything was sent.
    #[error("the message is {bytes} bytes, more than the {max} WeChat accepts (errcode 45002)")]
    MessageTooLong { bytes: usize, max: usize },
    /// Any other errcode WeChat answered on a call (including 45002 and token errcodes that
    /// persisted past one refresh).
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    /// The token endpoint refused the application's appid and secret.
    #[error("WeChat refused an access token for {appid} (errcode {errcode}): {errmsg}")]
    Token { appid: String, errcode: i64, errmsg: String },
    /// The call, its retries and any token fetch took longer than the deadline.
    #[error("WeChat did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection or a broken one, after the retries.
    #[error("cannot reach WeChat: {0}")]
    Network(String),
    /// An HTTP status other than 2xx (a 5xx only after the retries).
    #[error("WeChat answered HTTP {0}")]
    Status(u16),
    /// A 2xx answer that is not the documented JSON.
    #[error("unreadable answer from WeChat: {0}")]
    Decode(String),
    /// The connector cannot be built (bad base URL).
    #[error("WeChat connector: {0}")]
    Setup(String),
}

impl WeChatError {
    /// An errcode in WeChat's numbering, for answers shaped like WeChat's: WeChat's own, 45002
    /// for the local size check, `None` for transport failures.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WeChatError::InvalidParameter { .. } => Some(ERR_INVALID_PARAMETER),
            WeChatError::MessageTooLong { .. } => Some(ERR_MESSAGE_TOO_LONG),
            WeChatError::Api { errcode, .. } | WeChatError::Token { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// WeChat's errmsg when it answered one, else this error's text.
    pub fn errmsg(&self) -> String {
        match self {
            WeChatError::InvalidParameter { errmsg } | WeChatError::Api { errmsg, .. } | WeChatError::Token { errmsg, .. } => {
                errmsg.clone()
            }
            other => other.to_string(),
        }
    }

    /// The answer from WeChat's side of an errcode, as a call site sees it.
    pub(crate) fn from_errcode(errcode: i64, errmsg: String) -> Self {
        match errcode {
            ERR_INVALID_PARAMETER => WeChatError::InvalidParameter { errmsg },
            _ => WeChatError::Api { errcode, errmsg },
        }
    }

    pub(crate) fn is_token_invalid(&self) -> bool {
        matches!(self, WeChatError::Api { errcode, .. } if TOKEN_ERRCODES.contains(errcode))
    }
}
