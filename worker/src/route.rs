//! Where a recipient domain's mail goes: transports, relayhost, MX lookup (hickory).
//!
//! [`Nexthop`] is the Postfix-style syntax of `relayhost` and `transports`: `host[:port]`
//! looks up the MX of `host`; `[host][:port]` connects to `host` itself. [`Dns`] resolves MX
//! records in preference order with equal preferences shuffled, falls back to the implicit MX
//! (the domain's own A/AAAA, RFC 5321 §5.1) only when the domain exists without MX records,
//! and keeps the three kinds of answers apart: NXDOMAIN and null MX (RFC 7505) are permanent,
//! SERVFAIL, REFUSED and timeouts are temporary and are never taken for "no MX".
//!
//! [`Dns::txt`] serves MTA-STS's `_mta-sts` record ([`crate::mta_sts`]) through the same
//! nameservers.
//!
//! Not here: connecting (see [`crate::deliver`]); DNSSEC/DANE; MTA-STS policies.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use rand::seq::SliceRandom;

use crate::error::Error;

/// A configured nexthop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nexthop {
    /// Look up the MX records of `host` (the recipient domain, or a relay name).
    Mx { host: String, port: u16 },
    /// Connect to `host` (a name's A/AAAA, or an IP address) without an MX lookup.
    Direct { host: String, port: u16 },
}

impl Nexthop {
    pub fn port(&self) -> u16 {
        match self {
            Nexthop::Mx { port, .. } | Nexthop::Direct { port, .. } => *port,
        }
    }

    /// Parses `host`, `host:port`, `[host]`, `[host]:port`, `[ip]:port`, `[ipv6]:port`.
    pub fn parse(s: &str, default_port: u16) -> Result<Nexthop, String> {
        let s = s.trim();
        let bad = |why: &str| format!("{s:?}: {why} (try host, host:port or [host]:port)");
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad("bad port"));
        if let Some(rest) = s.strip_prefix('[') {
            let close = rest.find(']').ok_or_else(|| bad("no closing ']'"))?;
            let host = &rest[..close];
            let port = match &rest[close + 1..] {
                "" => default_port,
                p => port_of(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?)?,
            };
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            return Ok(Nexthop::Direct {
                host: host.to_ascii_lowercase(),
                port,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, port_of(p)?),
            Some(_) => return Err(bad("IPv6 addresses need brackets")),
            None => (s, default_port),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("empty or invalid host"));
        }
        Ok(Nexthop::Mx {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// How the mail for a domain leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Into the capture Maildir.
    Capture,
    /// Over SMTP to a nexthop.
    Smtp(Nexthop),
}

/// The routing table, parsed once at start from `capture_maildir`, `transports` and
/// `relayhost` (by [`crate::config::Config::check`]).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// `capture_maildir` is set: every domain is captured.
    pub capture_all: bool,
    /// Per recipient domain (lowercase A-labels).
    pub transports: std::collections::BTreeMap<String, Route>,
    pub relayhost: Option<Nexthop>,
    /// `smtp_port`: the port of remote MX hosts.
    pub port: u16,
    /// `relay_auth`: the relayhost's login.
    pub relay_login: Option<std::sync::Arc<crate::login::Login>>,
    /// `transport_auth`: per recipient domain (as `transports`), the transport's login.
    pub logins: std::collections::BTreeMap<String, std::sync::Arc<crate::login::Login>>,
}

impl Routes {
    /// The route for recipients at `domain` (A-labels, lowercase): capture, its transport,
    /// the relayhost, the address literal itself, or its MX.
    pub fn route(&self, domain: &str) -> Route {
        if self.capture_all {
            return Route::Capture;
        }
        if let Some(route) = self.transports.get(domain) {
            return route.clone();
        }
        if let Some(hop) = &self.relayhost {
            return Route::Smtp(hop.clone());
        }
        // RFC 5321 §4.1.3: an address literal is the host itself.
        if let Some(ip) = hedwig_core::address::literal_ip(domain) {
            return Route::Smtp(Nexthop::Direct {
                host: ip.to_string(),
                port: self.port,
            });
        }
        Route::Smtp(Nexthop::Mx {
            host: domain.to_string(),
            port: self.port,
        })
    }

    /// Whether mail for `domain` goes to the domain's own MX hosts (no capture, transport
    /// or relayhost, not an address literal): only then does the domain's MTA-STS policy
    /// apply; a relayhost or transport is the operator's choice of nexthop.
    pub fn is_recipient_mx(&self, domain: &str) -> bool {
        !self.capture_all
            && !self.transports.contains_key(domain)
            && self.relayhost.is_none()
            && hedwig_core::address::literal_ip(domain).is_none()
    }

    /// The login of the route [`Routes::route`] gives for `domain`, if it has one.
    pub fn login(&self, domain: &str) -> Option<std::sync::Arc<crate::login::Login>> {
        if self.capture_all {
            return None;
        }
        if self.transports.contains_key(domain) {
            return self.logins.get(domain).cloned();
        }
        if self.relayhost.is_some() {
            return self.relay_login.clone();
        }
        None
    }
}

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The host name (without trailing dot), or an IP address.
    pub name: String,
    pub preference: u16,
}

/// A DNS resolver for routing.
#[derive(Clone)]
pub struct Dns {
    resolver: hedwig_dns::Dns,
    ipv6: bool,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("ipv6", &self.ipv6).finish()
    }
}

