//! Three real `switchyard serve` nodes on loopback sharing one PostgreSQL database and a NATS
//! server (`--cluster`): commands cross nodes with the same acks, 504s and refusals, reports and
//! sysmsgs reach each session on every node once, a device moves between nodes (takeover) with
//! its state and no offline sysmsg, a killed node's devices go offline and reconnect elsewhere,
//! and a sharing change made on one node holds on the others within a second. Limits hold across
//! nodes (the REST rate limit, sessions per user, failed logins), and a terminated node drains its
//! sessions gradually to the others.
//!
//! Needs PostgreSQL (`SWITCHYARD_TEST_DATABASE_URL`, else the local server) and NATS
//! (`SWITCHYARD_TEST_NATS_URL`, else `nats://127.0.0.1:4222`); `.ci/run` starts both when down.

mod common;
mod procs;

use std::time::{Duration, Instant};

use common::{APPID, Client, PASSWORD, SECRET};
use procs::{Proc, command, free_port};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use switchyard::ids::{DeviceId, UserKey};
use switchyard::store::Store;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";
const ACK_MS: u64 = 1500;

/// A cluster of real nodes on one fresh database, with a cluster name of its own.
struct Cluster {
    url: String,
    db: String,
    server: String,
    nats: String,
    name: String,
    nodes: Vec<Node>,
    _tmp: tempfile::TempDir,
    store: Store,
    /// Settings every node of this cluster is started with.
    args: Vec<String>,
}

struct Node {
    proc: Option<Proc>,
    http: String,
}

struct User {
    apikey: UserKey,
    at: String,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// `n` nodes, each started with `args` too.
    async fn start_with(n: usize, args: &[&str]) -> Cluster {
        let server = std::env::var("SWITCHYARD_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_PG.into());
        let nats = std::env::var("SWITCHYARD_TEST_NATS_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_NATS.into());
        let tag: u64 = rand::random();
        let db = format!("sy_t_{}_{}_{tag:016x}", switchyard::clock::now_secs(), std::process::id());
        let base = server.split('?').next().unwrap();
        let url = format!("{}/{db}", &base[..base.rfind('/').unwrap()]);
        let mut admin =
            PgConnection::connect(&server).await.unwrap_or_else(|e| panic!("PostgreSQL is needed for this test ({server}): {e}"));
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).execute(&mut admin).await.unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), Some(&url)).await.unwrap();
        store.add_app(APPID, SECRET).await.unwrap();
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut c = Cluster { url, db, server, nats, name: format!("t{tag:x}"), nodes: Vec::new(), _tmp: tmp, store, args };
        for i in 0..n {
            let node = c.spawn(&format!("n{i}"), &[]);
            c.nodes.push(node);
        }
        c
    }

    /// Starts a node with the cluster's settings and `extra`.
    fn spawn(&self, name: &str, extra: &[&str]) -> Node {
        let http = format!("127.0.0.1:{}", free_port());
        let data = self._tmp.path().join(name);
        let ack = ACK_MS.to_string();
        let args = [
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--database-url",
            &self.url,
            "--http",
            &http,
            "--https",
            "off",
            "--metrics",
            "off",
            "--cluster",
            &self.nats,
            "--node-id",
            name,
            "--cluster-name",
            &self.name,
            "--ack-timeout-ms",
            &ack,
            "--public-ws",
            &http,
        ];
        let mut args = args.to_vec();
        args.extend(self.args.iter().map(String::as_str));
        args.extend(extra);
        let proc = Proc::spawn(name, command(&args));
        let deadline = Instant::now() + procs::WAIT;
        while !proc.stderr().contains("hub started") {
            assert!(Instant::now() < deadline, "{name} did not start:\n{}", proc.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { proc: Some(proc), http }
    }

    async fn user(&self, email: &str) -> User {
        let hash = switchyard::auth::hash_password(PASSWORD);
        let apikey = self.store.add_user(Some(email), None, "+86", &hash, "cn").await.unwrap();
        let pair = self.store.issue_tokens(&apikey, APPID, Duration::from_secs(3600), Duration::from_secs(7200)).await.unwrap();
        User { apikey, at: pair.at }
    }

    async fn device_record(&self, id: &str, owner: &User) {
        self.store.add_device(&DeviceId::new(id), &format!("key-{id}"), "EMU", 1, Some(&owner.apikey), "").await.unwrap();
    }

    async fn app(&self, node: usize, user: &User) -> Client {
        let (c, reply) = self.user_online(node, user).await;
        assert_eq!(reply["error"], 0, "userOnline failed: {reply}");
        c
    }

    /// An app's handshake on `node`, and the hub's answer to it.
    async fn user_online(&self, node: usize, user: &User) -> (Client, Value) {
        let mut c = raw(&self.nodes[node].http).await;
        c.send(json!({"action":"userOnline","version":8,"ts":1,"at":user.at,"userAgent":"app","apikey":user.apikey.as_str(),"appid":APPID,"nonce":"abcd1234","sequence":"1"})).await;
        let reply = c.recv().await;
        (c, reply)
    }

    async fn device(&self, http: &str, id: &str) -> Client {
        let mut c = raw(http).await;
        c.send(json!({"userAgent":"device","apikey":format!("key-{id}"),"deviceid":id,"action":"register","version":2,"romVersion":"1.0","model":"EMU","ts":1})).await;
        let reply = c.recv().await;
        assert_eq!(reply["error"], 0, "register failed: {reply}");
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(p) = &n.proc {
                    eprintln!("--- node n{i} stderr ---\n{}", p.stderr());
                }
            }
        }
        self.nodes.clear();
        let (server, db) = (self.server.clone(), self.db.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&server).await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).execute(&mut c).await;
                }
            })
        })
        .join();
    }
}

