//! The SSRF guard on arbitrary addresses: every IPv6 form that embeds an IPv4 address is judged
//! as that address, private ranges are refused whatever their host bits, allow-lists open
//! exactly their networks.

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use webhook_delivery::guard::{classify, AddressClass};
use webhook_delivery::AddressPolicy;

fn embeddings(v4: Ipv4Addr) -> Vec<Ipv6Addr> {
    let [a, b, c, d] = v4.octets();
    let hi = u16::from_be_bytes([a, b]);
    let lo = u16::from_be_bytes([c, d]);
    vec![
        v4.to_ipv6_mapped(),
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
        Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
    ]
}

proptest! {
    #[test]
    fn embedded_ipv4_is_judged_as_the_ipv4_address(bits in any::<u32>()) {
        let v4 = Ipv4Addr::from(bits);
        for v6 in embeddings(v4) {
            prop_assert_eq!(classify(IpAddr::V6(v6)), classify(IpAddr::V4(v4)), "{}", v6);
            prop_assert_eq!(
                AddressPolicy::default().permits(IpAddr::V6(v6)),
                AddressPolicy::default().permits(IpAddr::V4(v4))
            );
        }
    }

    #[test]
    fn internal_ranges_are_refused_whatever_the_host_bits(host in any::<u32>()) {
        let policy = AddressPolicy::default();
        let cases = [
            (0x7f00_0000, 8, AddressClass::Loopback),
            (0x0a00_0000, 8, AddressClass::Private),
            (0xac10_0000, 12, AddressClass::Private),
            (0xc0a8_0000, 16, AddressClass::Private),
            (0xa9fe_0000, 16, AddressClass::LinkLocal),
            (0x6440_0000, 10, AddressClass::SharedAddressSpace),
        ];
        for (net, len, class) in cases {
            let ip = Ipv4Addr::from(net | (host >> len));
            prop_assert_eq!(classify(ip.into()), Some(class), "{}", ip);
            prop_assert!(!policy.permits(ip.into()), "{}", ip);
        }
        let ula = Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(host));
        prop_assert_eq!(classify(ula.into()), Some(AddressClass::Private));
        let link = Ipv6Addr::from(0xfe80_u128 << 112 | u128::from(host));
        prop_assert_eq!(classify(link.into()), Some(AddressClass::LinkLocal));
    }

    #[test]
    fn an_allow_list_opens_exactly_its_network(host in any::<u8>(), other in any::<u32>()) {
        let policy = AddressPolicy::default().allow("10.1.2.0/24".parse().unwrap());
        prop_assert!(policy.permits(Ipv4Addr::new(10, 1, 2, host).into()));
        let ip = Ipv4Addr::from(0x0a00_0000 | (other & 0x00ff_ffff));
        let inside = ip.octets()[1] == 1 && ip.octets()[2] == 2;
        prop_assert_eq!(policy.permits(ip.into()), inside, "{}", ip);
        // The mapped form of an allowed address is allowed too.
        prop_assert!(policy.permits(Ipv4Addr::new(10, 1, 2, host).to_ipv6_mapped().into()));
    }
}

#[test]
fn metadata_and_special_addresses() {
    let refused = [
        "169.254.169.254",
        "fd00:ec2::254",
        "100.100.100.200",
        "0.0.0.0",
        "::",
        "::1",
        "255.255.255.255",
        "224.0.0.1",
        "ff02::1",
        "192.0.2.1",
        "2001:db8::1",
        "::127.0.0.1",
        "fec0::1",
    ];
    for ip in refused {
        assert!(
            !AddressPolicy::default().permits(ip.parse().unwrap()),
            "{ip}"
        );
    }
    for ip in ["1.1.1.1", "93.184.215.14", "2606:4700:4700::1111"] {
        assert!(
            AddressPolicy::default().permits(ip.parse().unwrap()),
            "{ip}"
        );
    }
    assert!(AddressPolicy::unrestricted().permits("127.0.0.1".parse().unwrap()));
}
