//! MTA-STS (RFC 8461): the testkit DNS server publishes `_mta-sts` TXT, MX and A records; an
//! HTTPS policy server on 127.0.210.1:443 (certificate trusted through `tls.ca_file`) serves
//! each domain's policy; SMTP receivers on 127.0.210.x:25 play the MX hosts. Under `enforce`:
//! no STARTTLS, a certificate for the wrong name, an MX the policy does not list are deferred;
//! the right certificate delivers. `testing` delivers. A policy host that went down leaves the
//! cached policy in force, also in a new worker (restart) reading the state directory.
//! A policy host whose certificate does not name it is `sts-webpki-invalid`; under `testing`,
//! an MX whose certificate fails is tried with verified TLS once, its fallback connection
//! reused. Addresses: 127.0.210.0/24.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::tls::TestCert;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use worker::config::TlsMode;
use worker::plan::{Outcome, Status};

const POLICY_IP: &str = "127.0.210.1";

/// A small HTTPS server: answers `GET` with the policy of the `Host` it was asked for.
struct PolicyServer {
    task: tokio::task::JoinHandle<()>,
    /// Requests answered so far.
    hits: Arc<AtomicUsize>,
}

impl PolicyServer {
    async fn start(cert: &TestCert, policies: Arc<Mutex<HashMap<String, String>>>) -> Self {
        Self::start_on(POLICY_IP, cert, policies).await
    }

