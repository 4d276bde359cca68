//! Upstream endpoints and the policy for where Airlock may connect.
//!
//! An endpoint is the only thing that decides where a proxied request goes, so it is parsed
//! strictly: `https://` (or `http://` to an allowed private host), a host, an optional port and an
//! optional base path; no user info, query or fragment; no dot segments or encoded separators in
//! the base path. The same policy is applied twice: when a config is written (with the literal
//! host) and at dial time (with every address the name resolved to).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::InvalidInput;

const MAX_ENDPOINT_LEN: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The host part of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lower-cased.
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
        }
    }
}

/// A parsed upstream endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    host: Host,
    port: u16,
    /// Empty or starting with `/`, never ending with `/`.
    base_path: String,
}

impl Endpoint {
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let err = |msg: &str| Err(InvalidInput::new(field, msg));
        if text.len() > MAX_ENDPOINT_LEN {
            return err("must be at most 2048 characters");
        }
        if text.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return err("must be an absolute URL without spaces or non-ASCII characters");
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("https://") {
            (Scheme::Https, &text[8..])
        } else if lower.starts_with("http://") {
            (Scheme::Http, &text[7..])
        } else {
            return err("must be an absolute https:// URL");
        };
        if rest.contains('#') {
            return err("must not have a fragment");
        }
        if rest.contains('?') {
            return err("must not have a query");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return err("must not contain user info (put credentials in a secret)");
        }
        if authority.is_empty() {
            return err("must have a host");
        }
        let Ok(parsed) = http::uri::Authority::from_str(authority) else {
            return err("has an invalid host or port");
        };
        let host_text = parsed.host();
        let host = if let Some(v6) = host_text
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
        {
            match Ipv6Addr::from_str(v6) {
                Ok(ip) => Host::Ip(normalize_ip(IpAddr::V6(ip))),
                Err(_) => return err("has an invalid IPv6 address"),
            }
        } else if let Ok(ip) = Ipv4Addr::from_str(host_text.strip_suffix('.').unwrap_or(host_text))
        {
            Host::Ip(IpAddr::V4(ip))
        } else if ends_in_a_number(host_text) {
            // Resolvers read "10.1", "167772161" or "0x0a.0.0.1" as IPv4 addresses; a name that
            // looks like one is refused rather than checked as a name here and as an address at
            // dial time (found by the `endpoint` fuzz target, as "10.0.0.0.").
            return err("has a numeric host that is not a dotted IPv4 address");
        } else if valid_hostname(host_text) {
            Host::Name(host_text.trim_end_matches('.').to_ascii_lowercase())
        } else {
            return err("has an invalid host name");
        };
        if authority.ends_with(':') {
            return err("has an empty port");
        }
        // The port is read from the text: `Authority` forgets ports that do not fit in 16 bits.
        let port_text = authority
            .rsplit_once(':')
            .filter(|(_, p)| !p.contains(']'))
            .map(|(_, p)| p);
        let port = match port_text.map(|p| p.parse::<u16>()) {
            Some(Ok(0) | Err(_)) => return err("has an invalid port"),
            Some(Ok(port)) => port,
            None => scheme.default_port(),
        };
        let base_path = parse_base_path(path).map_err(|m| InvalidInput::new(field, m))?;
        Ok(Self {
            scheme,
            host,
            port,
            base_path,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host as a string for DNS or TLS server names (IPv6 without brackets).
    pub fn host_str(&self) -> String {
        match &self.host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Empty or `/segment/...` with no trailing slash.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The value of `Host` / `:authority` sent upstream: the port only when it is not the default.
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }
}

/// Whether the last label of a host name is a number (decimal, or hex with `0x`): the WHATWG URL
/// standard's "ends in a number", which resolvers parse as an IPv4 address.
fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A base path may not smuggle traversal: dot segments, empty segments, encoded separators or
/// backslashes are refused so that "endpoint base path + request path" is what it reads as.
fn parse_base_path(path: &str) -> Result<String, &'static str> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() {
            return Err("must not have empty path segments (//)");
        }
        if segment == "." || segment == ".." {
            return Err("must not have . or .. path segments");
        }
        let lower = segment.to_ascii_lowercase();
        if lower.contains("%2e")
            || lower.contains("%2f")
            || lower.contains("%5c")
            || segment.contains('\\')
        {
            return Err("must not have encoded dots, slashes or backslashes in its path");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&b))
        {
            return Err("has characters that are not allowed in a path");
        }
    }
    Ok(trimmed.to_owned())
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are the IPv4 address they carry.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// True for addresses that are not publicly routable: loopback, private, shared (CGNAT),
/// link-local (cloud metadata lives there), unique-local, multicast, documentation, reserved, and
/// IPv6 forms that embed such an IPv4 address.
pub fn is_non_public(ip: IpAddr) -> bool {
    match normalize_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 0 && c == 2)
                || (a == 198 && (b == 18 || b == 19))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x0100 && seg[1] == 0 && seg[2] == 0 && seg[3] == 0)
                // NAT64 and 6to4 carry an IPv4 address that decides where the packet really goes.
                || (seg[0] == 0x0064 && seg[1] == 0xff9b && {
                    let o = v6.octets();
                    is_non_public(IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])))
                })
                || (seg[0] == 0x2002 && {
                    let o = v6.octets();
                    is_non_public(IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5])))
                })
                // IPv4-compatible (deprecated) ::a.b.c.d
                || (seg[..6].iter().all(|s| *s == 0))
        }
    }
}

