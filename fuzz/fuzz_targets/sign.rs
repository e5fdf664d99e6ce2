//! The `Sign` check of the user routes (`Authorization: Sign base64(HMAC-SHA256(secret, raw
//! body or raw query))`, `X-CK-Nonce`): arbitrary header bytes, query and body. The input is
//! split at 0xFF bytes into Authorization, X-CK-Nonce, query string and body; the first byte's
//! low bit picks GET (the query is signed) or POST (the body is).
//!
//! Properties: nothing panics; a signature is accepted only when it is exactly the canonical
//! base64 of the HMAC of the signed bytes; the canonical signature with the scheme in any case
//! and surrounded by blanks is accepted; a Bearer header never passes as a Sign.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use switchyard::auth::sign;
use switchyard::http::auth::{Credential, check_nonce, check_sign, credential};

const SECRET: &str = switchyard_fuzz::SECRET;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut parts = rest.splitn(4, |&b| b == 0xFF);
    let (auth, nonce, query, body) =
        (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""), parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
    let method = if flags & 1 == 1 { Method::GET } else { Method::POST };
    let Ok(query) = std::str::from_utf8(query) else { return };
    let Ok(uri) = format!("/v2/user/login?{query}").parse::<Uri>() else { return };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(auth) {
        headers.insert("authorization", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(nonce) {
        headers.insert("x-ck-nonce", v);
    }
    let _ = check_nonce(&headers);
    let signed: &[u8] = if method == Method::GET { uri.query().unwrap_or("").as_bytes() } else { body };
    let canonical = sign(SECRET, signed);

    if check_sign(SECRET, &method, &uri, &headers, body).is_ok() {
        let Ok(Credential::Sign(given)) = credential(&headers) else { panic!("accepted without a Sign credential") };
        assert_eq!(given.trim(), canonical, "accepted a signature that is not the canonical one");
    }

    // The canonical signature, the scheme in whatever case the input's first bytes give, passes.
    let scheme: String = "Sign"
        .chars()
        .zip(auth.iter().chain(std::iter::repeat(&0)))
        .map(|(c, b)| if b & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect();
    let mut good = HeaderMap::new();
    good.insert("authorization", HeaderValue::from_str(&format!("{scheme} {canonical} ")).expect("base64 is a valid header"));
    assert!(check_sign(SECRET, &method, &uri, &good, body).is_ok(), "the canonical signature was refused");

    // The same token as a Bearer is no Sign.
    let mut bearer = HeaderMap::new();
    bearer.insert("authorization", HeaderValue::from_str(&format!("Bearer {canonical}")).expect("valid header"));
    assert!(check_sign(SECRET, &method, &uri, &bearer, body).is_err(), "a Bearer header passed as a Sign");
});
