//! Outbound HTTP grants: which hosts a task's guest may call (`grants.http`)
//! and which addresses are off limits unless granted by name
//! (`allow_private`). Pure: the sandbox resolves names and connects, and
//! asks these rules about the address it is about to connect to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `grants.http`: outbound HTTP for a task's guests, denied unless granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Hosts the guest may call: `api.example.com`, `*.example.org` (any
    /// subdomain, not the domain itself), each with an optional `:port`
    /// (any port when left out), or an IP literal (`[::1]:8080`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Hosts, in the same form, that may also resolve to loopback, private,
    /// link-local, CGNAT or other non-public addresses (e.g. a service on the
    /// host's own network); every other host is refused such addresses. A
    /// host listed here is granted whether or not `allow` lists it too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<String>,
    /// Requests an attempt may make [default: 100].
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
    /// Bytes an attempt may send and receive in bodies, all requests
    /// together [default: 10MiB].
    #[serde(default = "default_max_bytes")]
    #[schema(value_type = String, example = "10MiB")]
    pub max_bytes: bytesize::ByteSize,
    /// The longest one request may take, from connecting to its last byte
    /// [default: 10s].
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schema(value_type = String, example = "10s")]
    pub timeout: Duration,
}

fn default_max_requests() -> u32 {
    100
}

fn default_max_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl HttpGrant {
    /// Every problem with the grant.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.allow.is_empty() && self.allow_private.is_empty() {
            p.push("grants.http.allow (or allow_private) must name at least one host".into());
        }
        if self.allow.len() + self.allow_private.len() > 256 {
            p.push("grants.http.allow and allow_private name at most 256 hosts".into());
        }
        for pattern in self.allow.iter().chain(&self.allow_private) {
            if let Err(e) = HostPattern::parse(pattern) {
                p.push(format!("grants.http: {pattern:?}: {e}"));
            }
        }
        if self.max_requests == 0 || self.max_requests > 100_000 {
            p.push("grants.http.max_requests must be 1-100000".into());
        }
        if self.max_bytes.as_u64() == 0 || self.max_bytes.as_u64() > 1 << 30 {
            p.push("grants.http.max_bytes must be over 0 and at most 1GiB".into());
        }
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(600) {
            p.push("grants.http.timeout must be between 10ms and 10m".into());
        }
        p
    }

    /// Whether a request to `host:port` is granted (by `allow` or
    /// `allow_private`).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        matches_any(&self.allow, host, port) || self.allows_private(host, port)
    }

    /// Whether `host:port` may reach non-public addresses.
    pub fn allows_private(&self, host: &str, port: u16) -> bool {
        matches_any(&self.allow_private, host, port)
    }
}

fn matches_any(patterns: &[String], host: &str, port: u16) -> bool {
    patterns
        .iter()
        .filter_map(|p| HostPattern::parse(p).ok())
        .any(|p| p.matches(host, port))
}

