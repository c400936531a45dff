//! IP pools: which local address an outgoing SMTP connection comes from, and the EHLO name
//! said from it, per group of sending hosts (issue 16).
//!
//! A pool is a name, one or more local addresses (IPv4 and/or IPv6) and an EHLO name (the
//! name the addresses' PTR records give). A message goes out through the pool of its sender
//! domain (`pool_sender_domains`), else of its sending host (`pool_hosts`), else
//! `default_pool`; with none of these it goes out as without pools (the system picks the
//! address, EHLO is `hostname`). Among a pool's addresses of the target's family the
//! connections rotate round-robin; a pool with no address of that family cannot reach that
//! target address (the next one is tried).
//!
//! Config shape and checks: [`PoolConfig`] in `Config::pools`, checked by [`check`] into
//! [`Pools`]. The bind itself is [`connect`]; `worker check-config` probes each address with
//! [`probe_bind`] and its forward-confirmed reverse DNS with [`fcrdns`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};

/// One pool as configured: `{addresses: [192.0.2.10, "2001:db8::10"], ehlo: mta1.example.com}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Local addresses to send from (each must be on the machine).
    pub addresses: Vec<String>,
    /// The name sent in EHLO from these addresses; their PTR should name it.
    pub ehlo: String,
}

/// One pool, ready to use.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub ehlo: String,
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    next_v4: AtomicUsize,
    next_v6: AtomicUsize,
}

impl Pool {
    /// The local address to connect to `target` from: the next of the pool's addresses of
    /// the same family (round-robin), or `None` when the pool has none of that family.
    pub fn source(&self, target: IpAddr) -> Option<IpAddr> {
        let (list, next) = if target.is_ipv4() {
            (&self.v4, &self.next_v4)
        } else {
            (&self.v6, &self.next_v6)
        };
        if list.is_empty() {
            return None;
        }
        let i = next.fetch_add(1, Ordering::Relaxed) % list.len();
        list.get(i).copied()
    }

    /// Whether the pool has an address of `target`'s family.
    pub fn reaches(&self, target: IpAddr) -> bool {
        if target.is_ipv4() {
            !self.v4.is_empty()
        } else {
            !self.v6.is_empty()
        }
    }

    /// Every address of the pool.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4.iter().chain(&self.v6).copied()
    }
}

/// The pools and which mail goes through which.
#[derive(Debug, Default, Clone)]
pub struct Pools {
    pools: BTreeMap<String, Arc<Pool>>,
    /// Sending host fqdn (normalised) → pool.
    hosts: HashMap<String, Arc<Pool>>,
    /// Sender domain (lowercase A-labels) → pool.
    sender_domains: HashMap<String, Arc<Pool>>,
    default: Option<Arc<Pool>>,
}

impl Pools {
    /// The pool for a message from sending host `host` (normalised fqdn, as in jobs) with
    /// envelope sender `sender`: by sender domain, then by host, then the default.
    pub fn choose(&self, host: &str, sender: &str) -> Option<&Arc<Pool>> {
        if self.pools.is_empty() {
            return None;
        }
        let domain = sender
            .rsplit_once('@')
            .and_then(|(_, d)| hedwig_core::address::parse_domain(d).ok());
        domain
            .and_then(|d| self.sender_domains.get(&d))
            .or_else(|| self.hosts.get(&host.to_ascii_lowercase()))
            .or(self.default.as_ref())
    }

    /// All pools by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }
}

/// The pool settings of the config, as written.
pub struct PoolSettings<'a> {
    pub pools: &'a BTreeMap<String, PoolConfig>,
    pub hosts: &'a BTreeMap<String, String>,
    pub sender_domains: &'a BTreeMap<String, String>,
    pub default: Option<&'a str>,
    /// `ipv6`: whether IPv6 targets are tried at all.
    pub ipv6: bool,
    /// Literal addresses the config routes to (relayhost, transports), with their key.
    pub literal_targets: Vec<(String, IpAddr)>,
}

