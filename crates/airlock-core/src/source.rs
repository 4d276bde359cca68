//! Source addresses: the IPs and CIDRs a devbox's traffic may come from.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::endpoint::normalize_ip;
use crate::error::InvalidInput;

/// At most this many entries per devbox: enough for any sandbox's interfaces, small enough that a
/// linear scan on the hot path costs nothing.
pub const MAX_SOURCE_ADDRESSES: usize = 64;

/// Parses `10.0.3.17`, `fd00:1::/64` or `::ffff:10.0.0.0/104` into a network with host bits
/// cleared. IPv4-mapped IPv6 becomes IPv4 so that it compares equal to the plain form.
pub(crate) fn parse_net(text: &str) -> Result<IpNet, String> {
    let net = if text.contains('/') {
        text.parse::<IpNet>()
            .map_err(|_| "must be an IP address or CIDR (e.g. 10.0.3.17 or fd00::/64)".to_owned())?
    } else {
        let ip: IpAddr = text.parse().map_err(|_| {
            "must be an IP address or CIDR (e.g. 10.0.3.17 or fd00::/64)".to_owned()
        })?;
        IpNet::from(ip)
    };
    Ok(normalize_net(net).trunc())
}

fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => match (v6.addr().to_ipv4_mapped(), v6.prefix_len()) {
            (Some(v4), len) if len >= 96 => IpNet::new(IpAddr::V4(v4), len - 96).unwrap_or(net),
            _ => net,
        },
        v4 => v4,
    }
}

/// A non-empty list of networks. `contains` answers whether a peer address is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceAddresses(Vec<IpNet>);

impl SourceAddresses {
    pub fn parse<S: AsRef<str>>(field: &str, items: &[S]) -> Result<Self, InvalidInput> {
        if items.is_empty() {
            return Err(InvalidInput::new(
                field,
                "must list at least one IP address or CIDR",
            ));
        }
        if items.len() > MAX_SOURCE_ADDRESSES {
            return Err(InvalidInput::new(
                field,
                format!("must list at most {MAX_SOURCE_ADDRESSES} entries"),
            ));
        }
        let mut nets = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let net = parse_net(item.as_ref().trim())
                .map_err(|m| InvalidInput::new(format!("{field}[{i}]"), m))?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(Self(nets))
    }

    /// Whether the whole address space is allowed (an operator choice worth a warning).
    pub fn allows_any(&self) -> bool {
        self.0.iter().any(|n| n.prefix_len() == 0)
    }

    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = normalize_ip(peer);
        self.0.iter().any(|net| net.contains(&peer))
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// The canonical text forms, as stored and shown (`10.0.3.17/32` is shown as `10.0.3.17`).
    pub fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let s = SourceAddresses::parse(
            "source_addresses",
            &[
                "10.0.3.17",
                "fd00:1::/64",
                "::ffff:192.168.0.0/112",
                "10.0.3.17",
            ],
        )
        .unwrap();
        assert_eq!(
            s.to_strings(),
            ["10.0.3.17", "fd00:1::/64", "192.168.0.0/16"]
        );
        for (ip, inside) in [
            ("10.0.3.17", true),
            ("::ffff:10.0.3.17", true),
            ("10.0.3.18", false),
            ("fd00:1::42", true),
            ("fd00:2::1", false),
            ("192.168.7.7", true),
            ("::ffff:192.168.7.7", true),
        ] {
            assert_eq!(s.contains(ip.parse().unwrap()), inside, "{ip}");
        }
        assert!(!s.allows_any());
        assert!(SourceAddresses::parse("s", &["0.0.0.0/0"])
            .unwrap()
            .allows_any());
        let host_bits = SourceAddresses::parse("s", &["10.1.2.3/8"]).unwrap();
        assert_eq!(host_bits.to_strings(), ["10.0.0.0/8"]);
    }

    #[test]
    fn refused() {
        let empty: [&str; 0] = [];
        assert!(SourceAddresses::parse("source_addresses", &empty)
            .unwrap_err()
            .message
            .contains("at least one"));
        for bad in [
            "",
            "10.0.0.256",
            "10.0.0.0/33",
            "fd00::/129",
            "host.example",
            "10.0.0.1/",
            "10.0.0.1/-1",
        ] {
            let err = SourceAddresses::parse("source_addresses", &["10.0.0.1", bad]).unwrap_err();
            assert_eq!(err.field, "source_addresses[1]", "{bad}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("10.0.0.{i}")).collect();
        assert!(SourceAddresses::parse("s", &many).is_err());
    }
}
