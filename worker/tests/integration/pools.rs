//! IP pools: mail leaves from its pool's local address with its pool's EHLO name, by sending
//! host, by sender domain, or through the default pool; a pool of two addresses uses both;
//! a connection opened for one pool never carries another pool's mail; the MX path and a
//! transport alike; the address is in the ledger's attempt event. `check-config` fails on a
//! pool address that is not on the machine and warns when reverse DNS does not confirm the
//! EHLO name.
//! This file's addresses: sources 127.0.0.20-22, receivers 127.0.200.1-3.

use crate::common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hedwig_queue::event::{Batch, Event, What};
use hedwig_queue::Tubes;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Received, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use worker::config::PoolConfig;

fn pool(addresses: &[&str], ehlo: &str) -> PoolConfig {
    PoolConfig {
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        ehlo: ehlo.into(),
    }
}

/// Enqueues one message from sending host `host` and sender `from` to `to`, and waits for
/// the `n`th message at `receiver`; returns it.
async fn send(
    bs: &str,
    receiver: &SmtpReceiver,
    n: usize,
    host: &str,
    from: &str,
    to: &str,
) -> (String, Received) {
    let mut job = common::job(from, &[to], &common::message("pools"));
    job.envelope.host = host.into();
    common::enqueue(bs, &job).await;
    let got = receiver
        .wait_for(n, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("message {n} from {host} to {to} did not arrive"));
    (job.envelope.queue_id, got[n - 1].clone())
}

fn from(r: &Received) -> (String, String) {
    (r.peer.ip().to_string(), r.helo.clone())
}

/// Every event now in the events tube.
async fn drain(url: &str) -> Vec<Event> {
    let mut c = beanstalk::Client::connect(url.to_owned()).await.unwrap();
    c.watch(Tubes::default().events()).await.unwrap();
    c.ignore("default").await.unwrap();
    let mut events = Vec::new();
    for _ in 0..1000 {
        match c.reserve_with_timeout(Duration::ZERO).await {
            Ok(job) => {
                events.extend(Batch::decode(&job.body).unwrap().events);
                c.delete(job.id).await.unwrap();
            }
            Err(_) => break,
        }
    }
    events
}

