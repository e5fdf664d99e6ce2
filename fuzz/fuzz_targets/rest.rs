//! Arbitrary request bodies (or query strings, for GET) on REST routes with JSON body
//! extractors, through the hub's whole axum router in-process (`oneshot`, no socket), correctly
//! authenticated so the input reaches the extractor and the handler: a Bearer token of the
//! seeded user, or a valid `Sign` over the fuzzed bytes for the user routes. The first byte
//! picks the route.
//!
//! Property: no input makes the hub answer 5xx, or an envelope with error 500, and every answer
//! of a `/v2/` route is the JSON envelope.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{APPID, Fixture, SECRET};
use tower::ServiceExt;

#[derive(Clone, Copy, PartialEq)]
enum Auth {
    Bearer,
    Sign,
}

const ROUTES: &[(Method, &str, Auth)] = &[
    (Method::POST, "/v2/user/login", Auth::Sign),
    (Method::GET, "/v2/utils/get-region", Auth::Sign),
    (Method::GET, "/v2/device/thing", Auth::Bearer),
    (Method::POST, "/v2/device/thing", Auth::Bearer),
    (Method::GET, "/v2/device/thing/status", Auth::Bearer),
    (Method::POST, "/v2/device/thing/status", Auth::Bearer),
    (Method::POST, "/v2/device/thing/batch-status", Auth::Bearer),
    (Method::POST, "/v2/family", Auth::Bearer),
    (Method::PUT, "/v2/family", Auth::Bearer),
    (Method::DELETE, "/v2/family", Auth::Bearer),
    (Method::POST, "/v2/family/room", Auth::Bearer),
    (Method::POST, "/v2/family/room/index", Auth::Bearer),
    (Method::POST, "/v2/family/thing/sort", Auth::Bearer),
    (Method::POST, "/v2/device/group", Auth::Bearer),
    (Method::POST, "/v2/device/group/status", Auth::Bearer),
    (Method::POST, "/v2/device/share", Auth::Bearer),
    (Method::POST, "/v2/user/profile", Auth::Bearer),
    (Method::POST, "/v2/device/update-info", Auth::Bearer),
    (Method::POST, "/v2/device/tags", Auth::Bearer),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else { return };
    let (method, path, auth) = &ROUTES[pick as usize % ROUTES.len()];
    let f = Fixture::get();
    let (uri, body) = if *method == Method::GET {
        let Ok(q) = std::str::from_utf8(input) else { return };
        (format!("{path}?{q}"), Vec::new())
    } else {
        (path.to_string(), input.to_vec())
    };
    let mut req = Request::builder().method(method.clone()).uri(&uri).header("content-type", "application/json");
    req = match auth {
        Auth::Bearer => req.header("authorization", format!("Bearer {}", f.at)),
        Auth::Sign => {
            let signed: &[u8] = if *method == Method::GET { uri.split_once('?').map_or("", |(_, q)| q).as_bytes() } else { &body };
            req.header("authorization", format!("Sign {}", switchyard::auth::sign(SECRET, signed))).header("x-ck-appid", APPID)
        }
    };
    // A query the URI grammar refuses never reaches the hub (hyper refuses it first).
    let Ok(req) = req.body(Body::from(body)) else { return };
    static APP: std::sync::OnceLock<axum::Router> = std::sync::OnceLock::new();
    let app = APP.get_or_init(|| switchyard::http::app(f.hub.clone())).clone();
    let (status, bytes) = f.rt.block_on(async {
        let res = app.oneshot(req).await.expect("the router is infallible");
        let status = res.status();
        (status, res.into_body().collect().await.expect("a body").to_bytes())
    });
    let text = String::from_utf8_lossy(&bytes);
    assert!(!status.is_server_error(), "{method} {uri} answered {status}: {text}");
    let envelope: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri} answered {status} without the JSON envelope ({e}): {text}"));
    assert_ne!(envelope["error"], 500, "{method} {uri} answered an internal error: {text}");
});
