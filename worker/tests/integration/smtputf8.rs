//! An address that needs SMTPUTF8 fails for good at a server without it, without affecting
//! the other recipients; with SMTPUTF8 it is delivered with the parameter set.

use crate::common;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Extension};
use hedwig_testkit::Beanstalkd;
use worker::plan::Status;

#[tokio::test]
async fn utf8_local_part_needs_the_extension() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("old.test", 10, "mx.old.test")
            .a("mx.old.test", "127.0.4.90")
            .mx("new.test", 10, "mx.new.test")
            .a("mx.new.test", "127.0.4.91")
            .mx("xn--bcher-kva.test", 10, "mx.new.test"),
    )
    .await;
    let old = common::mx("127.0.4.90", Behaviour::new().without(Extension::SmtpUtf8)).await;
    let new = common::mx("127.0.4.91", Behaviour::new()).await;
    let bs = Beanstalkd::start();
    let d = common::deliverer(common::config(&bs.url(), dns.addr()));

    let out = common::deliver(&d, "old.test", &["j\u{f6}rg@old.test", "plain@old.test"]).await;
    let by: std::collections::HashMap<_, _> = out.into_iter().collect();
    let utf8 = &by["j\u{f6}rg@old.test"];
    assert_eq!(
        (utf8.status, utf8.reason.as_str()),
        (Status::Bounced, "smtputf8"),
        "{utf8:?}"
    );
    assert!(utf8.response.contains("SMTPUTF8"), "{}", utf8.response);
    assert_eq!(by["plain@old.test"].status, Status::Delivered);
    assert_eq!(old.received()[0].rcpt_to, ["plain@old.test"]);

    let out = common::deliver(&d, "new.test", &["j\u{f6}rg@new.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    let r = &new.received()[0];
    assert!(r.mail_params.contains("SMTPUTF8"), "{}", r.mail_params);
    assert_eq!(r.rcpt_to, ["j\u{f6}rg@new.test"]);

    // An IDN domain with an ASCII local part goes out as A-labels, no SMTPUTF8 needed.
    let out = common::deliver(&d, "xn--bcher-kva.test", &["a@b\u{fc}cher.test"]).await;
    assert_eq!(out[0].0, "a@b\u{fc}cher.test");
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    let r = &new.received()[1];
    assert_eq!(r.rcpt_to, ["a@xn--bcher-kva.test"]);
    assert!(!r.mail_params.contains("SMTPUTF8"), "{}", r.mail_params);
}