#[tokio::test]
async fn mail_leaves_from_its_pools_address_and_name() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("rcpt.pools.test", 10, "mx.rcpt.pools.test")
            .a("mx.rcpt.pools.test", "127.0.200.1")
            .mx("rr.pools.test", 10, "mx.rr.pools.test")
            .a("mx.rr.pools.test", "127.0.200.3"),
    )
    .await;
    let mx = common::mx("127.0.200.1", Behaviour::new()).await;
    let rr = common::mx("127.0.200.3", Behaviour::new()).await;
    let transport = common::mx("127.0.200.2", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.concurrency = 1;
    config.pools = [
        ("a".to_string(), pool(&["127.0.0.20"], "a.pools.test")),
        ("b".to_string(), pool(&["127.0.0.21"], "b.pools.test")),
        ("c".to_string(), pool(&["127.0.0.22"], "c.pools.test")),
        (
            "two".to_string(),
            pool(&["127.0.0.20", "127.0.0.22"], "two.pools.test"),
        ),
    ]
    .into();
    config.pool_hosts = [
        ("host-a.example.test".to_string(), "a".to_string()),
        ("host-b.example.test".to_string(), "b".to_string()),
        ("host-two.example.test".to_string(), "two".to_string()),
    ]
    .into();
    config.pool_sender_domains = [("receipts.test".to_string(), "b".to_string())].into();
    config.default_pool = Some("c".into());
    config
        .transports
        .insert("relay.pools.test".into(), "[127.0.200.2]:25".into());
    // New connections for every message to rr.pools.test, so the rotation shows.
    config.limits.destinations.insert(
        "rr.pools.test".into(),
        worker::config::Limit {
            messages_per_connection: 1,
            ..Default::default()
        },
    );
    config.limits.idle_time = Duration::from_secs(30);
    let worker = common::start(config);
    let bs = bs.url();
    let at = |ip: &str, name: &str| (ip.to_string(), name.to_string());

    // One after another to the same MX, so that the connection of one is idle for the next:
    // it may only be reused by mail of the same pool.
    let (qa, got) = send(
        &bs,
        &mx,
        1,
        "host-a.example.test",
        "s@a.test",
        "x@rcpt.pools.test",
    )
    .await;
    assert_eq!(from(&got), at("127.0.0.20", "a.pools.test"));
    let (qb, got) = send(
        &bs,
        &mx,
        2,
        "host-b.example.test",
        "s@b.test",
        "x@rcpt.pools.test",
    )
    .await;
    assert_eq!(from(&got), at("127.0.0.21", "b.pools.test"));
    let (_, got) = send(
        &bs,
        &mx,
        3,
        "host-a.example.test",
        "s@a.test",
        "y@rcpt.pools.test",
    )
    .await;
    assert_eq!(from(&got), at("127.0.0.20", "a.pools.test"));
    let (_, got) = send(
        &bs,
        &mx,
        4,
        "unmapped.example.test",
        "s@c.test",
        "x@rcpt.pools.test",
    )
    .await;
    assert_eq!(
        from(&got),
        at("127.0.0.22", "c.pools.test"),
        "the default pool"
    );
    // The sender domain's pool wins over the host's.
    let (_, got) = send(
        &bs,
        &mx,
        5,
        "host-a.example.test",
        "r@receipts.test",
        "z@rcpt.pools.test",
    )
    .await;
    assert_eq!(from(&got), at("127.0.0.21", "b.pools.test"));
    assert!(
        mx.connections() < 5,
        "connections were reused within a pool ({} for 5 messages)",
        mx.connections()
    );

    // A transport is bound like an MX.
    let (_, got) = send(
        &bs,
        &transport,
        1,
        "host-b.example.test",
        "s@b.test",
        "t@relay.pools.test",
    )
    .await;
    assert_eq!(from(&got), at("127.0.0.21", "b.pools.test"));

    // Two addresses: new connections alternate between them.
    let mut peers = BTreeSet::new();
    for n in 1..=4 {
        let (_, got) = send(
            &bs,
            &rr,
            n,
            "host-two.example.test",
            "s@two.test",
            "r@rr.pools.test",
        )
        .await;
        assert_eq!(got.helo, "two.pools.test");
        peers.insert(got.peer.ip());
    }
    let want: BTreeSet<IpAddr> = ["127.0.0.20", "127.0.0.22"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(peers, want);

    // The ledger's attempt events name the pool and the address.
    let mut events = Vec::new();
    for _ in 0..100 {
        events.extend(drain(&bs).await);
        let sent = |q: &str| {
            events.iter().any(|e| {
                e.queue_id == q && matches!(&e.what, What::Recipient(r) if r.source_ip.is_some())
            })
        };
        if sent(&qa) && sent(&qb) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempt = |q: &str| {
        events
            .iter()
            .filter(|e| e.queue_id == q)
            .find_map(|e| match &e.what {
                What::Recipient(r) => Some((r.source_ip.clone(), r.pool.clone())),
                _ => None,
            })
    };
    assert_eq!(
        attempt(&qa),
        Some((Some("127.0.0.20".into()), Some("a".into())))
    );
    assert_eq!(
        attempt(&qb),
        Some((Some("127.0.0.21".into()), Some("b".into())))
    );
    worker.stop().await;
}

#[tokio::test]
async fn without_pools_nothing_is_bound() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(Zone::new()).await;
    let plain = common::mx("127.0.200.4", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config
        .transports
        .insert("plain.pools.test".into(), "[127.0.200.4]:25".into());
    let worker = common::start(config);
    let (_, got) = send(
        &bs.url(),
        &plain,
        1,
        "host-a.example.test",
        "s@a.test",
        "p@plain.pools.test",
    )
    .await;
    assert_eq!(got.helo, "relay.hedwig.test", "EHLO is hostname");
    assert_eq!(
        got.peer.ip().to_string(),
        "127.0.0.1",
        "the system's choice"
    );
    worker.stop().await;
}

fn worker_cmd(config: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.arg("--config").arg(config);
    for (k, _) in std::env::vars() {
        if k.starts_with("HEDWIG_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

// Multi-threaded: the blocking `Command` calls must not stop the in-process DNS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_binds_every_pool_address() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(Zone::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.yaml");
    let yaml = |addresses: &str| {
        format!(
            "beanstalkd: {}\nhostname: relay.pools.test\nnameservers: [\"{}\"]\n\
             pools:\n  bulk:\n    addresses: [{addresses}]\n    ehlo: bulk.pools.test\n\
             pool_hosts:\n  web1.pools.test: bulk\ndefault_pool: bulk\n",
            bs.url(),
            dns.addr()
        )
    };
    std::fs::write(&path, yaml("127.0.0.20, 192.0.2.1")).unwrap();
    let out = worker_cmd(&path).arg("check-config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pools.bulk: cannot send from 192.0.2.1"),
        "{err}"
    );
    assert!(!err.contains("cannot send from 127.0.0.20"), "{err}");

    // On the machine: fine, with a warning (hickory names 127/8 `localhost` itself).
    std::fs::write(&path, yaml("127.0.0.20")).unwrap();
    let out = worker_cmd(&path).arg("check-config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: pools.bulk: 127.0.0.20 has PTR localhost, not bulk.pools.test"),
        "{err}"
    );
}

#[tokio::test]
async fn reverse_dns_must_confirm_the_ehlo_name() {
    // Documentation addresses: they are only names here, nothing is sent to them.
    let dns = DnsServer::start(
        Zone::new()
            .ptr("192.0.2.25", "mta.pools.test")
            .a("mta.pools.test", "192.0.2.25")
            .ptr("192.0.2.26", "mta2.pools.test")
            .a("mta2.pools.test", "192.0.2.99")
            .ptr("192.0.2.27", "host-27.provider.test"),
    )
    .await;
    let dns = hedwig_dns::resolver(
        &[dns.addr()],
        Duration::from_secs(3),
        hedwig_dns::Cache::Off,
    )
    .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        worker::pools::fcrdns(&dns, ip("192.0.2.25"), "mta.pools.test").await,
        None
    );
    let not_back = worker::pools::fcrdns(&dns, ip("192.0.2.26"), "mta2.pools.test")
        .await
        .unwrap();
    assert!(not_back.contains("does not resolve back"), "{not_back}");
    let other = worker::pools::fcrdns(&dns, ip("192.0.2.27"), "mta.pools.test")
        .await
        .unwrap();
    assert!(
        other.contains("PTR host-27.provider.test, not mta.pools.test"),
        "{other}"
    );
    let none = worker::pools::fcrdns(&dns, ip("192.0.2.28"), "mta.pools.test")
        .await
        .unwrap();
    assert!(none.contains("no PTR record"), "{none}");
}