/// Where upstream connections may go. Public addresses are always allowed over TLS; non-public
/// ones only when listed in `AIRLOCK_ALLOW_PRIVATE_UPSTREAMS`, and plaintext `http://` only to
/// those listed ranges.
#[derive(Clone, Debug, Default)]
pub struct UpstreamPolicy {
    allow_private: Vec<IpNet>,
    /// Airlock's own listen addresses: never an upstream, whatever `allow_private` says.
    own_listeners: Vec<SocketAddr>,
}

/// Whether `addr` reaches one of `listeners`. A listener on `0.0.0.0` or `::` is reachable at
/// every local address of its port, so it counts for every address with that port.
pub fn is_own_listener(listeners: &[SocketAddr], addr: SocketAddr) -> bool {
    let ip = normalize_ip(addr.ip());
    listeners.iter().any(|own| {
        own.port() == addr.port() && (own.ip().is_unspecified() || normalize_ip(own.ip()) == ip)
    })
}

/// Why a dial was refused. Carries no host name so that it can be logged and shown as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialRefused {
    #[error(
        "the upstream resolves to a private, loopback or link-local address that is not allowed"
    )]
    NonPublic,
    #[error("plaintext http:// is allowed only to addresses in AIRLOCK_ALLOW_PRIVATE_UPSTREAMS")]
    PlaintextToPublic,
}

impl UpstreamPolicy {
    pub fn new(allow_private: Vec<IpNet>) -> Self {
        Self {
            allow_private,
            own_listeners: Vec::new(),
        }
    }

    /// The same policy, also refusing endpoints at Airlock's own listen addresses.
    pub fn with_own_listeners(mut self, listeners: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.own_listeners.extend(listeners);
        self
    }

