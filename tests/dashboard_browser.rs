//! The dashboard in headless Chromium: an operator made with `switchyard admin operator add` logs
//! in through the form, sees a device come online when it registers over a real WebSocket, opens
//! its page, sends it an `update` from the page and sees the state change, all without a page
//! reload and without a single console error. Screenshots go to
//! `target/tmp/dashboard-overview.png` and `target/tmp/dashboard-device.png`.

mod browser;
mod common;

use std::path::PathBuf;
use std::time::Instant;

use browser::Browser;
use common::{TestHub, wait_until_async};
use serde_json::json;

const OPERATOR: &str = "ops@example.com";
const OPERATOR_PASSWORD: &str = "ops-secret-42";
const DEVICE: &str = "d0000000b7";

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_a_device_come_online_and_switches_it() {
    // Fail at once, with what to install, when there is no browser.
    browser::chromium();
    let hub = TestHub::start().await;
    hub.admin(&["operator", "add", "--email", OPERATOR, "--password", OPERATOR_PASSWORD]);
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEVICE, Some(&alice)).await;
    let base = format!("http://{}", hub.metrics);

    let page = Browser::launch().await;
    // A visitor without a login lands on the form.
    page.navigate(&format!("{base}/dashboard")).await;
    page.wait_for("the login form", "location.pathname === '/dashboard/login' && !!document.querySelector('#login-form')").await;
    page.type_into("#email", OPERATOR).await;
    page.type_into("#password", OPERATOR_PASSWORD).await;
    page.click("#login").await;
    page.wait_for("the dashboard after login", "location.pathname === '/dashboard' && document.readyState === 'complete'").await;
    page.wait_for("the stream is live", "document.querySelector('#stream').textContent === 'live'").await;
    // From here on the page must never reload: this mark would be lost.
    page.eval("window.__noReload = 'kept'; true").await;

    // The device registers over a real WebSocket; its row appears without a reload.
    let mut device = hub.device(DEVICE).await;
    let registered = Instant::now();
    page.wait_for("the device is listed", &format!("!!document.querySelector('#device-list tr[data-id=\"{DEVICE}\"]')")).await;
    let listed_after = registered.elapsed();
    println!("device listed on the page {} ms after its registration was answered", listed_after.as_millis());
    let row = page.eval(&format!("document.querySelector('#device-list tr[data-id=\"{DEVICE}\"]').textContent")).await;
    assert!(row.as_str().unwrap().contains("alice@example.com"), "the row names the owner: {row}");
    // Searching by owner keeps it, by another text hides it.
    page.type_into("#search", "alice@").await;
    page.wait_for("a search by owner keeps it", &format!("!!document.querySelector('#device-list tr[data-id=\"{DEVICE}\"]')")).await;
    page.wait_for("the count reflects the search", "document.querySelector('#device-count').textContent.includes('match')").await;
    page.type_into("#search", "no-such-device").await;
    page.wait_for("a search for something else hides it", "document.querySelectorAll('#device-list tbody tr').length === 0").await;
    page.type_into("#search", "").await;
    page.wait_for("cleared, it is back", &format!("!!document.querySelector('#device-list tr[data-id=\"{DEVICE}\"]')")).await;
    page.wait_for("the charts have samples", "document.querySelector('.tile[data-key=\"devicesOnline\"] .value').textContent === '1'")
        .await;
    page.screenshot(&shot("dashboard-overview.png")).await;

    // Its page, opened from the list.
    page.click(&format!("#device-list tr[data-id=\"{DEVICE}\"]")).await;
    page.wait_for("the device page", &format!("location.pathname === '/dashboard/device/{DEVICE}'")).await;
    page.wait_for("the device is shown online", "document.querySelector('#device-online').textContent === 'online'").await;

    // The device acks whatever it is sent, as firmware does.
    let acker = tokio::spawn(async move {
        loop {
            let frame = device.recv().await;
            if frame["action"] == "update" {
                device.send(json!({"error":0,"deviceid":DEVICE,"sequence":frame["sequence"]})).await;
                return (device, frame);
            }
        }
    });
    page.type_into("#cmd-params", r#"{"switch":"on"}"#).await;
    page.click("#cmd-send").await;
    let (_device, frame) = acker.await.unwrap();
    assert_eq!(frame["params"], json!({"switch":"on"}));
    page.wait_for("the ack is shown", "document.querySelector('#cmd-result').textContent.startsWith('acked')").await;
    page.wait_for("the new state is shown", "JSON.parse(document.querySelector('#device-state').textContent).switch === 'on'").await;
    page.wait_for(
        "the history lists the operator's command",
        "[...document.querySelectorAll('#history tbody tr')].some(r => r.textContent.includes('operator:ops@example.com'))",
    )
    .await;
    wait_until_async("history files the command as the operator's", || async {
        hub.hub.store.history(DEVICE, i64::MAX, 10).await.unwrap().iter().any(|h| h.ops_account == "operator:ops@example.com")
    })
    .await;
    page.screenshot(&shot("dashboard-device.png")).await;

    assert_eq!(page.eval("window.__noReload").await, json!("kept"), "the page reloaded");
    let errors = page.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    println!("screenshots: {} and {}", shot("dashboard-overview.png").display(), shot("dashboard-device.png").display());
    drop(page);
    hub.stop().await;
}
