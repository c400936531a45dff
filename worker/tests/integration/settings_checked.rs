//! Settings are parsed once at start: a transport or TLS key is matched whatever its case or
//! script (it is turned into the lowercase A-label form the recipient domain has), and a value
//! that cannot be used is a start-up error naming its key, never skipped at delivery time.

use crate::common;

use std::process::Command;
use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

// Before: the keys were looked up as written, so `Special.TEST` and `bücher.test` never
// matched the recipient domains `special.test` / `xn--bcher-kva.test`, and the mail went to
// the domains' MX (here: none, so it failed) instead of the configured transport.
#[tokio::test]
async fn transport_keys_in_capitals_or_u_labels_still_route() {
    let dns = DnsServer::start(Zone::new()).await;
    let special = common::mx("127.0.180.1", Behaviour::new()).await;
    let mut config = common::config("127.0.0.1:1", dns.addr());
    for key in ["Special.TEST", "bücher.test"] {
        config
            .transports
            .insert(key.into(), "[127.0.180.1]:25".into());
    }
    let deliverer = common::deliverer(config);
    for (domain, rcpt) in [
        ("special.test", "a@special.test"),
        ("xn--bcher-kva.test", "b@xn--bcher-kva.test"),
    ] {
        let outcomes = common::deliver(&deliverer, domain, &[rcpt]).await;
        assert_eq!(
            outcomes[0].1.status,
            worker::plan::Status::Delivered,
            "{domain}: {outcomes:?}"
        );
    }
    let got = special
        .wait_for(2, Duration::from_secs(10))
        .await
        .expect("both via the transport");
    assert_eq!(got[0].rcpt_to, ["a@special.test"]);
    assert_eq!(got[1].rcpt_to, ["b@xn--bcher-kva.test"]);
}

// Before: `build` accepted these and the worker started; the bad transport key was never
// matched and the address-less beanstalkd server was retried forever by its tasks.
#[test]
fn build_refuses_unusable_values_naming_the_key() {
    let mut config = common::config("nohost", "127.0.0.1:53".parse().unwrap());
    config
        .transports
        .insert("not a domain".into(), "[127.0.180.2]:25".into());
    config
        .tls
        .domains
        .insert("bad..example".into(), worker::config::TlsMode::Required);
    let err = match worker::build(config) {
        Ok(_) => panic!("a config with unusable values was accepted"),
        Err(e) => e.to_string(),
    };
    for key in [
        "beanstalkd",
        "transports.not a domain",
        "tls.domains.bad..example",
    ] {
        assert!(err.contains(key), "{key} not named in {err}");
    }
}

#[test]
fn check_config_names_an_unusable_transport_key() {
    let bs = Beanstalkd::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.yaml");
    std::fs::write(
        &path,
        format!(
            "beanstalkd: {}\nhostname: relay.example.test\n\
             transports:\n  \"not a domain\": \"[127.0.180.2]:25\"\n  Fine.Example: \"[127.0.180.2]\"\n",
            bs.url()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.arg("--config").arg(&path).arg("check-config");
    for (k, _) in std::env::vars() {
        if k.starts_with("HEDWIG_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("transports.not a domain"), "{err}");
    assert!(!err.contains("Fine.Example"), "{err}");
}