    /// Parses `AIRLOCK_ALLOW_PRIVATE_UPSTREAMS`: CIDRs or single addresses separated by commas
    /// or whitespace.
    pub fn parse(text: &str) -> Result<Self, InvalidInput> {
        let mut nets = Vec::new();
        for item in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            nets.push(crate::source::parse_net(item).map_err(|m| InvalidInput::new("", m))?);
        }
        Ok(Self::new(nets))
    }

    pub fn allowed_private(&self) -> &[IpNet] {
        &self.allow_private
    }

    fn is_allowed_private(&self, ip: IpAddr) -> bool {
        let ip = normalize_ip(ip);
        self.allow_private.iter().any(|net| net.contains(&ip))
    }

    /// The check made when a gateway config is written.
    pub fn check_endpoint(&self, field: &str, endpoint: &Endpoint) -> Result<(), InvalidInput> {
        match (endpoint.scheme(), endpoint.host()) {
            (_, Host::Ip(ip))
                if is_own_listener(&self.own_listeners, SocketAddr::new(*ip, endpoint.port())) =>
            {
                Err(InvalidInput::new(
                    field,
                    "is one of Airlock's own listen addresses, which are never an upstream",
                ))
            }
            (scheme, Host::Ip(ip)) => self
                .check_dial(scheme, *ip)
                .map_err(|e| InvalidInput::new(field, e.to_string())),
            (Scheme::Http, Host::Name(_)) if self.allow_private.is_empty() => Err(InvalidInput::new(
                field,
                "must be https:// (http:// is allowed only to hosts in AIRLOCK_ALLOW_PRIVATE_UPSTREAMS)",
            )),
            // A name is checked again at dial time against every address it resolves to.
            _ => Ok(()),
        }
    }

    /// The check made for every address a connection is about to be opened to.
    pub fn check_dial(&self, scheme: Scheme, ip: IpAddr) -> Result<(), DialRefused> {
        let allowed_private = self.is_allowed_private(ip);
        if is_non_public(ip) && !allowed_private {
            return Err(DialRefused::NonPublic);
        }
        if scheme == Scheme::Http && !allowed_private {
            return Err(DialRefused::PlaintextToPublic);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_that_parse() {
        for (input, shown, authority, base) in [
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1",
                "api.openai.com",
                "/v1",
            ),
            (
                "https://api.anthropic.com",
                "https://api.anthropic.com",
                "api.anthropic.com",
                "",
            ),
            (
                "https://api.anthropic.com/",
                "https://api.anthropic.com",
                "api.anthropic.com",
                "",
            ),
            // A trailing dot on an IPv4 address is the address (the `endpoint` fuzz target found
            // it parsed as a name, which re-parsed as an address).
            ("https://10.0.0.0./", "https://10.0.0.0", "10.0.0.0", ""),
            (
                "https://api.example.com./v1",
                "https://api.example.com/v1",
                "api.example.com",
                "/v1",
            ),
            (
                "https://123.example.com",
                "https://123.example.com",
                "123.example.com",
                "",
            ),
            (
                "HTTPS://API.Example.COM:8443/a/b/",
                "https://api.example.com:8443/a/b",
                "api.example.com:8443",
                "/a/b",
            ),
            (
                "https://example.com:443/x",
                "https://example.com/x",
                "example.com",
                "/x",
            ),
            (
                "https://[2001:4860::1]:8443",
                "https://[2001:4860::1]:8443",
                "[2001:4860::1]:8443",
                "",
            ),
            (
                "https://8.8.8.8/v1beta",
                "https://8.8.8.8/v1beta",
                "8.8.8.8",
                "/v1beta",
            ),
        ] {
            let e = Endpoint::parse("endpoint", input).unwrap();
            assert_eq!(e.to_string(), shown, "{input}");
            assert_eq!(e.authority(), authority, "{input}");
            assert_eq!(e.base_path(), base, "{input}");
        }
    }

    #[test]
    fn endpoints_that_are_refused() {
        for (input, msg) in [
            ("", "absolute https://"),
            ("api.openai.com", "absolute https://"),
            ("ftp://x.com", "absolute https://"),
            ("https://user:pw@x.com", "user info"),
            ("https://x.com/v1?key=1", "query"),
            ("https://x.com/v1#frag", "fragment"),
            ("https://", "host"),
            ("https:///v1", "host"),
            ("https://x.com:99999", "port"),
            ("https://x.com:0", "port"),
            ("https://x.com:", "port"),
            ("https://x .com", "spaces"),
            ("https://x.com/a/../b", ". or .."),
            ("https://x.com/a/%2e%2e/b", "encoded"),
            ("https://x.com/a%2Fb", "encoded"),
            ("https://x.com/a\\b", "encoded"),
            ("https://x.com//a", "empty path segments"),
            ("https://ex_ample-.com", "host name"),
            ("https://[::1", "invalid"),
            ("https://10.1", "numeric host"),
            ("https://167772161", "numeric host"),
            ("https://0x0a.0.0.1", "numeric host"),
            ("https://example.0x7f", "numeric host"),
            ("https://a.b.123", "numeric host"),
        ] {
            let err = Endpoint::parse("endpoint", input).expect_err(input);
            assert_eq!(err.field, "endpoint");
            assert!(err.message.contains(msg), "{input}: {}", err.message);
        }
    }

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "::10.0.0.1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808"] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn dial_policy() {
        let none = UpstreamPolicy::default();
        let local = UpstreamPolicy::parse("127.0.0.0/8, 10.0.0.5").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            none.check_dial(Scheme::Https, ip("127.0.0.1")),
            Err(DialRefused::NonPublic)
        );
        assert_eq!(
            none.check_dial(Scheme::Https, ip("::ffff:10.0.0.1")),
            Err(DialRefused::NonPublic)
        );
        assert_eq!(
            none.check_dial(Scheme::Http, ip("8.8.8.8")),
            Err(DialRefused::PlaintextToPublic)
        );
        assert!(none.check_dial(Scheme::Https, ip("8.8.8.8")).is_ok());
        assert!(local.check_dial(Scheme::Http, ip("127.0.0.1")).is_ok());
        assert!(local
            .check_dial(Scheme::Http, ip("::ffff:127.0.0.1"))
            .is_ok());
        assert!(local.check_dial(Scheme::Http, ip("10.0.0.5")).is_ok());
        assert_eq!(
            local.check_dial(Scheme::Http, ip("10.0.0.6")),
            Err(DialRefused::NonPublic)
        );
        assert!(UpstreamPolicy::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn endpoint_policy() {
        let none = UpstreamPolicy::default();
        let local = UpstreamPolicy::parse("127.0.0.0/8").unwrap();
        let e = |s: &str| Endpoint::parse("endpoint", s).unwrap();
        assert!(none
            .check_endpoint("endpoint", &e("http://api.example.com"))
            .is_err());
        assert!(none
            .check_endpoint("endpoint", &e("https://127.0.0.1:8443"))
            .is_err());
        assert!(none
            .check_endpoint("endpoint", &e("https://169.254.169.254"))
            .is_err());
        assert!(none
            .check_endpoint("endpoint", &e("https://api.example.com"))
            .is_ok());
        assert!(local
            .check_endpoint("endpoint", &e("http://127.0.0.1:11434"))
            .is_ok());
        assert!(local
            .check_endpoint("endpoint", &e("http://localhost:11434"))
            .is_ok());
        assert!(local
            .check_endpoint("endpoint", &e("http://8.8.8.8"))
            .is_err());
    }

    #[test]
    fn own_listeners_are_refused_at_write_time() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let policy = UpstreamPolicy::parse("127.0.0.0/8, ::1")
            .unwrap()
            .with_own_listeners([addr("127.0.0.1:7080"), addr("0.0.0.0:7070")]);
        let e = |s: &str| Endpoint::parse("endpoint", s).unwrap();
        // (endpoint, refused)
        for (endpoint, refused) in [
            ("http://127.0.0.1:7080", true),
            ("http://127.0.0.1:7080/v1", true),
            ("http://[::ffff:127.0.0.1]:7080", true),
            ("http://127.0.0.2:7070", true),
            ("http://[::1]:7070", true),
            ("http://127.0.0.2:7080", false),
            ("http://127.0.0.1:7081", false),
            ("http://127.0.0.1:11434", false),
        ] {
            let checked = policy.check_endpoint("endpoint", &e(endpoint));
            assert_eq!(checked.is_err(), refused, "{endpoint}: {checked:?}");
            if let Err(err) = checked {
                assert!(err.to_string().contains("own listen"), "{err}");
            }
        }
        assert!(is_own_listener(&[addr("[::]:7090")], addr("10.1.2.3:7090")));
    }
}
