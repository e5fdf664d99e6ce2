//! The state every task of a node shares: settings, the store, the router, counters, the
//! background writers and the shutdown signal. It imports none of the server, HTTP or command
//! line modules; `lib.rs` assembles it and hands it to them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acl::Acl;
use crate::alarm::Alarms;
use crate::auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::offline::Offline;
use crate::recorder::Recorder;
use crate::router::Router;
use crate::store::Store;
use crate::verify;
use crate::wechat;

/// Everything a node's tasks share.
pub struct Hub {
    pub config: Config,
    pub store: Store,
    pub router: Arc<dyn Router>,
    pub metrics: Arc<Metrics>,
    pub hasher: auth::Hasher,
    pub recorder: Recorder,
    /// Cancelled once to stop the node: listeners stop accepting and sessions close with 1001.
    pub shutdown: CancellationToken,
    /// Cancelled when the sessions still open must close at once (1001): with `shutdown` on a
    /// node that does not drain, else when the drain ends ([`crate::drain`]).
    pub sessions_end: CancellationToken,
    /// Every connection and session task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Who may reach each online device: reloaded at once after a change made here, and by a
    /// poll after changes made by other processes.
    pub acl: Arc<Acl>,
    /// The REST rate limit's counters (see [`crate::rate`]), shared with the other nodes of a cluster.
    pub rate_counts: Arc<crate::rate::RateLimiter>,
    /// Failed password and code checks per account (see [`auth::lockout`]).
    pub lockout: Arc<auth::lockout::Lockout>,
    /// Delivers verification codes (by default: the log and a file under the data dir).
    pub codes: Arc<dyn verify::CodeSender>,
    /// The WeChat connector (seed 001): beside the sessions, never on the routing path.
    pub wechat: wechat::WeChat,
    /// WeChat authorisation jobs and pushes to WeChat users, in the background.
    pub wechat_work: wechat::Work,
    /// Threshold alarm rules and the evaluator's queue.
    pub alarms: Arc<Alarms>,
    /// Commands kept for devices that were offline when they were sent.
    pub offline: Arc<Offline>,
    /// Where `/dispatch` sends clients: domain and port, and the IP for firmware that uses it.
    pub(crate) public_ws: (String, u16),
    pub(crate) public_ip: String,
    /// This node's cluster, when it is one of several (`--cluster`): its router, and the live
    /// nodes `/dispatch` chooses from.
    pub cluster: Option<Arc<crate::cluster::ClusterRouter>>,
}

impl Hub {
    pub fn public_ws(&self) -> (String, u16) {
        self.public_ws.clone()
    }

    pub fn public_ip(&self) -> &str {
        &self.public_ip
    }
}