/// One entry of `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// Lowercase, without brackets; `*.` kept for a wildcard.
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or("an IPv6 literal needs its closing ]")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err("only :port may follow an IPv6 literal".into()),
            };
            ip.parse::<Ipv6Addr>()
                .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
            (ip.to_string(), port)
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (text.to_string(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("port {p:?} is not 1-65535"))
            })
            .transpose()?;
        let host = host.to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && name.len() <= 253
            && (name.parse::<IpAddr>().is_ok()
                || name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }));
        if !valid || (host.starts_with("*.") && name.parse::<IpAddr>().is_ok()) {
            return Err("not a host name, *.domain or IP address".into());
        }
        Ok(HostPattern { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => match (self.host.parse::<IpAddr>(), host.parse::<IpAddr>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => self.host == host,
            },
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// Why an address is off limits to a host not in `allow_private`, or
/// `None` for a public unicast address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (169, 254, _) => "link-local, where cloud metadata services live (169.254.0.0/16)",
        (100, 64..=127, _) => "shared CGNAT (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    let s = ip.segments();
    // Forms that carry an IPv4 address: judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4).or(None);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated): ::a.b.c.d
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return non_public_v4(v4).or(Some("IPv4-compatible (::/96)"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96): reaches the embedded IPv4 address.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return non_public_v4(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local-use NAT64 (64:ff9b:1::/48)");
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 reaches a.b.c.d's network.
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return non_public_v4(v4).map(|_| "6to4 of a non-public IPv4 address (2002::/16)");
    }
    Some(match s[0] {
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x2001 if s[1] == 0xdb8 => "documentation (2001:db8::/32)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        x if x & 0xfe00 == 0xfc00 => "unique local, e.g. fd00:ec2::254 (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(allow: &[&str], private: &[&str]) -> HttpGrant {
        serde_json::from_value(serde_json::json!({"allow": allow, "allow_private": private}))
            .unwrap()
    }

    #[test]
    fn hosts_match_by_name_wildcard_port_and_literal() {
        let g = grant(
            &[
                "api.example.com",
                "*.example.org:443",
                "10.0.0.5:8080",
                "[::1]:9000",
            ],
            &[],
        );
        assert!(g.allows("api.example.com", 80));
        assert!(g.allows("API.Example.COM.", 443));
        assert!(!g.allows("evil-api.example.com", 443));
        assert!(!g.allows("api.example.com.evil.net", 443));
        assert!(g.allows("a.example.org", 443));
        assert!(g.allows("a.b.example.org", 443));
        assert!(
            !g.allows("example.org", 443),
            "the wildcard is for subdomains"
        );
        assert!(!g.allows("aexample.org", 443));
        assert!(!g.allows("a.example.org", 80));
        assert!(g.allows("10.0.0.5", 8080));
        assert!(!g.allows("10.0.0.5", 80));
        assert!(g.allows("[::1]", 9000));
        assert!(
            g.allows("0:0:0:0:0:0:0:1", 9000),
            "literals compare as addresses"
        );
    }

    #[test]
    fn bad_grants_name_their_problems() {
        let mut g = grant(
            &["ok.com", "*.1.2.3.4", "bad host", "x.com:0", "[::1"],
            &["other.com", "bad/host"],
        );
        g.max_requests = 0;
        let p = g.problems();
        assert_eq!(p.len(), 6, "{p:?}");
        assert!(p.iter().any(|p| p.contains("\"bad/host\"")));
        let empty: HttpGrant = serde_json::from_value(serde_json::json!({"allow": []})).unwrap();
        assert!(!empty.problems().is_empty());
        let none: HttpGrant = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(none.problems()[0].contains("at least one host"));
        // allow_private alone grants its hosts, with their private addresses.
        let private = grant(&[], &["127.0.0.1", "nas.lan:8443"]);
        assert_eq!(private.problems(), Vec::<String>::new());
        assert!(private.allows("127.0.0.1", 80) && private.allows_private("127.0.0.1", 80));
        assert!(private.allows("nas.lan", 8443) && !private.allows("nas.lan", 80));
        assert!(!private.allows("example.com", 443));
        let both = grant(&["127.0.0.1:8080"], &["127.0.0.1"]);
        assert_eq!(both.problems(), Vec::<String>::new());
        assert!(both.allows_private("127.0.0.1", 8080));
        let fine = grant(&["a.com", "localhost:8080"], &["localhost:8080"]);
        assert_eq!(fine.problems(), Vec::<String>::new());
        assert_eq!(fine.max_requests, 100);
        assert_eq!(fine.timeout, Duration::from_secs(10));
    }

    #[test]
    fn non_public_addresses_are_named_in_every_form() {
        let blocked = [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ];
        for ip in blocked {
            assert!(
                non_public(ip.parse().unwrap()).is_some(),
                "{ip} must be refused"
            );
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700:4700::1111",
        ];
        for ip in public {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip} is public");
        }
    }
}