async fn raw(http: &str) -> Client {
    Client { ws: switchyard::emulate::connect(&format!("ws://{http}/api/ws"), None).await.unwrap() }
}

/// A REST call to one node as `user` (Bearer token); the answer's JSON.
async fn rest(method: reqwest::Method, http: &str, path_and_query: &str, user: &User, body: Option<&Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{http}{path_and_query}"))
        .header("authorization", format!("Bearer {}", user.at))
        .header("x-ck-appid", APPID);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap().json().await.unwrap()
}

fn update(user: &User, id: &str, seq: &str, params: Value) -> Value {
    json!({"action":"update","apikey":user.apikey.as_str(),"deviceid":id,"params":params,"userAgent":"app","sequence":seq,"ts":0})
}

/// Sends an update from `app` until the device (on another node, claimed a moment after its
/// register) receives it; returns the command as the device saw it.
async fn until_routed(app: &mut Client, device: &mut Client, user: &User, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        assert!(Instant::now() < deadline, "the device never became reachable across nodes");
        let seq = format!("probe{n}");
        app.send(update(user, id, &seq, json!({"probe":n}))).await;
        match tokio::time::timeout(Duration::from_millis(300), device.recv()).await {
            Ok(cmd) => {
                device.send(json!({"error":0,"deviceid":id,"apikey":user.apikey.as_str(),"sequence":cmd["sequence"]})).await;
                let reply = until_frame(app, "the probe's ack", |v| v["sequence"] == seq.as_str()).await;
                assert_eq!(reply["error"], 0, "{reply}");
                return cmd;
            }
            Err(_) => {
                let reply = until_frame(app, "the probe's answer", |v| v["sequence"] == seq.as_str()).await;
                assert_eq!(reply["error"], 504, "{reply}");
            }
        }
    }
    unreachable!()
}

/// Alice, her app session on node 0 and her device `id` on node `on`, once commands from node 0
/// reach it.
async fn alice_and_device(c: &Cluster, id: &str, on: usize) -> (User, Client, Client) {
    let alice = c.user("alice@example.com").await;
    c.device_record(id, &alice).await;
    let mut a0 = c.app(0, &alice).await;
    let mut dev = c.device(&c.nodes[on].http, id).await;
    until_routed(&mut a0, &mut dev, &alice, id).await;
    (alice, a0, dev)
}

