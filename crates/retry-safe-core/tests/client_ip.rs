use http::HeaderMap;
use proptest::prelude::*;
use retry_safe_core::ClientIp;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

fn lb() -> ClientIp {
    ClientIp::new()
        .trust("10.0.0.0/8".parse().unwrap())
        .trust("fd00::/8".parse().unwrap())
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_claims() {
    let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
    assert_eq!(lb().resolve(ip("203.0.113.9"), &h), ip("203.0.113.9"));
    assert_eq!(ClientIp::new().resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
}

#[test]
fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
    // Client spoofed 1.2.3.4; the edge proxy appended the real 198.51.100.7; an inner proxy
    // (10.1.1.1) appended the edge's address.
    let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.1.1.1")]);
    assert_eq!(lb().resolve(ip("10.0.0.5"), &h), ip("198.51.100.7"));
    // Several field lines are one list.
    let h = headers(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-for", "198.51.100.7"),
    ]);
    assert_eq!(lb().resolve(ip("10.0.0.5"), &h), ip("198.51.100.7"));
    // Forwarded (RFC 7239) takes precedence, with ports, quotes and IPv6.
    let h = headers(&[
        (
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::7]:4711\";proto=https, for=10.9.9.9",
        ),
        ("x-forwarded-for", "9.9.9.9"),
    ]);
    assert_eq!(lb().resolve(ip("fd00::1"), &h), ip("2001:db8::7"));
    // An unreadable entry stops the walk: what is left of it cannot be believed.
    let h = headers(&[("forwarded", "for=1.2.3.4, for=unknown, for=10.2.2.2")]);
    assert_eq!(lb().resolve(ip("10.0.0.5"), &h), ip("10.2.2.2"));
    // Only trusted hops: the left-most trusted hop.
    let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2")]);
    assert_eq!(lb().resolve(ip("10.0.0.5"), &h), ip("10.3.3.3"));
    // No header: the peer.
    assert_eq!(
        lb().resolve(ip("10.0.0.5"), &HeaderMap::new()),
        ip("10.0.0.5")
    );
}

proptest! {
    /// Whatever a client writes into X-Forwarded-For, behind one trusted proxy it is keyed by the
    /// address that proxy appended.
    #[test]
    fn spoofed_entries_never_win(spoof in proptest::collection::vec(any::<[u8; 4]>(), 0..6), real in any::<[u8; 4]>()) {
        let real = IpAddr::from(real);
        prop_assume!(!matches!(real, IpAddr::V4(v) if v.octets()[0] == 10));
        let mut list: Vec<String> = spoof.iter().map(|o| IpAddr::from(*o).to_string()).collect();
        list.push(real.to_string());
        let h = headers(&[("x-forwarded-for", &list.join(", "))]);
        prop_assert_eq!(lb().resolve(ip("10.0.0.5"), &h), real);
    }

    /// Any header bytes: no panic, and an untrusted peer always wins.
    #[test]
    fn any_header_is_safe(value in "[ -~]{0,80}") {
        if let Ok(v) = value.parse::<http::HeaderValue>() {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", v.clone());
            h.insert("forwarded", v);
            let _ = lb().resolve(ip("10.0.0.5"), &h);
            prop_assert_eq!(lb().resolve(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        }
    }
}
