//! The `nameservers` setting and the hickory resolver built from it, shared by the worker (MX
//! routing) and keygen (`dns-check`), so both read the setting and ask DNS the same way.
//!
//! Layout: [`parse_nameserver`] reads one configured server; [`resolver`] builds the resolver.
//!
//! Not here: the lookups themselves and what their answers mean (the worker's `route`,
//! keygen's `dns_check::lookup`); hedwig-core stays free of hickory.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;

/// The resolver type both users hold.
pub type Dns = Resolver<TokioRuntimeProvider>;

/// A nameserver as `ip`, `ip:port` or `[ipv6]:port`; the port defaults to 53.
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not ip or ip:port"))
}

/// Whether answers are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// hickory's cache (within TTLs): for the worker, which asks the same names all day.
    Answers,
    /// None: every question goes out, so a check sees what is published now.
    Off,
}

/// A resolver asking `nameservers` (UDP, then TCP when an answer is truncated; no search
/// domains, no hosts file), or the system's (`/etc/resolv.conf`) when the list is empty.
/// `timeout` bounds each query attempt; there are two attempts.
pub fn resolver(
    nameservers: &[SocketAddr],
    timeout: Duration,
    cache: Cache,
) -> Result<Dns, String> {
    let built = if nameservers.is_empty() {
        let mut builder = Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?;
        set_common(builder.options_mut(), timeout, cache);
        builder.build()
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        let mut opts = ResolverOpts::default();
        set_common(&mut opts, timeout, cache);
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
    };
    built.map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

fn set_common(opts: &mut ResolverOpts, timeout: Duration, cache: Cache) {
    opts.timeout = timeout;
    opts.attempts = 2;
    if cache == Cache::Off {
        opts.cache_size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_with_and_without_port() {
        assert_eq!(
            parse_nameserver("127.0.0.1:5353").unwrap().to_string(),
            "127.0.0.1:5353"
        );
        assert_eq!(parse_nameserver("127.0.0.1").unwrap().port(), 53);
        assert_eq!(parse_nameserver("::1").unwrap().port(), 53);
        assert_eq!(
            parse_nameserver("[::1]:5353").unwrap(),
            "[::1]:5353".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_nameserver("dns.example").is_err());
    }

    #[tokio::test]
    async fn builds_with_and_without_servers() {
        let one = ["127.0.0.1:53".parse().unwrap()];
        assert!(resolver(&one, Duration::from_secs(1), Cache::Off).is_ok());
        assert!(resolver(&one, Duration::from_secs(1), Cache::Answers).is_ok());
    }
}