/// Checks the pool settings (every problem, one line each, naming its key) and builds
/// [`Pools`].
pub fn check(s: &PoolSettings<'_>) -> Result<Pools, Vec<String>> {
    let mut errors = Vec::new();
    let mut pools = BTreeMap::new();
    for (name, p) in s.pools {
        let key = format!("pools.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(format!(
                "{key}: a pool name is letters, digits, - and _ (it is a metric label)"
            ));
        }
        let ehlo = match hedwig_core::key::normalize_fqdn(&p.ehlo) {
            Ok(fqdn) => fqdn,
            Err(e) => {
                errors.push(format!("{key}.ehlo: {e}"));
                String::new()
            }
        };
        if p.addresses.is_empty() {
            errors.push(format!("{key}.addresses: at least one address is needed"));
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for a in &p.addresses {
            match a.trim().parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                    errors.push(format!("{key}.addresses: {ip} cannot be a source address"))
                }
                Ok(ip) if v4.contains(&ip) || v6.contains(&ip) => {
                    errors.push(format!("{key}.addresses: {ip} is listed twice"))
                }
                Ok(ip @ IpAddr::V4(_)) => v4.push(ip),
                Ok(ip @ IpAddr::V6(_)) => v6.push(ip),
                Err(_) => errors.push(format!("{key}.addresses: {a:?} is not an IP address")),
            }
        }
        if !v6.is_empty() && v4.is_empty() && !s.ipv6 {
            errors.push(format!(
                "{key}: only IPv6 addresses, but ipv6 is false: no mail host could be reached"
            ));
        }
        for (target_key, target) in &s.literal_targets {
            let (family, has) = match target {
                IpAddr::V4(_) => ("IPv4", !v4.is_empty()),
                IpAddr::V6(_) => ("IPv6", !v6.is_empty()),
            };
            if !p.addresses.is_empty() && !has {
                errors.push(format!(
                    "{key}: no {family} address, but {target_key} is {target}: \
                     mail through it could not leave from this pool"
                ));
            }
        }
        pools.insert(
            name.clone(),
            Arc::new(Pool {
                name: name.clone(),
                ehlo,
                v4,
                v6,
                next_v4: AtomicUsize::new(0),
                next_v6: AtomicUsize::new(0),
            }),
        );
    }
    let mut pool_of = |key: String, name: &str| match pools.get(name) {
        Some(p) => Some(p.clone()),
        None => {
            errors.push(format!("{key}: no pool named {name:?} in pools"));
            None
        }
    };
    let mut hosts = HashMap::new();
    let mut host_errors = Vec::new();
    for (host, name) in s.hosts {
        let key = format!("pool_hosts.{host}");
        match hedwig_core::key::normalize_fqdn(host) {
            Ok(fqdn) => {
                if let Some(p) = pool_of(key.clone(), name) {
                    if hosts.insert(fqdn.clone(), p).is_some() {
                        host_errors.push(format!("{key}: another entry is for {fqdn} too"));
                    }
                }
            }
            Err(e) => host_errors.push(format!("{key}: {e}")),
        }
    }
    let mut sender_domains = HashMap::new();
    for (domain, name) in s.sender_domains {
        let key = format!("pool_sender_domains.{domain}");
        match hedwig_core::address::parse_domain(domain) {
            Ok(d) => {
                if let Some(p) = pool_of(key.clone(), name) {
                    if sender_domains.insert(d.clone(), p).is_some() {
                        host_errors.push(format!("{key}: another entry is for {d} too"));
                    }
                }
            }
            Err(e) => host_errors.push(format!("{key}: not a domain ({e})")),
        }
    }
    let default = s
        .default
        .and_then(|name| pool_of("default_pool".into(), name));
    errors.extend(host_errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Pools {
        pools,
        hosts,
        sender_domains,
        default,
    })
}

/// A TCP connection to `addr`, from `source` when given (bound before connecting).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Whether `ip` can be bound here (it is one of the machine's addresses).
pub fn probe_bind(ip: IpAddr) -> std::io::Result<()> {
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))
}

