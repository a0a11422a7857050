//! The SSRF guard: which addresses a delivery may connect to.
//!
//! Webhook URLs come from customers, so a sender that connects wherever a URL points can be made
//! to call its own network: the cloud metadata service (`169.254.169.254`), an admin port on
//! loopback, a database on a private address. The guard refuses those addresses unless they are
//! allow-listed, and it checks the addresses a name *resolves to* — the ones the connection then
//! uses — so a public name that resolves to a private address (DNS rebinding) is refused too.

use retry_safe_core::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why an address is refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), IPv6 unique local `fc00::/7` (which holds
    /// cloud metadata's `fd00:ec2::254`), deprecated site-local `fec0::/10`.
    Private,
    /// `169.254.0.0/16` (cloud metadata's `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT `100.64.0.0/10` (some clouds' metadata lives there).
    SharedAddressSpace,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// Multicast and `255.255.255.255`.
    Multicast,
    /// Reserved and special-purpose ranges: `192.0.0/24`, documentation (`192.0.2/24`,
    /// `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`), benchmarking `198.18/15`, `240/4`.
    Reserved,
}

/// Classifies `ip`: `None` for an ordinary public address. IPv6 addresses that embed an IPv4
/// address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16`) are classified by the address they embed.
///
/// ```
/// use webhook_delivery::guard::{classify, AddressClass};
///
/// assert_eq!(classify("169.254.169.254".parse().unwrap()), Some(AddressClass::LinkLocal));
/// assert_eq!(classify("::ffff:127.0.0.1".parse().unwrap()), Some(AddressClass::Loopback));
/// assert_eq!(classify("93.184.215.14".parse().unwrap()), None);
/// ```
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 100 && (b & 0xc0) == 64 {
        AddressClass::SharedAddressSpace
    } else if a == 0 {
        AddressClass::Unspecified
    } else if ip.is_multicast() || ip.is_broadcast() {
        AddressClass::Multicast
    } else if (a == 192 && b == 0 && c == 0)
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240
    {
        AddressClass::Reserved
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let s = ip.segments();
    Some(if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        AddressClass::Private
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        AddressClass::Reserved
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible (deprecated) ::a.b.c.d, but not :: and ::1.
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        return Some(low(s[6], s[7]));
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return Some(low(s[6], s[7]));
    }
    // 6to4 2002:AABB:CCDD::/48 routes to AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

/// Which addresses deliveries may connect to: public ones, plus the allow-listed networks.
///
/// ```
/// use webhook_delivery::AddressPolicy;
///
/// let policy = AddressPolicy::default();
/// assert!(!policy.permits("127.0.0.1".parse().unwrap()));
/// assert!(!policy.permits("10.1.2.3".parse().unwrap()));
/// assert!(policy.permits("93.184.215.14".parse().unwrap()));
///
/// let tests = AddressPolicy::default().allow("127.0.0.0/8".parse().unwrap());
/// assert!(tests.permits("127.0.0.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
    unrestricted: bool,
}

impl AddressPolicy {
    /// Also permits the addresses of `net` (an internal receiver, loopback in tests).
    pub fn allow(mut self, net: IpNet) -> Self {
        self.allowed.push(net);
        self
    }

    /// Permits every address: the guard is off. Only for senders whose endpoints are all
    /// trusted configuration, never customer input.
    pub fn unrestricted() -> Self {
        Self {
            allowed: Vec::new(),
            unrestricted: true,
        }
    }

    /// Whether a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.unrestricted || classify(ip).is_none() {
            return true;
        }
        // An embedded IPv4 address is matched against IPv4 networks too.
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allowed
            .iter()
            .any(|net| net.contains(&ip) || v4.is_some_and(|v4| net.contains(&v4)))
    }
}

/// A connection was refused by the guard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the endpoint's address {addr} is not allowed ({class:?}); allow-list it to deliver there")]
#[non_exhaustive]
pub struct Blocked {
    /// The refused address.
    pub addr: IpAddr,
    /// Why it is refused.
    pub class: AddressClass,
}

impl AddressPolicy {
    /// `Ok` when `ip` is permitted, the refusal otherwise.
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        if self.permits(ip) {
            return Ok(());
        }
        Err(Blocked {
            addr: ip,
            class: classify(ip).unwrap_or(AddressClass::Reserved),
        })
    }
}

/// The resolver given to the HTTP client: the system resolver, then the policy on every address;
/// a name none of whose addresses is permitted fails with [`Blocked`].
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(blocked) => {
                        refused.get_or_insert(blocked);
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(blocked) => Box::new(blocked),
                    None => format!("{host} has no address").into(),
                };
                return Err(err);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
