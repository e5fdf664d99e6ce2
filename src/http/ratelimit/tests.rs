use std::net::IpAddr;

use axum::http::{HeaderMap, Method};

use super::{RateLimiter, client_ip, limit_key};

fn key(ip: &str) -> (IpAddr, Method, String) {
    (ip.parse().unwrap(), Method::GET, "/v2/family".to_owned())
}

#[test]
fn a_window_allows_the_limit_then_refuses_until_it_ends() {
    let l = RateLimiter::default();
    for _ in 0..3 {
        assert_eq!(l.hit(key("10.0.0.1"), 3, 300, 600), Ok(()));
    }
    assert_eq!(l.hit(key("10.0.0.1"), 3, 300, 650), Err(250));
    // Another client and the next window are unaffected.
    assert_eq!(l.hit(key("10.0.0.2"), 3, 300, 650), Ok(()));
    assert_eq!(l.hit(key("10.0.0.1"), 3, 300, 900), Ok(()));
}

#[test]
fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.9".parse().unwrap());
    let proxy: IpAddr = "10.0.0.9".parse().unwrap();
    let peer: IpAddr = "10.0.0.8".parse().unwrap();
    assert_eq!(client_ip(peer, &h, &[proxy, peer]), "1.2.3.4".parse::<IpAddr>().unwrap());
    assert_eq!(client_ip(peer, &h, &[]), peer, "an untrusted peer cannot name another client");
}

#[test]
fn ipv6_clients_are_counted_by_their_64_network() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(limit_key(a), limit_key(b));
    assert_ne!(limit_key(a), limit_key(other));
    let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(limit_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    let l = RateLimiter::default();
    assert_eq!(l.hit((limit_key(a), Method::GET, "/v2/family".into()), 1, 300, 0), Ok(()));
    assert!(l.hit((limit_key(b), Method::GET, "/v2/family".into()), 1, 300, 0).is_err(), "a rotated address shares the budget");
}
