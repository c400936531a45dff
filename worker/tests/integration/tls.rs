//! STARTTLS policies: opportunistic (any certificate), none, and required (verified
//! certificate, else deferred).

use crate::common;

use std::io::Write;

use base64::Engine;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use worker::config::TlsMode;
use worker::plan::Status;

fn pem_file(mx: &SmtpReceiver) -> tempfile::NamedTempFile {
    let der = mx.cert().certificate_der();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(pem.as_bytes()).unwrap();
    f
}

#[tokio::test]
async fn opportunistic_none_and_required() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("tls.test", 10, "mx.tls.test")
            .a("mx.tls.test", "127.0.4.80")
            .mx("plain.test", 10, "mx.plain.test")
            .a("mx.plain.test", "127.0.4.81"),
    )
    .await;
    let tls_mx = common::mx("127.0.4.80", Behaviour::new().starttls()).await;
    let plain_mx = common::mx("127.0.4.81", Behaviour::new()).await;
    let bs = Beanstalkd::start();
    let ca = pem_file(&tls_mx);

    // Opportunistic (default): self-signed certificate accepted.
    let mut config = common::config(&bs.url(), dns.addr());
    config.tls.ca_file = Some(ca.path().to_path_buf());
    let d = common::deliverer(config.clone());
    let out = common::deliver(&d, "tls.test", &["a@tls.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert!(tls_mx.received()[0].tls);
    // No STARTTLS offered: plaintext.
    let out = common::deliver(&d, "plain.test", &["a@plain.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered);
    assert!(!plain_mx.received()[0].tls);

    // none: plaintext even when offered.
    config.tls.domains.insert("tls.test".into(), TlsMode::None);
    // required: not offered → deferred, never sent in the clear.
    config
        .tls
        .domains
        .insert("plain.test".into(), TlsMode::Required);
    let d = common::deliverer(config.clone());
    let out = common::deliver(&d, "tls.test", &["a@tls.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered);
    assert!(!tls_mx.received()[1].tls);
    let out = common::deliver(&d, "plain.test", &["a@plain.test"]).await;
    assert_eq!(
        (out[0].1.status, out[0].1.reason.as_str()),
        (Status::Deferred, "tls"),
        "{:?}",
        out[0].1
    );
    assert_eq!(plain_mx.received().len(), 1);

    // required: the certificate (issued for the IP) does not match the MX name → deferred.
    config
        .tls
        .domains
        .insert("tls.test".into(), TlsMode::Required);
    let d = common::deliverer(config.clone());
    let out = common::deliver(&d, "tls.test", &["a@tls.test"]).await;
    assert_eq!(
        (out[0].1.status, out[0].1.reason.as_str()),
        (Status::Deferred, "tls"),
        "{:?}",
        out[0].1
    );
    assert_eq!(tls_mx.received().len(), 2);

    // required through a transport to the IP the certificate names, trusted via ca_file.
    config
        .transports
        .insert("tls.test".into(), "[127.0.4.80]".into());
    let d = common::deliverer(config.clone());
    let out = common::deliver(&d, "tls.test", &["a@tls.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert!(tls_mx.received()[2].tls);
    // Without the CA the same is deferred.
    config.tls.ca_file = None;
    let d = common::deliverer(config);
    let out = common::deliver(&d, "tls.test", &["a@tls.test"]).await;
    assert_eq!(out[0].1.status, Status::Deferred, "{:?}", out[0].1);
    assert_eq!(tls_mx.received().len(), 3);
}
