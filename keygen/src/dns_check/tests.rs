//! The checks against an in-memory DNS: each right and wrong case, and the report.

use std::path::PathBuf;

use hedwig_message::dkim::Algorithm;

use super::testdns::TestDns;
use super::*;

const IP: &str = "192.0.2.25";
const EHLO: &str = "mail.example.com";

fn ip() -> IpAddr {
    IP.parse().unwrap()
}

fn key(txt: &str) -> KeyInfo {
    KeyInfo {
        domain: "example.com".into(),
        selector: "s1".into(),
        algorithm: Algorithm::Ed25519,
        txt: txt.into(),
        key_file: PathBuf::from("/etc/hedwig/dkim/example.com.s1.ed25519.pem"),
    }
}

const KEY_TXT: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

/// Everything right for example.com.
fn good() -> TestDns {
    TestDns::default()
        .mx("example.com", 10, "mx.example.com")
        .txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("s1._domainkey.example.com", KEY_TXT)
        .txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
        .ptr(IP, EHLO)
        .a(EHLO, IP)
}

fn target() -> Target {
    Target {
        sending_ip: ip(),
        ehlo: EHLO.into(),
        keys: vec![key(KEY_TXT)],
    }
}

#[tokio::test]
async fn all_right_is_ok() {
    let report = check_all(&good(), &["example.com".into()], &target()).await;
    assert!(report.ok, "{}", report.to_text());
    let statuses: Vec<_> = report.domains[0]
        .findings
        .iter()
        .map(|f| (f.check, f.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (Check::Mx, Status::Ok),
            (Check::Spf, Status::Ok),
            (Check::Dkim, Status::Ok),
            (Check::Dmarc, Status::Ok)
        ]
    );
    assert_eq!(report.host[0].status, Status::Ok);
    assert!(report
        .to_text()
        .contains("all required records are in place"));
}

#[tokio::test]
async fn nothing_published_is_missing_with_records_to_publish() {
    let report = check_all(&TestDns::default(), &["example.com".into()], &target()).await;
    assert!(!report.ok);
    let f = &report.domains[0].findings;
    assert!(f.iter().all(|f| f.status == Status::Missing), "{f:?}");
    let lines: Vec<&str> = f
        .iter()
        .map(|f| f.publish.as_ref().unwrap().zone_line.as_str())
        .collect();
    assert_eq!(
        lines,
        [
            "example.com. 3600 IN MX 10 mail.example.com.",
            "example.com. 3600 IN TXT \"v=spf1 ip4:192.0.2.25 ~all\"",
            &format!("s1._domainkey.example.com. 3600 IN TXT \"{KEY_TXT}\""),
            "_dmarc.example.com. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc@example.com\"",
        ]
    );
    assert_eq!(report.host[0].status, Status::Missing);
    assert_eq!(
        report.host[0].publish.as_ref().unwrap().zone_line,
        "25.2.0.192.in-addr.arpa. 3600 IN PTR mail.example.com."
    );
}

#[tokio::test]
async fn mx_problems_are_warnings_only() {
    let dns = good();
    let mut report = check_all(&dns, &["example.com".into()], &target()).await;
    assert!(report.ok);
    let no_mx = check_mx(&TestDns::default(), "example.com").await;
    assert_eq!(
        (no_mx.status, no_mx.warning_only, no_mx.fails()),
        (Status::Missing, true, false)
    );
    let null = check_mx(&TestDns::default().mx("example.com", 0, ""), "example.com").await;
    assert_eq!(null.status, Status::Wrong);
    report.domains[0].findings[0] = no_mx;
    assert!(
        report.to_text().contains("MISSING MX     no MX"),
        "{}",
        report.to_text()
    );
    assert!(report.to_text().contains("(warning)"));
}