impl Dns {
    /// A resolver asking `nameservers` (UDP, TCP on truncation), or the system's when empty;
    /// answers are cached within their TTLs.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration, ipv6: bool) -> Result<Dns, String> {
        let resolver = hedwig_dns::resolver(nameservers, timeout, hedwig_dns::Cache::Answers)?;
        Ok(Dns { resolver, ipv6 })
    }

    /// The mail hosts of `domain` (A-labels), best first.
    pub async fn mx(&self, domain: &str) -> Result<Vec<MxHost>, Error> {
        let domain = domain.trim_end_matches('.');
        match self.resolver.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => {
                let mut hosts: Vec<MxHost> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some(MxHost {
                            name: mx
                                .exchange
                                .to_ascii()
                                .trim_end_matches('.')
                                .to_ascii_lowercase(),
                            preference: mx.preference,
                        }),
                        _ => None,
                    })
                    .collect();
                if hosts.is_empty() {
                    // Only a CNAME chain came back: treat like NODATA.
                    return Ok(implicit(domain));
                }
                order(&mut hosts);
                // RFC 7505 §3: a single MX with an empty exchange ("."): no mail. A "." among
                // real MX records is a misconfiguration; skip it and use the others.
                if hosts.iter().all(|h| h.name.is_empty()) {
                    return Err(Error::NullMx(domain.to_string()));
                }
                hosts.retain(|h| !h.name.is_empty());
                Ok(hosts)
            }
            Err(e) if e.is_nx_domain() => Err(Error::NoSuchDomain(domain.to_string())),
            Err(e) if e.is_no_records_found() => Ok(implicit(domain)),
            Err(e) => Err(temporary(domain, &e)),
        }
    }

    /// The TXT records at `name`, each record's strings joined (RFC 7208 §3.3 style).
    /// No record (NXDOMAIN, NODATA) is an empty list; SERVFAIL and timeouts are errors.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        match self.resolver.txt_lookup(fqdn(name)).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(temporary(name, &e)),
        }
    }

    /// The addresses of a mail host: IPv6 first (when enabled), then IPv4.
    ///
    /// Permanent ([`Error::NoMailHost`]) only when every family answered authoritatively
    /// with nothing; a temporary error in one family with no address from the other is
    /// temporary.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Error> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = fqdn(host);
        let v4 = self.resolver.ipv4_lookup(name.clone());
        let (v6, v4) = if self.ipv6 {
            let (v6, v4) = tokio::join!(self.resolver.ipv6_lookup(name), v4);
            (Some(v6), v4)
        } else {
            (None, v4.await)
        };
        let mut addrs = Vec::new();
        let mut temp: Option<Error> = None;
        let mut missing = Vec::new();
        for result in v6.into_iter().chain([v4]) {
            match result {
                Ok(lookup) => addrs.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) if e.is_no_records_found() => missing.push(e.to_string()),
                Err(e) => temp = Some(temporary(host, &e)),
            }
        }
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        match temp {
            Some(e) => Err(e),
            None => Err(Error::NoMailHost {
                domain: host.to_string(),
                detail: format!("{host} has no A or AAAA record"),
            }),
        }
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn implicit(domain: &str) -> Vec<MxHost> {
    vec![MxHost {
        name: domain.to_string(),
        preference: 0,
    }]
}

fn temporary(name: &str, e: &NetError) -> Error {
    Error::DnsTemporary {
        name: name.to_string(),
        detail: e.to_string(),
    }
}

/// Sorts by preference and shuffles hosts of equal preference (RFC 5321 §5.1).
fn order(hosts: &mut [MxHost]) {
    let mut rng = rand::thread_rng();
    hosts.shuffle(&mut rng);
    hosts.sort_by_key(|h| h.preference);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthop_syntax() {
        assert_eq!(
            Nexthop::parse("relay.example", 25),
            Ok(Nexthop::Mx {
                host: "relay.example".into(),
                port: 25
            })
        );
        assert_eq!(
            Nexthop::parse("Relay.example:587", 25),
            Ok(Nexthop::Mx {
                host: "relay.example".into(),
                port: 587
            })
        );
        assert_eq!(
            Nexthop::parse("[10.0.0.1]:2525", 25),
            Ok(Nexthop::Direct {
                host: "10.0.0.1".into(),
                port: 2525
            })
        );
        assert_eq!(
            Nexthop::parse("[::1]", 25),
            Ok(Nexthop::Direct {
                host: "::1".into(),
                port: 25
            })
        );
        for bad in ["", "[x", "[]:25", "h:port", "::1", "[h]x", "a b"] {
            assert!(Nexthop::parse(bad, 25).is_err(), "{bad}");
        }
    }

    #[test]
    fn equal_preferences_are_shuffled_but_order_kept() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut hosts: Vec<MxHost> = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
                .iter()
                .map(|(p, n)| MxHost {
                    name: n.to_string(),
                    preference: *p,
                })
                .collect();
            order(&mut hosts);
            let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            assert_eq!(&names[2..], ["c", "d"]);
            seen_first.insert(names[0].to_string());
        }
        assert_eq!(
            seen_first.len(),
            2,
            "both equal-preference hosts come first sometimes"
        );
    }
}
