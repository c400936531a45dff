//! SPF parsing and evaluation against an in-memory DNS.

use super::*;
use crate::dns_check::testdns::TestDns;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn recognizes_spf_records() {
    assert!(is_spf("v=spf1"));
    assert!(is_spf("V=SPF1 -all"));
    assert!(!is_spf("v=spf10 -all"));
    assert!(!is_spf("v=DKIM1; p=x"));
    assert!(!is_spf("spf1"));
}

#[test]
fn parses_every_mechanism() {
    let r = parse(
        "v=spf1 +a -mx:Mail.Example.com/24//64 ~ip4:192.0.2.0/24 ?ip6:2001:db8::/32 \
         ip4:198.51.100.7 a//96 include:_spf.example.net exists:x.example ptr \
         exp=explain.example unknown=1 redirect=other.example -all",
    )
    .unwrap();
    let m: Vec<_> = r
        .directives
        .iter()
        .map(|d| (d.qualifier, d.mechanism.clone()))
        .collect();
    assert_eq!(
        m[0],
        (
            Qualifier::Pass,
            Mechanism::A {
                domain: None,
                v4: 32,
                v6: 128
            }
        )
    );
    assert_eq!(
        m[1],
        (
            Qualifier::Fail,
            Mechanism::Mx {
                domain: Some("mail.example.com".into()),
                v4: 24,
                v6: 64
            }
        )
    );
    assert_eq!(
        m[2],
        (
            Qualifier::SoftFail,
            Mechanism::Ip4("192.0.2.0/24".parse().unwrap())
        )
    );
    assert_eq!(
        m[3],
        (
            Qualifier::Neutral,
            Mechanism::Ip6("2001:db8::/32".parse().unwrap())
        )
    );
    assert_eq!(m[4].1, Mechanism::Ip4("198.51.100.7/32".parse().unwrap()));
    assert_eq!(
        m[5].1,
        Mechanism::A {
            domain: None,
            v4: 32,
            v6: 96
        }
    );
    assert_eq!(m[6].1, Mechanism::Include("_spf.example.net".into()));
    assert_eq!(m[7].1, Mechanism::Exists("x.example".into()));
    assert_eq!(m[8].1, Mechanism::Ptr(None));
    assert_eq!(m[9], (Qualifier::Fail, Mechanism::All));
    assert_eq!(r.redirect.as_deref(), Some("other.example"));
}