    async fn start_on(
        ip: &str,
        cert: &TestCert,
        policies: Arc<Mutex<HashMap<String, String>>>,
    ) -> Self {
        let addr: SocketAddr = format!("{ip}:443").parse().unwrap();
        let listener = bind_retrying(addr).await;
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let policies = policies.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await
                        {
                            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host:"))
                        .map(|h| h.trim().to_string())
                        .unwrap_or_default();
                    let right_path = head.starts_with("get /.well-known/mta-sts.txt ");
                    let body = policies.lock().unwrap().get(&host).cloned();
                    let response = match body.filter(|_| right_path) {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\
                                 Connection: close\r\n\r\n"
                            .to_string(),
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        PolicyServer { task, hits }
    }

    /// Closes the listener: connections are refused from now on.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}

fn pem(certs: &[&TestCert]) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut out = String::new();
    for cert in certs {
        let der = cert.certificate_der();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(out.as_bytes()).unwrap();
    f
}

fn policy(mode: &str, mx: &[&str]) -> String {
    let mut p = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        p.push_str(&format!("mx: {m}\r\n"));
    }
    p.push_str("max_age: 86400\r\n");
    p
}

/// `domain` with an STS record `id`, its policy host, and one MX `mx` at `ip`.
fn publish(zone: Zone, domain: &str, id: &str, mx: &str, ip: &str) -> Zone {
    zone.txt(&format!("_mta-sts.{domain}"), &format!("v=STSv1; id={id};"))
        .a(&format!("mta-sts.{domain}"), POLICY_IP)
        .mx(domain, 10, mx)
        .a(mx, ip)
}

/// Every test domain; `cached.test` publishes policy id `cached_id`.
fn zone(cached_id: &str) -> Zone {
    let zone = Zone::new();
    let zone = publish(
        zone,
        "nostarttls.test",
        "1",
        "mx.nostarttls.test",
        "127.0.210.10",
    );
    let zone = publish(
        zone,
        "wrongcert.test",
        "1",
        "mx.wrongcert.test",
        "127.0.210.11",
    );
    let zone = publish(zone, "good.test", "1", "mx1.good.test", "127.0.210.12");
    let zone = publish(
        zone,
        "notlisted.test",
        "1",
        "other.notlisted.test",
        "127.0.210.13",
    );
    let zone = publish(zone, "testing.test", "1", "mx.testing.test", "127.0.210.14");
    let zone = publish(
        zone,
        "cached.test",
        cached_id,
        "mx.cached.test",
        "127.0.210.15",
    );
    // The MX without STARTTLS: an `enforce` policy, were it taken, would defer its mail.
    publish(zone, "huge.test", "1", "mx.huge.test", "127.0.210.10")
}

fn deferred_by(out: &[(hedwig_core::address::Recipient, Outcome)], rule: &str) {
    let o = &out[0].1;
    assert_eq!(
        (o.status, o.reason.as_str()),
        (Status::Deferred, "mta-sts"),
        "{o:?}"
    );
    assert!(
        o.response.starts_with(&format!("mta-sts: {rule}")),
        "{}",
        o.response
    );
}

#[tokio::test]
async fn enforce_testing_and_the_cache() {
    let domains = [
        "nostarttls.test",
        "wrongcert.test",
        "good.test",
        "notlisted.test",
        "testing.test",
        "cached.test",
        "huge.test",
    ];
    let names: Vec<String> = domains.iter().map(|d| format!("mta-sts.{d}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let policy_cert = TestCert::new(&names);
    let policies = Arc::new(Mutex::new(HashMap::from([
        (
            "mta-sts.nostarttls.test".to_string(),
            policy("enforce", &["mx.nostarttls.test"]),
        ),
        (
            "mta-sts.wrongcert.test".to_string(),
            policy("enforce", &["mx.wrongcert.test"]),
        ),
        (
            "mta-sts.good.test".to_string(),
            policy("enforce", &["*.good.test"]),
        ),
        (
            "mta-sts.notlisted.test".to_string(),
            policy("enforce", &["mx.notlisted.test"]),
        ),
        (
            "mta-sts.testing.test".to_string(),
            policy("testing", &["mx.testing.test"]),
        ),
        (
            "mta-sts.cached.test".to_string(),
            policy("enforce", &["mx.cached.test"]),
        ),
    ])));
    // An attacker's policy host: a valid `enforce` policy followed by a megabyte of lines of
    // an unknown key (which the parser would skip): read no further than 64 KiB, refused.
    let mut huge = policy("enforce", &["mx.huge.test"]);
    while huge.len() < 1 << 20 {
        huge.push_str(&format!("x-padding: {}\r\n", "a".repeat(1000)));
    }
    policies
        .lock()
        .unwrap()
        .insert("mta-sts.huge.test".to_string(), huge);
    let server = PolicyServer::start(&policy_cert, policies.clone()).await;

    let dns = DnsServer::start(zone("1")).await;

    let plain = common::mx("127.0.210.10", Behaviour::new()).await;
    // The testkit's default certificate is for the IP address, not the MX name.
    let wrong = common::mx("127.0.210.11", Behaviour::new().starttls()).await;
    let good = common::mx(
        "127.0.210.12",
        Behaviour::new().starttls().cert_names(&["mx1.good.test"]),
    )
    .await;
    let unlisted = common::mx(
        "127.0.210.13",
        Behaviour::new()
            .starttls()
            .cert_names(&["other.notlisted.test"]),
    )
    .await;
    let testing = common::mx("127.0.210.14", Behaviour::new().starttls()).await;
    let cached_mx = common::mx("127.0.210.15", Behaviour::new()).await;
    let trusted: Vec<&TestCert> = vec![
        &policy_cert,
        wrong.cert(),
        good.cert(),
        unlisted.cert(),
        testing.cert(),
    ];
    let ca = pem(&trusted);
    let state = tempfile::tempdir().unwrap();

    let mut config = common::config("127.0.0.1:11300", dns.addr());
    config.ipv6 = false;
    config.tls.ca_file = Some(ca.path().to_path_buf());
    config.mta_sts.state_dir = Some(state.path().to_path_buf());
    config.mta_sts.allow_private_addresses = true; // the policy server is on loopback
                                                   // MTA-STS wins over `tls: none` for a domain with an enforce policy.
    config
        .tls
        .domains
        .insert("nostarttls.test".into(), TlsMode::None);
    let d = common::deliverer(config.clone());

    // enforce: no STARTTLS → deferred, nothing sent in the clear.
    let out = common::deliver(&d, "nostarttls.test", &["a@nostarttls.test"]).await;
    deferred_by(&out, "no STARTTLS");
    assert!(plain.received().is_empty());

    // enforce: a certificate that does not name the MX host → deferred.
    let out = common::deliver(&d, "wrongcert.test", &["a@wrongcert.test"]).await;
    deferred_by(&out, "certificate not valid for the MX name");
    assert!(wrong.received().is_empty());

    // enforce: a listed host (wildcard) with a certificate for its name → delivered over TLS.
    let out = common::deliver(&d, "good.test", &["a@good.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(good.received().len(), 1);
    assert!(good.received()[0].tls);

    // enforce: an MX the policy does not list is never connected to.
    let out = common::deliver(&d, "notlisted.test", &["a@notlisted.test"]).await;
    deferred_by(&out, "mx not in policy");
    assert_eq!(unlisted.connections(), 0);

    // testing: the failed check is logged, the mail goes as without a policy.
    let out = common::deliver(&d, "testing.test", &["a@testing.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(testing.received().len(), 1);
    assert!(
        testing.received()[0].tls,
        "opportunistic TLS as without a policy"
    );

    // `tls: required` for the domain still stands under a `testing` policy (stricter).
    let mut strict = config.clone();
    strict
        .tls
        .domains
        .insert("testing.test".into(), TlsMode::Required);
    let s = common::deliverer(strict);
    let out = common::deliver(&s, "testing.test", &["b@testing.test"]).await;
    assert_eq!(
        (out[0].1.status, out[0].1.reason.as_str()),
        (Status::Deferred, "tls"),
        "{:?}",
        out[0].1
    );
    assert_eq!(testing.received().len(), 1);

    // A transport is the operator's nexthop: the recipient domain's policy does not apply.
    let mut routed = config.clone();
    routed
        .transports
        .insert("nostarttls.test".into(), "[127.0.210.10]".into());
    let r = common::deliverer(routed);
    let out = common::deliver(&r, "nostarttls.test", &["b@nostarttls.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(plain.received().len(), 1);

    // By default a policy host must resolve to a public address (no SSRF into the worker's
    // networks through a recipient domain's DNS): the loopback policy server is not asked,
    // there is no policy, and the mail goes as the domain's `tls: none` says.
    let mut public_only = config.clone();
    public_only.mta_sts.allow_private_addresses = false;
    public_only.mta_sts.state_dir = None;
    let p = common::deliverer(public_only);
    let hits = server.hits.load(Ordering::SeqCst);
    let out = common::deliver(&p, "nostarttls.test", &["c@nostarttls.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(plain.received().len(), 2);
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        hits,
        "policy host not asked"
    );

    // A policy larger than 64 KiB is refused as it streams in: no policy, so the mail goes
    // as without one (in clear to the MX without STARTTLS), not deferred by it.
    let out = common::deliver(&d, "huge.test", &["a@huge.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(plain.received().len(), 3);

    // The cache: the policy is fetched once...
    let out = common::deliver(&d, "cached.test", &["a@cached.test"]).await;
    deferred_by(&out, "no STARTTLS");
    assert!(state.path().join("cached.test.json").exists());
    // ...and stays in force with the policy host down, in this worker...
    server.stop().await;
    let out = common::deliver(&d, "cached.test", &["b@cached.test"]).await;
    deferred_by(&out, "no STARTTLS");
    // ...and in a new one (a restart) that reads it from the state directory.
    let restarted = common::deliverer(config.clone());
    let out = common::deliver(&restarted, "cached.test", &["c@cached.test"]).await;
    deferred_by(&out, "no STARTTLS");
    assert!(cached_mx.received().is_empty());

    // A new policy id while the policy host serves garbage: the cached policy stays.
    dns.set(zone("2"));
    policies
        .lock()
        .unwrap()
        .insert("mta-sts.cached.test".into(), "<html>oops</html>".into());
    let server = PolicyServer::start(&policy_cert, policies.clone()).await;
    let restarted = common::deliverer(config.clone());
    let out = common::deliver(&restarted, "cached.test", &["d@cached.test"]).await;
    deferred_by(&out, "no STARTTLS");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "the new id was fetched"
    );
    // A failed fetch is not repeated at once (the negative cache).
    let out = common::deliver(&restarted, "cached.test", &["d@cached.test"]).await;
    deferred_by(&out, "no STARTTLS");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "no second fetch");
    assert!(cached_mx.received().is_empty());

    // The control: without the cached file (another state directory) and no policy to be
    // had, the domain is treated as having none (RFC 8461 §5.1) and the mail goes.
    server.stop().await;
    let empty = tempfile::tempdir().unwrap();
    let mut fresh = config.clone();
    fresh.mta_sts.state_dir = Some(empty.path().to_path_buf());
    let f = common::deliverer(fresh);
    let out = common::deliver(&f, "cached.test", &["e@cached.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(cached_mx.received().len(), 1);

    // MTA-STS off: the enforce policy of nostarttls.test is not looked at.
    let mut off = config;
    off.mta_sts.enabled = false;
    let o = common::deliverer(off);
    let out = common::deliver(&o, "nostarttls.test", &["c@nostarttls.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
}

/// RFC 8460 §4.3.2.2: a policy host whose certificate does not name it is counted as
/// `sts-webpki-invalid` (not `sts-policy-fetch-error`); there is no policy, so the mail goes
/// as without one.
#[tokio::test]
async fn policy_host_certificate_for_another_name() {
    let ip = "127.0.210.130";
    let cert = TestCert::new(&["mta-sts.other.test"]);
    let policies = Arc::new(Mutex::new(HashMap::from([(
        "mta-sts.badpki.test".to_string(),
        policy("enforce", &["mx.badpki.test"]),
    )])));
    let _server = PolicyServer::start_on(ip, &cert, policies).await;
    let zone = Zone::new()
        .txt("_mta-sts.badpki.test", "v=STSv1; id=1;")
        .a("mta-sts.badpki.test", ip)
        .mx("badpki.test", 10, "mx.badpki.test")
        .a("mx.badpki.test", "127.0.210.131");
    let dns = DnsServer::start(zone).await;
    let mx = common::mx("127.0.210.131", Behaviour::new()).await;
    let ca = pem(&[&cert]);
    let mut config = common::config("127.0.0.1:11300", dns.addr());
    config.ipv6 = false;
    config.tls.ca_file = Some(ca.path().to_path_buf());
    config.mta_sts.allow_private_addresses = true;
    let d = common::deliverer(config);

    let out = common::deliver(&d, "badpki.test", &["a@badpki.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(mx.received().len(), 1);
    assert_eq!(d.metrics.mta_sts_results("sts-webpki-invalid"), 1);
    assert_eq!(d.metrics.mta_sts_results("sts-policy-fetch-error"), 0);
}

/// `testing`: an MX whose certificate does not name it fails verified TLS once; the session
/// falls back to the domain's mode (opportunistic) and is pooled as such, and the next
/// message reuses it instead of failing a verified handshake again (one failure counted,
/// per session, not per message).
#[tokio::test]
async fn testing_reuses_the_fallback_connection() {
    let ip = "127.0.210.132";
    let cert = TestCert::new(&["mta-sts.reuse.test"]);
    let policies = Arc::new(Mutex::new(HashMap::from([(
        "mta-sts.reuse.test".to_string(),
        policy("testing", &["mx.reuse.test"]),
    )])));
    let _server = PolicyServer::start_on(ip, &cert, policies).await;
    let zone = Zone::new()
        .txt("_mta-sts.reuse.test", "v=STSv1; id=1;")
        .a("mta-sts.reuse.test", ip)
        .mx("reuse.test", 10, "mx.reuse.test")
        .a("mx.reuse.test", "127.0.210.133");
    let dns = DnsServer::start(zone).await;
    // The testkit's default certificate names the IP address, not mx.reuse.test.
    let mx = common::mx("127.0.210.133", Behaviour::new().starttls()).await;
    let ca = pem(&[&cert, mx.cert()]);
    let mut config = common::config("127.0.0.1:11300", dns.addr());
    config.ipv6 = false;
    config.tls.ca_file = Some(ca.path().to_path_buf());
    config.mta_sts.allow_private_addresses = true;
    let d = common::deliverer(config);

    for to in ["a@reuse.test", "b@reuse.test"] {
        let out = common::deliver(&d, "reuse.test", &[to]).await;
        assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    }
    let received = mx.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.tls), "opportunistic TLS");
    // The failed verified handshake and the fallback session; the second message reused it.
    assert_eq!(mx.connections(), 2);
    assert_eq!(d.metrics.mta_sts_results("certificate-host-mismatch"), 1);
}
