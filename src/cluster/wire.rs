//! What the nodes of a cluster say to each other over NATS, and on which subjects. Every subject
//! starts with the cluster's name (`--cluster-name`), so two clusters can share a NATS server.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::audience::{Audience, DeviceSettings};
use crate::ids::UserKey;
use crate::protocol::CommandKind;
use crate::router::RouteError;

/// The subjects of one cluster, as seen from one node.
pub struct Subjects {
    prefix: String,
    node: String,
}

impl Subjects {
    pub fn new(cluster: &str, node: &str) -> Self {
        Subjects { prefix: cluster.to_owned(), node: node.to_owned() }
    }

    /// Subscribed by `node` from its start: commands and notices for the devices it holds, and
    /// the state of a device it took over.
    pub fn node(&self, node: &str) -> String {
        format!("{}.node.{}", self.prefix, token(node))
    }

    /// Subscribed by every node with an app session of the user: frames for that user's sessions.
    pub fn user(&self, user: &UserKey) -> String {
        format!("{}.user.{}", self.prefix, token(user.as_str()))
    }

    /// Where answers to this node's remote commands come back, one subject per call.
    pub fn reply(&self, call: u64) -> String {
        format!("{}.reply.{}.{call}", self.prefix, self.node)
    }

    pub fn replies(&self) -> String {
        format!("{}.reply.{}.*", self.prefix, self.node)
    }

    pub fn heartbeat(&self) -> String {
        format!("{}.hb", self.prefix)
    }

    /// Which node holds which device: announced on every claim and release.
    pub fn presence(&self) -> String {
        format!("{}.presence", self.prefix)
    }

    /// A secret check of an account on some node: every node's lockout counts it.
    pub fn checks(&self) -> String {
        format!("{}.checks", self.prefix)
    }

    /// REST calls counted on some node: every node adds them to its rate-limit windows.
    pub fn limits(&self) -> String {
        format!("{}.limits", self.prefix)
    }

    /// Sharing changed for some devices: every node reloads their audiences.
    pub fn acl(&self) -> String {
        format!("{}.acl", self.prefix)
    }
}

/// An id as one subject token: as it is when it is letters, digits, `-` and `_` (every id the hub
/// issues), else `%` and its hex, so no id can add or widen a subject's tokens.
fn token(id: &str) -> Cow<'_, str> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("%{}", hex::encode(id)))
    }
}

/// A message on a node's subject, about device `dev`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ToNode {
    /// An app's command; `seq` and `params` are JSON texts as the app sent them (serde cannot
    /// borrow raw JSON inside a tagged enum); `ms` is what is left of the requester's deadline.
    Cmd { dev: String, caller: String, kind: Kind, seq: String, params: String, ms: u64 },
    /// A frame the hub sends the device itself (`notify`, `deleteNotify`).
    Notify { dev: String, frame: String },
    /// The node that held the device before the claim with `epoch` hands over its latest state.
    State { dev: String, epoch: i64, state: String },
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Update,
    Query,
    Upgrade,
}

impl From<CommandKind> for Kind {
    fn from(k: CommandKind) -> Self {
        match k {
            CommandKind::Update => Kind::Update,
            CommandKind::Query => Kind::Query,
            CommandKind::Upgrade => Kind::Upgrade,
        }
    }
}

impl From<Kind> for CommandKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Update => CommandKind::Update,
            Kind::Query => CommandKind::Query,
            Kind::Upgrade => CommandKind::Upgrade,
        }
    }
}

/// The holder's answers to a [`ToDevice`] request.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Reply {
    /// The command waits at the device; its ack follows.
    Accepted {
        audience: AudienceWire,
    },
    Refused {
        why: Why,
    },
    /// `params` is a JSON text.
    Ack {
        error: i64,
        params: Option<String>,
    },
    /// The device went away, or the deadline passed, before it acked.
    Gone,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Why {
    Offline,
    Denied,
    Busy,
}