#[test]
fn rejects_broken_terms() {
    for bad in [
        "v=spf1 ip4:300.1.1.1",
        "v=spf1 ip4:192.0.2.0/33",
        "v=spf1 ip6:zz::1",
        "v=spf1 include",
        "v=spf1 all:x",
        "v=spf1 a/40",
        "v=spf1 frobnicate",
        "v=spf1 redirect=a.example redirect=b.example",
        "spf1 -all",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

fn dns() -> TestDns {
    TestDns::default()
        .txt(
            "example.com",
            "v=spf1 ip4:198.51.100.0/24 include:_spf.example.net mx -all",
        )
        .txt("example.com", "google-site-verification=abc")
        .txt(
            "_spf.example.net",
            "v=spf1 ip6:2001:db8::/32 a:out.example.net/28 ~all",
        )
        .a("out.example.net", "203.0.113.1")
        .mx("example.com", 10, "mx.example.com")
        .a("mx.example.com", "192.0.2.99")
}

async fn result(dns: &TestDns, addr: &str, domain: &str) -> Evaluation {
    check_host(dns, ip(addr), domain).await
}

#[tokio::test]
async fn ip_a_mx_include_and_cidr() {
    let dns = dns();
    let e = result(&dns, "198.51.100.200", "example.com").await;
    assert_eq!(e.result, SpfResult::Pass);
    assert_eq!(
        e.matched.as_deref(),
        Some("ip4:198.51.100.0/24 at example.com")
    );
    assert_eq!(e.lookups, 0);

    let e = result(&dns, "2001:db8::25", "example.com").await;
    assert_eq!(e.result, SpfResult::Pass);
    assert!(e
        .matched
        .unwrap()
        .contains("-> ip6:2001:db8::/32 at _spf.example.net"));

    // a:/28 covers .1 to .15
    assert_eq!(
        result(&dns, "203.0.113.14", "example.com").await.result,
        SpfResult::Pass
    );
    let e = result(&dns, "203.0.113.16", "example.com").await;
    // The include soft-fails (no match), mx does not match, -all fails.
    assert_eq!(e.result, SpfResult::Fail);
    assert_eq!(e.matched.as_deref(), Some("-all at example.com"));
    assert_eq!(e.lookups, 3);

    let e = result(&dns, "192.0.2.99", "example.com").await;
    assert_eq!(e.result, SpfResult::Pass);
    assert_eq!(
        e.matched.as_deref(),
        Some("mx at example.com (mx.example.com)")
    );
    assert_eq!(e.record.as_deref(), Some(dns.first_txt("example.com")));
}

#[tokio::test]
async fn redirect_none_and_errors() {
    let dns = TestDns::default()
        .txt("a.example", "v=spf1 redirect=b.example")
        .txt("b.example", "v=spf1 ip4:192.0.2.25 -all")
        .txt("c.example", "v=spf1 include:nothing.example -all")
        .txt("two.example", "v=spf1 -all")
        .txt("two.example", "v=spf1 ~all")
        .txt("loop.example", "v=spf1 include:loop.example -all")
        .txt("bad.example", "v=spf1 ip4:1.2.3")
        .txt("plus.example", "v=spf1 +all")
        .txt("macro.example", "v=spf1 exists:%{i}.spf.example ptr ?all")
        .fail("broken.example")
        .txt("d.example", "v=spf1 include:broken.example -all");
    let r = |d: &'static str| {
        let dns = &dns;
        async move { result(dns, "192.0.2.25", d).await }
    };
    let e = r("a.example").await;
    assert_eq!(e.result, SpfResult::Pass);
    assert_eq!(
        e.matched.as_deref(),
        Some("redirect=b.example at a.example -> ip4:192.0.2.25 at b.example")
    );
    assert_eq!(
        result(&dns, "192.0.2.26", "a.example").await.result,
        SpfResult::Fail
    );
    assert_eq!(r("none.example").await.result, SpfResult::None);
    assert!(
        matches!(r("c.example").await.result, SpfResult::PermError(w) if w.contains("no SPF record"))
    );
    assert!(
        matches!(r("two.example").await.result, SpfResult::PermError(w) if w.contains("2 SPF records"))
    );
    assert!(
        matches!(r("loop.example").await.result, SpfResult::PermError(w) if w.contains("more than 10"))
    );
    assert!(
        matches!(r("bad.example").await.result, SpfResult::PermError(w) if w.contains("ip4:1.2.3"))
    );
    let e = r("plus.example").await;
    assert_eq!((e.result, e.pass_all), (SpfResult::Pass, true));
    let e = r("macro.example").await;
    assert_eq!(e.result, SpfResult::Neutral);
    assert_eq!(e.notes.len(), 2, "{:?}", e.notes);
    assert!(matches!(
        r("d.example").await.result,
        SpfResult::TempError(_)
    ));
    assert!(matches!(
        r("broken.example").await.result,
        SpfResult::TempError(_)
    ));
}

#[test]
fn suggestions() {
    assert_eq!(new_record(ip("192.0.2.25")), "v=spf1 ip4:192.0.2.25 ~all");
    assert_eq!(
        new_record(ip("2001:db8::25")),
        "v=spf1 ip6:2001:db8::25 ~all"
    );
    assert_eq!(
        add_ip("v=spf1 mx  include:x.example -all", ip("192.0.2.25")),
        "v=spf1 ip4:192.0.2.25 mx include:x.example -all"
    );
    assert_eq!(
        add_ip("v=spf1 +all", ip("192.0.2.25")),
        "v=spf1 ip4:192.0.2.25 ~all"
    );
    // The suggestion passes.
    let fixed = add_ip("v=spf1 ip4:198.51.100.1 -all", ip("192.0.2.25"));
    let dns = TestDns::default().txt("e.example", &fixed);
    let e = futures_lite_block_on(check_host(&dns, ip("192.0.2.25"), "e.example"));
    assert_eq!(e.result, SpfResult::Pass);
}

fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}