#[tokio::test]
async fn spf_wrong_cases() {
    let check = |record: &'static str| async move {
        check_spf(
            &TestDns::default().txt("example.com", record),
            "example.com",
            ip(),
        )
        .await
    };
    let f = check("v=spf1 ip4:198.51.100.1 -all").await;
    assert_eq!(f.status, Status::Wrong);
    assert!(f.detail.contains("fail by -all"), "{}", f.detail);
    assert_eq!(
        f.publish.unwrap().value,
        "v=spf1 ip4:192.0.2.25 ip4:198.51.100.1 -all"
    );
    let f = check("v=spf1 ip4:198.51.100.1 ~all").await;
    assert!(f.detail.contains("softfail"), "{}", f.detail);
    let f = check("v=spf1 +all").await;
    assert_eq!(f.status, Status::Wrong);
    assert!(f.detail.contains("anyone"), "{}", f.detail);
    assert_eq!(f.publish.unwrap().value, "v=spf1 ip4:192.0.2.25 ~all");
    let f = check("v=spf1 include:gone.example -all").await;
    assert_eq!(f.status, Status::Wrong);
    assert!(f.detail.contains("permerror"), "{}", f.detail);
    let f = check_spf(&TestDns::default().fail("example.com"), "example.com", ip()).await;
    assert_eq!(f.status, Status::Error);
    assert!(f.fails());
}

#[tokio::test]
async fn dkim_wrong_key_is_wrong_with_the_right_record() {
    let dns = good();
    let other = key("v=DKIM1; k=ed25519; p=AAAAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    let f = check_dkim(&dns, &other).await;
    assert_eq!(f.status, Status::Wrong);
    assert!(f.detail.contains("different public key"), "{}", f.detail);
    assert_eq!(f.publish.unwrap().value, other.txt);
    // A domain with no configured key is missing DKIM.
    let report = check_all(
        &dns,
        &["example.com".into()],
        &Target {
            keys: vec![],
            ..target()
        },
    )
    .await;
    let f = &report.domains[0].findings[2];
    assert_eq!((f.check, f.status), (Check::Dkim, Status::Missing));
    assert!(f.detail.contains("keygen dkim example.com"));
}

#[tokio::test]
async fn dmarc_is_found_at_the_organizational_domain() {
    let dns = good();
    let f = check_dmarc(&dns, "news.example.com").await;
    assert_eq!(f.status, Status::Ok);
    assert!(f.detail.contains("(from _dmarc.example.com)"));
    let f = check_dmarc(
        &TestDns::default().txt("_dmarc.example.com", "v=DMARC1; rua=x"),
        "example.com",
    )
    .await;
    assert_eq!(f.status, Status::Wrong);
}

#[tokio::test]
async fn ptr_wrong_cases() {
    let f = check_ptr(
        &TestDns::default()
            .ptr(IP, "host-25.provider.example")
            .a(EHLO, IP),
        ip(),
        EHLO,
    )
    .await;
    assert_eq!(f.status, Status::Wrong);
    assert!(f.detail.contains("host-25.provider.example"));
    let f = check_ptr(
        &TestDns::default().ptr(IP, EHLO).a(EHLO, "192.0.2.26"),
        ip(),
        EHLO,
    )
    .await;
    assert_eq!(f.status, Status::Wrong);
    assert!(f.detail.contains("192.0.2.26"));
    assert_eq!(
        f.publish.unwrap().zone_line,
        "mail.example.com. 3600 IN A 192.0.2.25"
    );
    let f = check_ptr(&TestDns::default().ptr(IP, EHLO), ip(), EHLO).await;
    assert!(f.detail.contains("no address"));
}

#[tokio::test]
async fn report_serializes_for_scripts() {
    let report = check_all(&good(), &["example.com".into()], &target()).await;
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["domains"][0]["findings"][1]["check"], "SPF");
    assert_eq!(json["domains"][0]["findings"][1]["status"], "OK");
    assert_eq!(json["host"][0]["check"], "PTR");
}