impl From<RouteError> for Why {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Offline => Why::Offline,
            RouteError::Denied => Why::Denied,
            RouteError::Busy => Why::Busy,
        }
    }
}

impl From<Why> for RouteError {
    fn from(w: Why) -> Self {
        match w {
            Why::Offline => RouteError::Offline,
            Why::Denied => RouteError::Denied,
            Why::Busy => RouteError::Busy,
        }
    }
}

/// An [`Audience`] as the holder judged the command by, for the requester's history and echo.
#[derive(Serialize, Deserialize)]
pub struct AudienceWire {
    owner: String,
    sharees: Vec<String>,
    permits: Vec<i64>,
    ops_notify: bool,
    ops_history: bool,
    alarm_notify: bool,
}

impl From<&Audience> for AudienceWire {
    fn from(a: &Audience) -> Self {
        AudienceWire {
            owner: a.owner.as_str().to_owned(),
            sharees: a.sharees.iter().map(|k| k.as_str().to_owned()).collect(),
            permits: a.permits.clone(),
            ops_notify: a.settings.ops_notify,
            ops_history: a.settings.ops_history,
            alarm_notify: a.settings.alarm_notify,
        }
    }
}

impl From<AudienceWire> for Audience {
    fn from(w: AudienceWire) -> Self {
        Audience {
            owner: UserKey::new(w.owner),
            sharees: w.sharees.into_iter().map(UserKey::new).collect(),
            permits: w.permits,
            settings: DeviceSettings { ops_notify: w.ops_notify, ops_history: w.ops_history, alarm_notify: w.alarm_notify },
        }
    }
}

/// The first byte of a message on a user's subject: a frame for every session (the rest of the
/// message, as the sessions send it), a [`Close`] request as JSON, or a node's [`Count`] of the
/// user's sessions as JSON.
pub const FRAME: u8 = b'F';
pub const CLOSE: u8 = b'C';
pub const COUNT: u8 = b'N';

/// How many app sessions of the user `node` holds now; `ask`: the sender just subscribed, every
/// other node holding sessions of the user answers with its own count.
#[derive(Serialize, Deserialize)]
pub struct Count {
    pub node: String,
    pub sessions: u32,
    pub ask: bool,
}

/// REST calls one node counted since its last [`Hits`]: (client network, method, route, window
/// index, calls).
#[derive(Serialize, Deserialize)]
pub struct Hits {
    pub hits: Vec<(std::net::IpAddr, String, String, u64, u32)>,
}

/// Closes a user's sessions on every node: those of one credential, or all but one credential's.
#[derive(Serialize, Deserialize)]
pub struct Close {
    pub credential: Option<u64>,
    pub keep: u64,
    pub reason: u8,
}

/// Each node's heartbeat, every second: alive, how loaded, where clients reach it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Heartbeat {
    pub node: String,
    pub connections: i64,
    pub host: String,
    pub port: u16,
    pub ip: String,
    /// Shutting down: hand out no new clients.
    pub draining: bool,
}

/// A device's holder changed: `node` holds it now by the claim with `epoch` (empty: the claim
/// with `epoch` ended, nobody holds it). Epochs order the announcements, whatever order they
/// arrive in.
#[derive(Serialize, Deserialize)]
pub struct Presence {
    pub deviceid: String,
    pub node: String,
    pub epoch: i64,
}

/// A failed-or-not secret check taken on one node, for every node's lockout.
#[derive(Serialize, Deserialize)]
pub struct Check {
    pub account: String,
    pub event: crate::auth::lockout::Event,
}

#[derive(Serialize, Deserialize)]
pub struct AclChange {
    pub devices: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_single_subject_tokens() {
        assert_eq!(token("1000000001"), "1000000001");
        assert_eq!(token("a.b"), "%612e62");
        assert_eq!(token("*"), "%2a");
        assert_eq!(token(""), "%");
        let s = Subjects::new("sy", "n1");
        assert_eq!(s.node("n.2"), "sy.node.%6e2e32");
        assert_eq!(s.reply(7), "sy.reply.n1.7");
    }
}
