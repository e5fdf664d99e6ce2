//! WeChat: the platform's calls to the WeChat hardware backend (seed 001).
//!
//! [`WeChat`] is the connector: a cheap-to-clone client the hub holds ([`crate::hub::Hub::wechat`])
//! and `switchyard admin wechat …` builds for itself. It owns the HTTP client and each WeChat
//! application's access token; callers pass the application's [`AppCredentials`] (read from the
//! store with [`crate::store::Store::wechat_app`]) with every call.
//!
//! It sits beside the sessions, never on the routing path: nothing in `session` or `router`
//! awaits it. Whoever calls it (a REST route, an alarm task, an operator command) awaits WeChat
//! within the connector's deadline.
//!
//! - [`connector`]: the five calls, their request and answer shapes, retries and the deadline.
//! - [`token`]: the access-token cache, one entry per WeChat application.
//! - [`error`]: [`WeChatError`], with the WeChat errcode when there is one.
//! - [`work`]: what the node does with WeChat in the background: seed 000's authorisation jobs
//!   and pushes to WeChat users with bounded retries.

pub mod connector;
pub mod error;
pub mod token;
pub mod work;

pub use connector::{AppCredentials, CreateProduct, DEFAULT_API_BASE, DEFAULT_TIMEOUT, MAX_PUSH_BYTES, Options, WeChat};
pub use error::WeChatError;
pub use work::Work;
