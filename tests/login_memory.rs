//! Memory after many password checks: prints the resident set size before and after 1,000 logins
//! with a wrong password, and checks the growth stays near the hasher's fixed memory. Not run by
//! default (it takes half a minute):
//!
//! ```text
//! cargo test --test login_memory -- --ignored --nocapture
//! ```

mod common;

use std::time::Instant;

use common::{APPID, SECRET, TestHub};
use serde_json::json;

/// The resident set size of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn rss_after_1000_logins() {
    const ACCOUNTS: usize = 200;
    const LOGINS: usize = 1000;
    let hub = TestHub::start().await;
    // One hash for every account: the hashing under test is the hub's, not this setup's.
    let hash = switchyard::auth::hash_password(common::PASSWORD);
    for i in 0..ACCOUNTS {
        hub.hub.store.add_user(Some(&format!("u{i}@example.com")), None, "+86", &hash, "cn").await.unwrap();
    }
    let client = hub.http_client();
    let login = |i: usize| {
        // A few failures per account, below any per-account limit.
        let body = json!({"email": format!("u{}@example.com", i % ACCOUNTS), "password": "wrong-pass-1", "countryCode": "+86"}).to_string();
        client
            .post(format!("{}/v2/user/login", hub.base()))
            .header("X-CK-Appid", APPID)
            .header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes())))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let before = rss_mib();
    let started = Instant::now();
    let mut peak = before;
    for batch in (0..LOGINS).collect::<Vec<_>>().chunks(8) {
        let answers = futures_util::future::join_all(batch.iter().map(|&i| login(i))).await;
        for a in answers {
            let v: serde_json::Value = a.unwrap().json().await.unwrap();
            assert_eq!(v["error"], 10001, "{v}");
        }
        peak = peak.max(rss_mib());
    }
    let after = rss_mib();
    println!(
        "RSS before: {before:.1} MiB; after {LOGINS} wrong-password logins: {after:.1} MiB (peak {peak:.1} MiB, {:+.1} MiB) in {:.1} s",
        after - before,
        started.elapsed().as_secs_f64()
    );
    // The hub hashes in one 19 MiB block array per permit of its hashing semaphore (2), kept for
    // reuse; the rest is the test's own clients and the store. Freed and reallocated per check,
    // the arrays left about 450 MiB here.
    assert!(after - before < 100.0, "RSS grew by {:.1} MiB over {LOGINS} logins", after - before);
    hub.stop().await;
}
