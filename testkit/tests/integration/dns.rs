//! The test DNS server answers a real hickory resolver the way an authoritative server would.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hedwig_testkit::dns::{resolver, resolver_config, resolver_with_timeout, DnsServer, Zone};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::config::NameServerConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::Resolver;

fn long_key() -> String {
    // Longer than a 512-byte UDP answer, so the resolver must retry over TCP.
    let p: String = (0..1400).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    format!("v=DKIM1; k=rsa; p={p}")
}

fn zone() -> Zone {
    Zone::new()
        .mx("example.test", 20, "mx2.example.test")
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", "127.0.0.2")
        .a("mx2.example.test", "127.0.0.3")
        .aaaa("v6.example.test", "::1")
        .txt("sel._domainkey.example.test", &long_key())
        .null_mx("nullmx.test")
        .servfail("broken.test")
        .timeout("slow.test")
        .ptr("192.0.2.25", "mx1.example.test")
}

fn mx_pairs(lookup: &hickory_resolver::lookup::Lookup) -> Vec<(u16, String)> {
    let mut pairs: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
            _ => None,
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn mx_a_aaaa_and_ptr() {
    let dns = DnsServer::start(zone()).await;
    let r = resolver(dns.addr());

    let mx = r.mx_lookup("example.test.").await.unwrap();
    assert_eq!(
        mx_pairs(&mx),
        [
            (10, "mx1.example.test.".to_string()),
            (20, "mx2.example.test.".to_string())
        ]
    );
    let a = r.ipv4_lookup("MX1.example.test.").await.unwrap();
    assert!(matches!(&a.answers()[0].data, RData::A(ip) if ip.0.to_string() == "127.0.0.2"));
    let aaaa = r.ipv6_lookup("v6.example.test.").await.unwrap();
    assert!(matches!(&aaaa.answers()[0].data, RData::AAAA(ip) if ip.0.to_string() == "::1"));
    let ptr = r
        // hickory answers 127.0.0.0/8 reverse lookups itself (RFC 6761, "localhost"), so PTR
        // tests use a documentation address; no traffic goes there, it is only a DNS name.
        .reverse_lookup("192.0.2.25".parse::<IpAddr>().unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&ptr.answers()[0].data, RData::PTR(name) if name.0.to_string() == "mx1.example.test.")
    );
    assert!(dns
        .queries()
        .contains(&("example.test.".to_string(), RecordType::MX)));
}

#[tokio::test]
async fn long_txt_comes_back_whole_over_tcp_fallback() {
    let dns = DnsServer::start(zone()).await;
    let txt = resolver(dns.addr())
        .txt_lookup("sel._domainkey.example.test.")
        .await
        .unwrap();
    let RData::TXT(txt) = &txt.answers()[0].data else {
        panic!("not a TXT answer");
    };
    assert!(txt.txt_data.iter().all(|s| s.len() <= 255));
    assert!(txt.txt_data.len() > 1);
    let joined: Vec<u8> = txt
        .txt_data
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    assert_eq!(joined, long_key().into_bytes());
}

#[tokio::test]
async fn nxdomain_differs_from_nodata() {
    let dns = DnsServer::start(zone()).await;
    let r = resolver(dns.addr());

    let nx = r.mx_lookup("nope.example.test.").await.unwrap_err();
    assert!(nx.is_nx_domain(), "{nx:?}");

    // mx1 exists (it has an A record) but has no MX: NODATA, the implicit-MX case.
    let nodata = r.mx_lookup("mx1.example.test.").await.unwrap_err();
    assert!(
        nodata.is_no_records_found() && !nodata.is_nx_domain(),
        "{nodata:?}"
    );

    // An empty non-terminal is not NXDOMAIN either.
    let ent = r.txt_lookup("_domainkey.example.test.").await.unwrap_err();
    assert!(ent.is_no_records_found() && !ent.is_nx_domain(), "{ent:?}");
}

#[tokio::test]
async fn null_mx() {
    let dns = DnsServer::start(zone()).await;
    let mx = resolver(dns.addr())
        .mx_lookup("nullmx.test.")
        .await
        .unwrap();
    assert_eq!(mx_pairs(&mx), [(0, ".".to_string())]);
}

#[tokio::test]
async fn servfail_then_fixed_while_running() {
    let dns = DnsServer::start(zone()).await;
    let r = resolver(dns.addr());
    let err = r.mx_lookup("any.name.broken.test.").await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
        ),
        "{err:?}"
    );

    // The operator fixes the zone: broken.test now has an MX and nothing below it.
    dns.set(Zone::new().mx("broken.test", 5, "mx1.example.test"));
    let err = r.mx_lookup("any.name.broken.test.").await.unwrap_err();
    assert!(err.is_nx_domain(), "{err:?}");
    let mx = r.mx_lookup("broken.test.").await.unwrap();
    assert_eq!(mx_pairs(&mx), [(5, "mx1.example.test.".to_string())]);
}

#[tokio::test]
async fn timeout_domain_is_never_answered() {
    let dns = DnsServer::start(zone()).await;
    let r = resolver_with_timeout(dns.addr(), Duration::from_millis(300));
    let started = Instant::now();
    let err = r.mx_lookup("x.slow.test.").await.unwrap_err();
    assert!(matches!(err, NetError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server still answers other names.
    assert!(r.mx_lookup("example.test.").await.is_ok());
}

#[tokio::test]
async fn silent_server_times_out_until_switched_back() {
    let dns = DnsServer::start(zone()).await;
    let r = resolver_with_timeout(dns.addr(), Duration::from_millis(300));
    assert!(r.mx_lookup("example.test.").await.is_ok());
    dns.set_silent(true);
    let err = r.mx_lookup("example.test.").await.unwrap_err();
    assert!(matches!(err, NetError::Timeout), "{err:?}");
    assert!(dns.ignored() >= 1);
    dns.set_silent(false);
    let mx = r.mx_lookup("example.test.").await.unwrap();
    assert_eq!(mx_pairs(&mx).len(), 2);
}

#[tokio::test]
async fn tcp_only_resolver_gets_the_same_answers() {
    let dns = DnsServer::start(zone()).await;
    let (_, opts) = resolver_config(dns.addr());
    let mut server = NameServerConfig::tcp(dns.addr().ip());
    server.connections[0].port = dns.addr().port();
    let config = hickory_resolver::config::ResolverConfig::from_name_servers(vec![server]);
    let r = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .unwrap();
    let mx = r.mx_lookup("example.test.").await.unwrap();
    assert_eq!(mx_pairs(&mx).len(), 2);
    assert!(r.mx_lookup("nope.test.").await.unwrap_err().is_nx_domain());
}

#[tokio::test]
async fn binds_a_given_loopback_address() {
    let dns = DnsServer::start_on("127.0.0.5:0".parse().unwrap(), zone())
        .await
        .unwrap();
    assert_eq!(dns.addr().ip().to_string(), "127.0.0.5");
    let a = resolver(dns.addr())
        .ipv4_lookup("mx2.example.test.")
        .await
        .unwrap();
    assert_eq!(a.answers().len(), 1);
}