/// Forward-confirmed reverse DNS of `ip` for `ehlo`: `None` when the PTR of `ip` names
/// `ehlo` and `ehlo` resolves back to `ip`, else what is wrong (receivers check both).
pub async fn fcrdns(dns: &hedwig_dns::Dns, ip: IpAddr, ehlo: &str) -> Option<String> {
    let plain = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
    let names: Vec<String> = match dns
        .reverse_lookup(hickory_resolver::proto::rr::Name::from(ip))
        .await
    {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::PTR(ptr) => Some(plain(&ptr.0.to_string())),
                _ => None,
            })
            .collect(),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Vec::new(),
        Err(e) => return Some(format!("the PTR lookup of {ip} failed: {e}")),
    };
    if !names.iter().any(|n| *n == ehlo) {
        let found = if names.is_empty() {
            "no PTR record".to_string()
        } else {
            format!("PTR {}", names.join(", "))
        };
        return Some(format!(
            "{ip} has {found}, not {ehlo}; receivers check that the EHLO name is the PTR"
        ));
    }
    let forward = match ip {
        IpAddr::V4(_) => dns
            .ipv4_lookup(format!("{ehlo}."))
            .await
            .map(|l| l.answers().to_vec()),
        IpAddr::V6(_) => dns
            .ipv6_lookup(format!("{ehlo}."))
            .await
            .map(|l| l.answers().to_vec()),
    };
    let back: Vec<IpAddr> = forward
        .unwrap_or_default()
        .iter()
        .filter_map(|r| match &r.data {
            hickory_resolver::proto::rr::RData::A(a) => Some(IpAddr::V4(a.0)),
            hickory_resolver::proto::rr::RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    if back.contains(&ip) {
        None
    } else {
        Some(format!(
            "{ehlo} (the PTR of {ip}) does not resolve back to {ip}: not forward-confirmed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(
        pools: &'a BTreeMap<String, PoolConfig>,
        hosts: &'a BTreeMap<String, String>,
        senders: &'a BTreeMap<String, String>,
        default: Option<&'a str>,
    ) -> PoolSettings<'a> {
        PoolSettings {
            pools,
            hosts,
            sender_domains: senders,
            default,
            ipv6: true,
            literal_targets: Vec::new(),
        }
    }

    fn pool(addresses: &[&str], ehlo: &str) -> PoolConfig {
        PoolConfig {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            ehlo: ehlo.into(),
        }
    }

    #[test]
    fn choice_by_sender_domain_then_host_then_default() {
        let pools = [
            ("bulk".to_string(), pool(&["192.0.2.10"], "bulk.example")),
            ("tx".to_string(), pool(&["192.0.2.20"], "tx.example")),
        ]
        .into();
        let hosts = [("Web1.Example.".to_string(), "bulk".to_string())].into();
        let senders = [("Receipts.Example".to_string(), "tx".to_string())].into();
        let p = check(&settings(&pools, &hosts, &senders, Some("tx"))).unwrap();
        let name = |host, sender| p.choose(host, sender).map(|p| p.name.as_str());
        assert_eq!(name("web1.example", "news@a.example"), Some("bulk"));
        assert_eq!(name("web1.example", "r@receipts.example"), Some("tx"));
        assert_eq!(name("web2.example", "news@a.example"), Some("tx"));
        assert_eq!(name("web1.example", ""), Some("bulk"), "a bounce: by host");
        let no_default = check(&settings(&pools, &hosts, &senders, None)).unwrap();
        assert!(no_default.choose("web2.example", "a@b.example").is_none());
        assert!(Pools::default().choose("web1.example", "a@b").is_none());
    }

    #[test]
    fn round_robin_within_the_family() {
        let pools = [(
            "p".to_string(),
            pool(&["192.0.2.1", "2001:db8::1", "192.0.2.2"], "p.example"),
        )]
        .into();
        let none = BTreeMap::new();
        let p = check(&settings(&pools, &none, &none, Some("p"))).unwrap();
        let p = p.choose("h.example", "").unwrap();
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let v6: IpAddr = "2001:db8:1::1".parse().unwrap();
        let got: Vec<String> = (0..4).map(|_| p.source(v4).unwrap().to_string()).collect();
        assert_eq!(got, ["192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.2"]);
        assert_eq!(p.source(v6), Some("2001:db8::1".parse().unwrap()));
        let only4 = [("q".to_string(), pool(&["192.0.2.1"], "q.example"))].into();
        let q = check(&settings(&only4, &none, &none, Some("q"))).unwrap();
        assert_eq!(q.choose("h.example", "").unwrap().source(v6), None);
    }

    #[test]
    fn problems_name_their_keys() {
        let pools = [
            ("empty".to_string(), pool(&[], "e.example")),
            (
                "bad".to_string(),
                pool(&["192.0.2.300", "0.0.0.0", "192.0.2.1", "192.0.2.1"], "x y"),
            ),
            ("six".to_string(), pool(&["2001:db8::1"], "six.example")),
            ("has space".to_string(), pool(&["192.0.2.9"], "s.example")),
        ]
        .into();
        let hosts = [("web1.example".to_string(), "nope".to_string())].into();
        let senders = [("not a domain".to_string(), "six".to_string())].into();
        let mut s = settings(&pools, &hosts, &senders, Some("missing"));
        s.ipv6 = false;
        s.literal_targets = vec![("relayhost".into(), "192.0.2.25".parse().unwrap())];
        let errors = check(&s).unwrap_err().join("\n");
        for want in [
            "pools.empty.addresses: at least one address",
            "pools.bad.addresses: \"192.0.2.300\" is not an IP address",
            "pools.bad.addresses: 0.0.0.0 cannot be a source address",
            "pools.bad.addresses: 192.0.2.1 is listed twice",
            "pools.bad.ehlo",
            "pools.six: only IPv6 addresses, but ipv6 is false",
            "pools.six: no IPv4 address, but relayhost is 192.0.2.25",
            "pools.has space: a pool name is",
            "pool_hosts.web1.example: no pool named \"nope\"",
            "pool_sender_domains.not a domain: not a domain",
            "default_pool: no pool named \"missing\"",
        ] {
            assert!(errors.contains(want), "{want} missing in {errors}");
        }
    }
}
