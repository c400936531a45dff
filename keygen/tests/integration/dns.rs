//! `keygen dns` against a real DNS server (hedwig-testkit) on loopback: every check right,
//! then wrong, then missing, through the library and through the binary.
//!
//! The sending IP is 192.0.2.25, a documentation address: it is only a name in the zone
//! (hickory answers PTR queries of 127.0.0.0/8 itself), no traffic goes to it.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use hedwig_message::dkim::{generate, Algorithm, KeyInfo};
use hedwig_testkit::dns::{DnsServer, Zone};
use keygen::dns_check::{check_all, settings, Check, HickoryDns, Report, Status, Target};

const IP: &str = "192.0.2.25";
const EHLO: &str = "mail.example.test";
const DOMAIN: &str = "example.test";

/// An RSA and an Ed25519 key for example.test, written to `dir`, loaded like the worker does.
fn keys(dir: &Path) -> (std::path::PathBuf, Vec<KeyInfo>) {
    let mut yaml = format!("hostname: {EHLO}\nconcurrency: 2\ndkim:\n  keys:\n");
    for (selector, alg) in [("rsa1", Algorithm::Rsa), ("ed1", Algorithm::Ed25519)] {
        let key = generate(alg).unwrap();
        let file = dir.join(format!("{selector}.pem"));
        std::fs::write(&file, &key.private_pem).unwrap();
        yaml.push_str(&format!(
            "    - {{ domain: {DOMAIN}, selector: {selector}, key_file: \"{}\" }}\n",
            file.display()
        ));
    }
    let config = dir.join("worker.yaml");
    std::fs::write(&config, yaml).unwrap();
    let worker = settings::load_worker_config(&config).unwrap();
    (config, settings::load_keys(&worker.dkim).unwrap())
}

/// Every record right: SPF through include: and mx, DKIM (the RSA record is longer than
/// 255 bytes, so it is split and the answer goes over TCP), PTR with FCrDNS, DMARC.
fn right_zone(keys: &[KeyInfo]) -> Zone {
    let mut zone = Zone::new()
        .mx(DOMAIN, 10, "mx1.example.test")
        .a("mx1.example.test", "198.51.100.10")
        .txt(DOMAIN, "v=spf1 mx include:_spf.example.test -all")
        .txt(DOMAIN, "some-verification=1")
        .txt("_spf.example.test", "v=spf1 ip4:192.0.2.0/27 ~all")
        .ptr(IP, EHLO)
        .a(EHLO, IP)
        .txt(
            "_dmarc.example.test",
            "v=DMARC1; p=reject; rua=mailto:d@example.test",
        );
    for key in keys {
        zone = zone.txt(&key.dns_name(), &key.txt);
    }
    zone
}

/// Every record present but wrong.
fn wrong_zone(keys: &[KeyInfo]) -> Zone {
    let mut zone = Zone::new()
        .null_mx(DOMAIN)
        .txt(
            DOMAIN,
            "v=spf1 ip4:192.0.2.128/25 a:other.example.test -all",
        )
        .a("other.example.test", "192.0.2.26")
        .ptr(IP, "host-25.provider.test")
        .a(EHLO, IP)
        .txt("_dmarc.example.test", "v=DMARC1; rua=mailto:d@example.test");
    for key in keys {
        // Someone else's key at the right name.
        let other = generate(key.algorithm).unwrap();
        zone = zone.txt(&key.dns_name(), &other.txt);
    }
    zone
}

async fn run(zone: Zone, keys: &[KeyInfo]) -> Report {
    let server = DnsServer::start(zone).await;
    let dns = HickoryDns::new(&[server.addr()], Duration::from_secs(2)).unwrap();
    let target = Target {
        sending_ip: IP.parse::<IpAddr>().unwrap(),
        ehlo: EHLO.into(),
        keys: keys.to_vec(),
    };
    check_all(&dns, &[DOMAIN.to_string()], &target).await
}

fn statuses(report: &Report) -> Vec<(Check, Status)> {
    report
        .host
        .iter()
        .chain(&report.domains[0].findings)
        .map(|f| (f.check, f.status))
        .collect()
}

#[tokio::test]
async fn right_records_are_ok() {
    let dir = tempfile::tempdir().unwrap();
    let (_, keys) = keys(dir.path());
    assert!(
        keys[0].txt.len() > 255,
        "the RSA record must need splitting"
    );
    let report = run(right_zone(&keys), &keys).await;
    assert!(report.ok, "{}", report.to_text());
    assert_eq!(
        statuses(&report),
        [
            (Check::Ptr, Status::Ok),
            (Check::Mx, Status::Ok),
            (Check::Spf, Status::Ok),
            (Check::Dkim, Status::Ok),
            (Check::Dkim, Status::Ok),
            (Check::Dmarc, Status::Ok),
        ]
    );
    let spf = &report.domains[0].findings[1];
    assert!(
        spf.detail.contains("include:_spf.example.test"),
        "{}",
        spf.detail
    );
}