/// Reads frames until one matches; panics on timeout.
async fn until_frame(c: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no {what}");
        let v = c.recv().await;
        if pred(&v) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_reports_and_sysmsgs_cross_nodes_once_each() {
    let c = Cluster::start(3).await;
    let alice = c.user("alice@example.com").await;
    let bob = c.user("bob@example.com").await;
    let carol = c.user("carol@example.com").await;
    c.device_record("1000000c01", &alice).await;
    c.store.share_device(&DeviceId::new("1000000c01"), &bob.apikey, 15).await.unwrap();
    // Alice on every node, Bob (a sharee) on node 2; the device on node 1.
    let mut a0 = c.app(0, &alice).await;
    let mut a1 = c.app(1, &alice).await;
    let mut a2 = c.app(2, &alice).await;
    let mut b2 = c.app(2, &bob).await;
    let mut dev = c.device(&c.nodes[1].http, "1000000c01").await;
    // Online sysmsgs: the sessions on node 1 hear theirs at once; the ones elsewhere once subscribed.
    until_frame(&mut a1, "online sysmsg", |v| v["action"] == "sysmsg").await;
    until_routed(&mut a0, &mut dev, &alice, "1000000c01").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in [&mut a0, &mut a1, &mut a2, &mut b2] {
        while tokio::time::timeout(Duration::from_millis(200), s.recv()).await.is_ok() {}
    }

    // A command from node 0 reaches the device on node 1; its ack comes back by sequence.
    a0.send(update(&alice, "1000000c01", "s1", json!({"switch":"on"}))).await;
    let cmd = dev.recv().await;
    assert_eq!(
        (cmd["action"].as_str(), cmd["params"]["switch"].as_str(), cmd["sequence"].as_str()),
        (Some("update"), Some("on"), Some("s1"))
    );
    assert_eq!(cmd["apikey"], alice.apikey.as_str());
    dev.send(json!({"error":0,"deviceid":"1000000c01","apikey":alice.apikey.as_str(),"sequence":"s1"})).await;
    let reply = a0.recv().await;
    assert_eq!((reply["error"].as_i64(), reply["sequence"].as_str()), (Some(0), Some("s1")), "{reply}");
    // The echo reaches every other session of the audience once, on every node.
    for (name, s) in [("alice@1", &mut a1), ("alice@2", &mut a2), ("bob@2", &mut b2)] {
        let echo = s.recv().await;
        assert_eq!((echo["action"].as_str(), echo["params"]["switch"].as_str()), (Some("update"), Some("on")), "{name}: {echo}");
    }
    a0.silent_for(300).await;

    // A report fans out to each session on every node exactly once.
    dev.send(json!({"action":"update","deviceid":"1000000c01","apikey":alice.apikey.as_str(),"userAgent":"device","params":{"switch":"off"},"sequence":"r1"})).await;
    assert_eq!(dev.recv().await["error"], 0);
    for (name, s) in [("alice@0", &mut a0), ("alice@1", &mut a1), ("alice@2", &mut a2), ("bob@2", &mut b2)] {
        let report = s.recv().await;
        assert_eq!((report["action"].as_str(), report["params"]["switch"].as_str()), (Some("update"), Some("off")), "{name}: {report}");
    }
    for s in [&mut a0, &mut a1, &mut a2, &mut b2] {
        s.silent_for(300).await;
    }

    // A sharee's command crosses nodes too; a stranger's is refused as on one node.
    b2.send(update(&bob, "1000000c01", "b1", json!({"switch":"on"}))).await;
    let cmd = dev.recv().await;
    dev.send(json!({"error":0,"deviceid":"1000000c01","apikey":alice.apikey.as_str(),"sequence":cmd["sequence"]})).await;
    assert_eq!(until_frame(&mut b2, "bob's ack", |v| v["sequence"] == "b1").await["error"], 0);
    let mut c0 = c.app(0, &carol).await;
    c0.send(update(&carol, "1000000c01", "c1", json!({"switch":"on"}))).await;
    assert_eq!(c0.recv().await["error"], 406);

    // No ack: 504 at the requester's deadline, and the device got the command.
    a0.send(update(&alice, "1000000c01", "s2", json!({"switch":"off"}))).await;
    assert_eq!(dev.recv().await["sequence"], "s2");
    let reply = until_frame(&mut a0, "the 504", |v| v["sequence"] == "s2").await;
    assert_eq!(reply["error"], 504, "{reply}");

    // The device leaves: one offline sysmsg per session, on every node.
    drop(dev);
    for (name, s) in [("alice@0", &mut a0), ("alice@1", &mut a1), ("alice@2", &mut a2), ("bob@2", &mut b2)] {
        let v = until_frame(s, "offline sysmsg", |v| v["action"] == "sysmsg").await;
        assert_eq!(v["params"]["online"], false, "{name}: {v}");
        s.silent_for(300).await;
    }
    // Offline everywhere: 504 at once for a member, 406 for a stranger.
    a0.send(update(&alice, "1000000c01", "s3", json!({"switch":"on"}))).await;
    assert_eq!(a0.recv().await["error"], 504);
    c0.send(update(&carol, "1000000c01", "c2", json!({"switch":"on"}))).await;
    assert_eq!(c0.recv().await["error"], 406);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_moving_to_another_node_takes_its_state_and_sends_no_offline_sysmsg() {
    let c = Cluster::start(2).await;
    let alice = c.user("alice@example.com").await;
    c.device_record("1000000c02", &alice).await;
    let mut a0 = c.app(0, &alice).await;
    let mut old = c.device(&c.nodes[0].http, "1000000c02").await;
    until_frame(&mut a0, "online sysmsg", |v| v["action"] == "sysmsg").await;
    old.send(json!({"action":"update","deviceid":"1000000c02","apikey":alice.apikey.as_str(),"userAgent":"device","params":{"switch":"on","power":"12"},"sequence":"r1"})).await;
    assert_eq!(old.recv().await["error"], 0);
    until_frame(&mut a0, "the report", |v| v["params"]["power"] == "12").await;
    // Node 0's claim is done once a command from node 1 reaches the device (claims are ordered
    // by epoch, not by register time: a claim still in flight could win over a newer one).
    let mut a1 = c.app(1, &alice).await;
    until_routed(&mut a1, &mut old, &alice, "1000000c02").await;
    until_frame(&mut a0, "the probe's echo", |v| v["params"]["probe"].is_number()).await;

    // The device registers on node 1 while its connection to node 0 is still open.
    let mut new = c.device(&c.nodes[1].http, "1000000c02").await;
    let close = old.recv_close().await;
    assert!(close.is_some_and(|f| f.reason.contains("replaced")), "the old connection is closed as replaced");
    // The app hears the device online again, and never offline.
    let v = until_frame(&mut a0, "online sysmsg from the new node", |v| v["action"] == "sysmsg").await;
    assert_eq!(v["params"]["online"], true, "{v}");
    a0.silent_for(500).await;
    // Commands from node 0 now reach the device on node 1.
    until_routed(&mut a0, &mut new, &alice, "1000000c02").await;
    // Node 1 has the state reported on node 0.
    let res = rest(reqwest::Method::GET, &c.nodes[1].http, "/v2/device/thing/status?type=1&id=1000000c02", &alice, None).await;
    assert_eq!(res["data"]["params"]["power"], "12", "{res}");
}

/// A device registering on two nodes at once (a flapping connection): the claims are ordered by
/// their epochs, so exactly one node keeps the device, the other closes its connection as
/// replaced, and commands from a third node reach the one left.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_registering_on_two_nodes_at_once_is_held_by_one() {
    let c = Cluster::start(3).await;
    let alice = c.user("alice@example.com").await;
    let mut a2 = c.app(2, &alice).await;
    for i in 0..3 {
        let id = format!("1000000d0{i}");
        c.device_record(&id, &alice).await;
        let (mut d0, mut d1) = tokio::join!(c.device(&c.nodes[0].http, &id), c.device(&c.nodes[1].http, &id));
        let close = Duration::from_secs(2);
        let (r0, r1) = tokio::join!(tokio::time::timeout(close, d0.recv_close()), tokio::time::timeout(close, d1.recv_close()));
        let (closed, mut kept) = match (r0, r1) {
            (Ok(f), Err(_)) => (f, d1),
            (Err(_), Ok(f)) => (f, d0),
            other => panic!("{id}: exactly one connection should be closed: {other:?}"),
        };
        assert!(closed.is_some_and(|f| f.reason.contains("replaced")), "{id}: closed as replaced");
        until_routed(&mut a2, &mut kept, &alice, &id).await;
    }
}

/// Devices registering on a node all at once are claimed in batches (one store statement for
/// many): every one of them is reachable from another node.
#[tokio::test(flavor = "multi_thread")]
async fn devices_registering_at_once_are_all_reachable_from_other_nodes() {
    let c = Cluster::start(2).await;
    let alice = c.user("alice@example.com").await;
    let ids: Vec<String> = (0..300).map(|i| format!("10000e{i:04}")).collect();
    for id in &ids {
        c.device_record(id, &alice).await;
    }
    let mut a0 = c.app(0, &alice).await;
    let mut devices: Vec<Client> = futures_util::future::join_all(ids.iter().map(|id| c.device(&c.nodes[1].http, id))).await;
    for (id, dev) in ids.iter().zip(&mut devices) {
        until_routed(&mut a0, dev, &alice, id).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_devices_go_offline_and_reconnect_elsewhere() {
    let mut c = Cluster::start(3).await;
    let (alice, mut a0, dev) = alice_and_device(&c, "1000000c03", 2).await;

    let killed = Instant::now();
    c.nodes[2].proc.as_ref().unwrap().signal("KILL");
    c.nodes[2].proc.take();
    // A survivor marks the dead node's device offline and tells its audience.
    let v = until_frame(&mut a0, "offline sysmsg after the kill", |v| v["action"] == "sysmsg").await;
    assert_eq!(v["params"]["online"], false, "{v}");
    // The device asks dispatch where to go; once the dead node is no longer handed out it lands on a survivor.
    let http = loop {
        assert!(killed.elapsed() < Duration::from_secs(10), "dispatch kept handing out the dead node");
        let d: Value = reqwest::get(format!("http://{}/dispatch/device", c.nodes[0].http)).await.unwrap().json().await.unwrap();
        let at = format!("{}:{}", d["domain"].as_str().unwrap(), d["port"]);
        if at != c.nodes[2].http {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(dev);
    let mut dev = c.device(&http, "1000000c03").await;
    until_routed(&mut a0, &mut dev, &alice, "1000000c03").await;
    assert!(killed.elapsed() < Duration::from_secs(10), "took {:?}", killed.elapsed());
}

/// An update acked with error 0 changed the device's state on the node holding it: that node
/// commits the state before the app hears the ack, as on one node. Killed right after the last
/// answer, the holder has lost nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_acked_across_nodes_is_stored_before_its_answer() {
    let mut c = Cluster::start(2).await;
    let (alice, mut a0, mut dev) = alice_and_device(&c, "1000000c05", 1).await;
    for n in 0..20 {
        let seq = format!("n{n}");
        a0.send(update(&alice, "1000000c05", &seq, json!({"n":n}))).await;
        let cmd = dev.recv().await;
        assert_eq!(cmd["sequence"], seq.as_str(), "{cmd}");
        dev.send(json!({"error":0,"deviceid":"1000000c05","apikey":alice.apikey.as_str(),"sequence":seq})).await;
        let reply = until_frame(&mut a0, "the ack", |v| v["sequence"] == seq.as_str()).await;
        assert_eq!(reply["error"], 0, "{reply}");
    }
    c.nodes[1].proc.as_ref().unwrap().signal("KILL");
    c.nodes[1].proc.take();
    let mut db = PgConnection::connect(&c.url).await.unwrap();
    let params: String = sqlx::query_scalar("SELECT params FROM devices WHERE deviceid = '1000000c05'").fetch_one(&mut db).await.unwrap();
    let params: Value = serde_json::from_str(&params).unwrap();
    assert_eq!(params["n"], 19, "the last acked update's state is stored: {params}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_made_on_one_node_holds_on_the_others_within_a_second() {
    let c = Cluster::start(3).await;
    let alice = c.user("alice@example.com").await;
    let bob = c.user("bob@example.com").await;
    c.device_record("1000000c04", &alice).await;
    let mut a0 = c.app(0, &alice).await;
    let mut b2 = c.app(2, &bob).await;
    let mut dev = c.device(&c.nodes[1].http, "1000000c04").await;
    until_routed(&mut a0, &mut dev, &alice, "1000000c04").await;
    b2.send(update(&bob, "1000000c04", "b0", json!({"switch":"on"}))).await;
    assert_eq!(b2.recv().await["error"], 406, "not shared yet");

    // Alice shares on node 0 through REST; node 1 (the device's) and node 2 (Bob's) follow.
    let body = json!({"deviceidList":["1000000c04"],"user":{"email":"bob@example.com"},"permit":15});
    let res = rest(reqwest::Method::POST, &c.nodes[0].http, "/v2/device/share", &alice, Some(&body)).await;
    assert_eq!(res["error"], 0, "{res}");
    let shared = Instant::now();
    let seq = "b1";
    b2.send(update(&bob, "1000000c04", seq, json!({"switch":"on"}))).await;
    let cmd = loop {
        match tokio::time::timeout(Duration::from_millis(100), dev.recv()).await {
            Ok(cmd) => break cmd,
            Err(_) => {
                let reply = b2.recv().await;
                assert_eq!(reply["error"], 406, "{reply}");
                assert!(shared.elapsed() < Duration::from_secs(1), "the share did not reach the device's node within a second");
                b2.send(update(&bob, "1000000c04", seq, json!({"switch":"on"}))).await;
            }
        }
    };
    dev.send(json!({"error":0,"deviceid":"1000000c04","apikey":alice.apikey.as_str(),"sequence":cmd["sequence"]})).await;
    assert_eq!(until_frame(&mut b2, "bob's ack", |v| v["sequence"] == seq).await["error"], 0);
    // Bob's session on node 2 hears the device's reports now.
    dev.send(json!({"action":"update","deviceid":"1000000c04","apikey":alice.apikey.as_str(),"userAgent":"device","params":{"switch":"off"},"sequence":"r1"})).await;
    until_frame(&mut b2, "the report", |v| v["params"]["switch"] == "off").await;
}

#[test]
fn a_cluster_refuses_the_sqlite_store() {
    // No --data-dir, so the PostgreSQL mode of the suite does not hand it a database.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = command(&["serve", "--cluster", DEFAULT_NATS, "--https", "off"]);
    cmd.current_dir(tmp.path());
    let out = procs::run(cmd);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("database_url"), "{out}");
}

async fn login(http: &str, password: &str) -> (u16, Value) {
    let body = json!({"email": "dave@example.com", "password": password, "countryCode": "+86"}).to_string();
    let res = reqwest::Client::new()
        .post(format!("http://{http}/v2/user/login"))
        .header("X-CK-Appid", APPID)
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes())))
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_spread_over_nodes_lock_the_account_on_every_node() {
    let c = Cluster::start(3).await;
    c.user("dave@example.com").await;
    // Ten wrong passwords, spread over the three nodes: no node saw more than four itself.
    for i in 0..10 {
        let (status, body) = login(&c.nodes[i % 3].http, "wrong-pass-1").await;
        assert_eq!(status, 200, "attempt {i}: {body}");
        assert_ne!(body["error"], 0, "attempt {i}: {body}");
    }
    // Every node refuses the account now, even with the right password.
    for (i, node) in c.nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let (status, body) = login(&node.http, PASSWORD).await;
            if status == 429 {
                assert_eq!(body["error"], 429, "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "node {i} let the locked account in: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_on_one_node_closes_the_users_sessions_on_the_others() {
    let c = Cluster::start(2).await;
    let erin = c.user("erin@example.com").await;
    let mut e1 = c.app(1, &erin).await;
    // The user's subject on node 1 is subscribed a moment after the handshake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = rest(reqwest::Method::DELETE, &c.nodes[0].http, "/v2/user/logout", &erin, None).await;
    assert_eq!(res["error"], 0, "{res}");
    assert!(e1.recv_close().await.is_some(), "the session on the other node is closed by the logout");
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_calls_spread_over_nodes_share_one_rate_limit() {
    // 30 calls a day to one route from one client (loopback counts here), on every node.
    let c = Cluster::start_with(3, &["--rate-limit", "30", "--rate-limit-window-secs", "86400", "--rate-limit-loopback", "true"]).await;
    let http = reqwest::Client::new();
    let mut passed = 0;
    let mut last = Vec::new();
    for i in 0..90 {
        let res = http.get(format!("http://{}/v2/family", c.nodes[i % 3].http)).header("x-ck-appid", APPID).send().await.unwrap();
        let status = res.status().as_u16();
        if status != 429 {
            passed += 1;
        }
        if i >= 87 {
            last.push(status);
        }
        // Paced a little: the nodes exchange their counts every 100 ms.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each node alone would let 30 through (90 in all). Together they let the 30 through, plus
    // the few a node passed in the last exchange interval before it heard of the others'.
    assert!((30..=36).contains(&passed), "{passed} of 90 calls passed the limit of 30");
    assert_eq!(last, [429, 429, 429], "every node refuses once the total is reached");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_sessions_are_bounded_across_nodes() {
    let c = Cluster::start_with(3, &["--max-sessions-per-user", "4"]).await;
    let frank = c.user("frank@example.com").await;
    // A session on each node (each node hears the others' counts when it subscribes to Frank),
    // then a fourth on node 0.
    let mut held = Vec::new();
    for node in [0, 1, 2, 0] {
        held.push(c.app(node, &frank).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // No node lets a fifth in, though none holds more than two.
    for node in 0..3 {
        let (_, reply) = c.user_online(node, &frank).await;
        assert_eq!(reply["error"], 406, "node {node} let a fifth session in: {reply}");
    }
    // One leaves node 1: node 2 lets a new one in once it hears.
    drop(held.remove(1));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (s, reply) = c.user_online(2, &frank).await;
        if reply["error"] == 0 {
            held.push(s);
            break;
        }
        assert_eq!(reply["error"], 406, "{reply}");
        assert!(Instant::now() < deadline, "node 2 never heard that a session of node 1 left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, reply) = c.user_online(1, &frank).await;
    assert_eq!(reply["error"], 406, "four again: {reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_node_drains_its_sessions_gradually_to_the_others() {
    let mut c = Cluster::start(2).await;
    // Node 2 closes 4 sessions a second when it drains.
    let n2 = c.spawn("n2", &["--drain-rate", "4"]);
    c.nodes.push(n2);
    let alice = c.user("alice@example.com").await;
    let mut a0 = c.app(0, &alice).await;
    let ids: Vec<String> = (0..8).map(|i| format!("1000000d{i:02}")).collect();
    let mut devices = Vec::new();
    for id in &ids {
        c.device_record(id, &alice).await;
        devices.push(c.device(&c.nodes[2].http, id).await);
    }
    until_routed(&mut a0, &mut devices[7], &alice, &ids[7]).await;

    c.nodes[2].proc.as_ref().unwrap().terminate();
    let started = Instant::now();
    // Every device hears 1001, a few at a time.
    let closes = futures_util::future::join_all(devices.iter_mut().map(|d| async {
        let close = d.recv_close().await;
        (close.map(|f| u16::from(f.code)), started.elapsed())
    }))
    .await;
    let codes: Vec<Option<u16>> = closes.iter().map(|(code, _)| *code).collect();
    assert_eq!(codes, vec![Some(1001); 8], "every session is closed as going away");
    let first = closes.iter().map(|(_, at)| *at).min().unwrap();
    let last = closes.iter().map(|(_, at)| *at).max().unwrap();
    // Eight at four a second: over about 1.75 s, never all at once.
    assert!(last - first >= Duration::from_secs(1), "closed between {first:?} and {last:?}: not gradually");
    let status = c.nodes[2].proc.as_mut().unwrap().wait_exit();
    assert!(status.success(), "the drained node exits cleanly: {status:?}");

    // The devices reconnect through dispatch to the other nodes and are routed again.
    drop(devices);
    for id in &ids {
        let d: Value = reqwest::get(format!("http://{}/dispatch/device", c.nodes[0].http)).await.unwrap().json().await.unwrap();
        let at = format!("{}:{}", d["domain"].as_str().unwrap(), d["port"]);
        assert_ne!(at, c.nodes[2].http, "dispatch handed out the drained node");
        let mut dev = c.device(&at, id).await;
        until_routed(&mut a0, &mut dev, &alice, id).await;
    }
}