#[tokio::test]
async fn wrong_records_are_wrong_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (_, keys) = keys(dir.path());
    let report = run(wrong_zone(&keys), &keys).await;
    assert!(!report.ok);
    assert_eq!(
        statuses(&report),
        [
            (Check::Ptr, Status::Wrong),
            (Check::Mx, Status::Wrong),
            (Check::Spf, Status::Wrong),
            (Check::Dkim, Status::Wrong),
            (Check::Dkim, Status::Wrong),
            (Check::Dmarc, Status::Wrong),
        ],
        "{}",
        report.to_text()
    );
    let findings = &report.domains[0].findings;
    assert_eq!(
        findings[1].publish.as_ref().unwrap().value,
        "v=spf1 ip4:192.0.2.25 ip4:192.0.2.128/25 a:other.example.test -all"
    );
    for (finding, key) in findings[2..4].iter().zip(&keys) {
        let publish = finding.publish.as_ref().unwrap();
        assert_eq!(
            (publish.name.as_str(), publish.value.as_str()),
            (key.dns_name().as_str(), key.txt.as_str())
        );
    }
    assert!(report.host[0].detail.contains("host-25.provider.test"));

    // Publishing the suggested records makes every required check OK.
    let mut fixed = Zone::new()
        .ptr(IP, EHLO)
        .a(EHLO, IP)
        .mx(DOMAIN, 10, "mx1.example.test");
    for finding in findings.iter().filter(|f| f.check != Check::Mx) {
        let publish = finding.publish.as_ref().unwrap();
        fixed = fixed.txt(&publish.name, &publish.value);
    }
    let report = run(fixed, &keys).await;
    assert!(report.ok, "{}", report.to_text());
}

#[tokio::test]
async fn nothing_published_is_missing_and_a_broken_server_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, keys) = keys(dir.path());
    let report = run(Zone::new(), &keys).await;
    assert!(
        statuses(&report).iter().all(|(_, s)| *s == Status::Missing),
        "{}",
        report.to_text()
    );

    let report = run(right_zone(&keys).servfail(DOMAIN), &keys).await;
    assert!(!report.ok);
    let domain: Vec<Status> = report.domains[0]
        .findings
        .iter()
        .map(|f| f.status)
        .collect();
    assert!(
        domain.iter().all(|s| *s == Status::Error),
        "{}",
        report.to_text()
    );
}

async fn keygen_dns(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keygen"))
            .arg("dns")
            .args(args)
            .env_remove("HEDWIG_HOSTNAME")
            .env_remove("HEDWIG_NAMESERVERS")
            .env_remove("HEDWIG_DKIM")
            .output(),
    )
    .await
    .expect("keygen dns finishes")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_exits_0_1_2() {
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = keys(dir.path());
    let config = config.to_str().unwrap();
    let server = DnsServer::start(right_zone(&keys)).await;
    let ns = server.addr().to_string();

    // Domains and the EHLO name come from the worker config.
    let (code, out, err) = keygen_dns(&[
        "--dkim-config",
        config,
        "--sending-ip",
        IP,
        "--nameserver",
        &ns,
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("  OK      SPF    192.0.2.25 passes"), "{out}");
    assert!(out.contains("all required records are in place"), "{out}");

    server.set(wrong_zone(&keys));
    let (code, out, err) = keygen_dns(&[
        DOMAIN,
        "--dkim-config",
        config,
        "--sending-ip",
        IP,
        "--nameserver",
        &ns,
        "--json",
    ])
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["host"][0]["status"], "WRONG");
    assert_eq!(json["domains"][0]["findings"][1]["check"], "SPF");
    assert!(json["domains"][0]["findings"][1]["publish"]["zone_line"]
        .as_str()
        .unwrap()
        .starts_with("example.test. 3600 IN TXT \"v=spf1 ip4:192.0.2.25 "));

    // --dkim-key instead of the config; an unconfigured domain is missing its key.
    server.set(right_zone(&keys));
    let key_arg = format!("{DOMAIN}:ed1:{}", dir.path().join("ed1.pem").display());
    let (code, out, _) = keygen_dns(&[
        DOMAIN,
        "other.test",
        "--dkim-key",
        &key_arg,
        "--ehlo",
        EHLO,
        "--sending-ip",
        IP,
        "--nameserver",
        &ns,
    ])
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("no DKIM key configured for other.test"),
        "{out}"
    );

    let usage: [&[&str]; 5] = [
        &[DOMAIN, "--ehlo", EHLO],             // no --sending-ip
        &[DOMAIN, "--sending-ip", IP],         // no --ehlo
        &["--sending-ip", IP, "--ehlo", EHLO], // no domain, no key
        &[
            DOMAIN,
            "--sending-ip",
            IP,
            "--ehlo",
            EHLO,
            "--dkim-key",
            "x",
        ],
        &[
            DOMAIN,
            "--sending-ip",
            IP,
            "--ehlo",
            EHLO,
            "--dkim-config",
            "/nonexistent.yaml",
        ],
    ];
    for args in usage {
        let (code, out, err) = keygen_dns(args).await;
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(!err.is_empty());
    }
}
