use std::path::PathBuf;

use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn key(domain: &str, selector: &str, file: &str) -> DkimKey {
    DkimKey {
        domain: domain.into(),
        selector: selector.into(),
        algorithm: None,
        key_file: testdata(file),
    }
}

fn both() -> Signer {
    Signer::new(&DkimConfig {
        keys: vec![
            key("example.test", "rsa", "rsa2048.pem"),
            key("example.test", "ed", "ed25519.pem"),
            key("other.test", "s1", "rsa2048-pkcs8.pem"),
        ],
        default_domain: None,
    })
    .unwrap()
}

const MESSAGE: &[u8] = b"From: Alice <alice@example.test>\r\n\
To: bob@example.org\r\n\
Subject: hello\r\n\
Date: Mon, 23 Nov 2026 04:15:31 +0000\r\n\
Message-ID: <1@example.test>\r\n\
X-Not-Signed: yes\r\n\
\r\n\
Body\r\n";

/// The DKIM-Signature fields of `sign`'s output, unfolded, one string each.
fn signatures(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let unfolded = text.replace("\r\n\t", " ");
    unfolded
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn tag<'a>(signature: &'a str, name: &str) -> &'a str {
    let body = signature.strip_prefix("DKIM-Signature: ").unwrap();
    body.split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {signature}"))
}

#[test]
fn signs_with_every_key_of_the_domain() {
    let out = both().sign(MESSAGE, 1_795_407_331).unwrap().unwrap();
    let sigs = signatures(&out);
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    assert_eq!(tag(&sigs[0], "a"), "rsa-sha256");
    assert_eq!(tag(&sigs[0], "s"), "rsa");
    assert_eq!(tag(&sigs[1], "a"), "ed25519-sha256");
    assert_eq!(tag(&sigs[1], "s"), "ed");
    for sig in &sigs {
        assert_eq!(tag(sig, "d"), "example.test");
        assert_eq!(tag(sig, "c"), "relaxed/relaxed");
        assert_eq!(tag(sig, "t"), "1795407331");
        // Each listed name once per occurrence plus once more (absent ones once).
        let h: Vec<&str> = tag(sig, "h").split(':').map(str::trim).collect();
        for name in SIGNED_HEADERS {
            let present =
                usize::from(["From", "To", "Subject", "Date", "Message-ID"].contains(name));
            let listed = h.iter().filter(|n| n.eq_ignore_ascii_case(name)).count();
            assert_eq!(listed, present + 1, "{name} in {h:?}");
        }
        assert_eq!(h.len(), SIGNED_HEADERS.len() + 5, "{h:?}");
        assert!(!h.iter().any(|n| n.eq_ignore_ascii_case("X-Not-Signed")));
        assert!(!sig.contains("l="), "no body length tag");
    }
    // The same body hash for both algorithms.
    assert_eq!(tag(&sigs[0], "bh"), tag(&sigs[1], "bh"));
    assert!(out.ends_with(b";\r\n"));
}

#[test]
fn repeated_fields_are_each_signed_and_oversigned() {
    let message = b"From: a@example.test\r\nReceived: x\r\nReceived: y\r\n\
Cc: one@example.org\r\nCc: two@example.org\r\n\r\nhi\r\n";
    let out = both().sign(message, 1).unwrap().unwrap();
    let sig = &signatures(&out)[0];
    let h: Vec<&str> = tag(sig, "h").split(':').map(str::trim).collect();
    let count = |name: &str| h.iter().filter(|n| n.eq_ignore_ascii_case(name)).count();
    assert_eq!(count("Cc"), 3, "{h:?}");
    assert_eq!(count("From"), 2, "{h:?}");
    assert_eq!(count("Reply-To"), 1, "{h:?}");
    assert_eq!(count("Received"), 0, "trace fields are not signed: {h:?}");
}

#[test]
fn signatures_are_repeatable_and_depend_on_time() {
    let signer = both();
    let a = signer.sign(MESSAGE, 1000).unwrap().unwrap();
    let b = signer.sign(MESSAGE, 1000).unwrap().unwrap();
    let c = signer.sign(MESSAGE, 1001).unwrap().unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn sign_message_prepends_and_keeps_the_bytes() {
    let signer = both();
    let signed = signer.sign_message(MESSAGE, 5).unwrap();
    let header = signer.sign(MESSAGE, 5).unwrap().unwrap();
    assert_eq!(&signed[..header.len()], &header[..]);
    assert_eq!(&signed[header.len()..], MESSAGE);
    let unsigned = b"From: x@nokey.test\r\n\r\nhi\r\n";
    assert_eq!(signer.sign_message(unsigned, 5).unwrap(), unsigned);
}

#[test]
fn key_choice_by_from_domain() {
    let signer = both();
    let pick = |from: &str| {
        let message = format!("From: {from}\r\nSubject: x\r\n\r\nbody\r\n");
        signer
            .signing_domain(message.as_bytes())
            .map(str::to_string)
    };
    assert_eq!(pick("a@example.test").as_deref(), Some("example.test"));
    assert_eq!(pick("A <a@EXAMPLE.Test>").as_deref(), Some("example.test"));
    assert_eq!(
        pick("\"Smith, J\" <j@mail.example.test>").as_deref(),
        Some("example.test")
    );
    assert_eq!(
        pick("=?utf-8?q?Jos=C3=A9?= <j@other.test>").as_deref(),
        Some("other.test")
    );
    assert_eq!(pick("a@test").as_deref(), None);
    assert_eq!(pick("a@nokey.test").as_deref(), None);
    assert_eq!(pick("a@notexample.test").as_deref(), None);
    assert_eq!(pick("undisclosed-recipients:;").as_deref(), None);
    assert_eq!(signer.signing_domain(b"Subject: no from\r\n\r\nx"), None);
    assert_eq!(signer.sign(b"Subject: no from\r\n\r\nx", 1).unwrap(), None);

    let out = signer
        .sign(b"From: o@other.test\r\n\r\nx\r\n", 1)
        .unwrap()
        .unwrap();
    let sigs = signatures(&out);
    assert_eq!(sigs.len(), 1);
    assert_eq!(tag(&sigs[0], "d"), "other.test");
    assert_eq!(tag(&sigs[0], "a"), "rsa-sha256");
}

#[test]
fn default_domain_signs_the_rest() {
    let signer = Signer::new(&DkimConfig {
        keys: vec![key("relay.test", "ed", "ed25519.pem")],
        default_domain: Some("Relay.Test.".into()),
    })
    .unwrap();
    let out = signer
        .sign(b"From: x@customer.test\r\nTo: y@z.test\r\n\r\nhi\r\n", 9)
        .unwrap()
        .unwrap();
    let sigs = signatures(&out);
    assert_eq!(tag(&sigs[0], "d"), "relay.test");
    // No From: at all still goes unsigned.
    assert_eq!(signer.sign(b"To: y@z.test\r\n\r\nhi\r\n", 9).unwrap(), None);
}

#[test]
fn idn_domains_sign_as_a_labels() {
    let signer = Signer::new(&DkimConfig {
        keys: vec![key("bücher.test", "s", "ed25519.pem")],
        default_domain: None,
    })
    .unwrap();
    assert_eq!(signer.keys()[0].domain, "xn--bcher-kva.test");
    assert_eq!(
        signer.keys()[0].dns_name(),
        "s._domainkey.xn--bcher-kva.test"
    );
    let message = "From: José <josé@Bücher.test>\r\n\r\nhi\r\n";
    let out = signer.sign(message.as_bytes(), 1).unwrap().unwrap();
    assert_eq!(tag(&signatures(&out)[0], "d"), "xn--bcher-kva.test");
}

#[test]
fn signed_header_list() {
    let message = b"from: a@example.test\r\nTo: b@x.test\r\nCC: c@x.test\r\nSubject: s\r\n\
Date: d\r\nMessage-Id: <m>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\
Content-Transfer-Encoding: 8bit\r\nReply-To: r@x.test\r\nIn-Reply-To: <p>\r\n\
References: <p>\r\nList-Unsubscribe: <mailto:u@x.test>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
Received: x\r\nX-Mailer: y\r\nSender: s@x.test\r\n\r\nbody\r\n";
    assert_eq!(present_signed_headers(message), SIGNED_HEADERS);
    let out = both().sign(message, 1).unwrap().unwrap();
    let sig = &signatures(&out)[0];
    let h: Vec<String> = tag(sig, "h")
        .split(':')
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let h: Vec<&str> = h.iter().map(|n| n.trim()).collect();
    assert_eq!(h.len(), 2 * SIGNED_HEADERS.len(), "{h:?}");
    for name in SIGNED_HEADERS {
        let lower = name.to_ascii_lowercase();
        assert_eq!(h.iter().filter(|n| **n == lower).count(), 2, "{name}");
    }
    for name in ["received", "x-mailer"] {
        assert!(!h.contains(&name));
    }
}

#[test]
fn config_errors_are_reported_together() {
    let mut wrong_alg = key("a.test", "s", "ed25519.pem");
    wrong_alg.algorithm = Some(Algorithm::Rsa);
    let config = DkimConfig {
        keys: vec![
            key("a.test", "ok", "rsa2048.pem"),
            key("a.test", "ok", "ed25519.pem"),
            wrong_alg,
            key("b.test", "s", "missing.pem"),
            key("b.test", "bad selector", "rsa2048.pem"),
            key("localhost", "s", "rsa2048.pem"),
            key("c.test", "s", "README.md"),
        ],
        default_domain: Some("nokey.test".into()),
    };
    let Err(Error::Config(text)) = Signer::new(&config) else {
        panic!("accepted");
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(
        lines[0].contains("selector ok of a.test is configured twice"),
        "{text}"
    );
    assert!(
        lines[1].contains("configured as rsa but holds an ed25519 key"),
        "{text}"
    );
    assert!(lines[2].contains("missing.pem"), "{text}");
    assert!(lines[3].contains("bad selector"), "{text}");
    assert!(lines[4].contains("localhost"), "{text}");
    assert!(
        lines[5].contains("README.md") && lines[5].contains("no PEM"),
        "{text}"
    );
    assert!(
        lines[6].contains("default_domain nokey.test has no key"),
        "{text}"
    );
}

#[test]
fn config_from_yaml_like_json() {
    let config: DkimConfig = serde_json::from_str(
        r#"{"default_domain":"a.test","keys":[{"domain":"a.test","selector":"s","algorithm":"ed25519","key_file":"/k.pem"}]}"#,
    )
    .unwrap();
    assert_eq!(config.keys[0].algorithm, Some(Algorithm::Ed25519));
    let unknown = serde_json::from_str::<DkimConfig>(r#"{"keys":[],"selctor":"x"}"#);
    assert!(unknown.unwrap_err().to_string().contains("selctor"));
    let unknown = serde_json::from_str::<DkimConfig>(
        r#"{"keys":[{"domain":"a.test","selector":"s","key_file":"k","bits":2048}]}"#,
    );
    assert!(unknown.unwrap_err().to_string().contains("bits"));
    assert!(Signer::new(&DkimConfig::default()).unwrap().is_empty());
}

#[test]
fn keys_report_their_dns_records() {
    let keys = both().keys();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0].dns_name(), "rsa._domainkey.example.test");
    assert!(keys[0].txt.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
    assert_eq!(keys[1].algorithm, Algorithm::Ed25519);
    assert_eq!(keys[0].txt, keys[2].txt, "PKCS#1 and PKCS#8 of one key");
}

#[test]
fn signer_is_shareable_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Signer>();
}

#[test]
fn sign_for_uses_only_the_authorised_domains() {
    let signer = Signer::new(&DkimConfig {
        keys: vec![
            key("example.test", "ed", "ed25519.pem"),
            key("relay.test", "ed", "ed25519.pem"),
        ],
        default_domain: Some("relay.test".into()),
    })
    .unwrap();
    let message = b"From: ceo@example.test\r\n\r\nhi\r\n";
    let d = |authorised: &[&str]| {
        let authorised: Vec<String> = authorised.iter().map(|s| s.to_string()).collect();
        signer
            .sign_for(message, &authorised, 1)
            .unwrap()
            .map(|out| tag(&signatures(&out)[0], "d").to_string())
    };
    // Nothing authorised: no signature, not even the default domain's, whatever the From:.
    assert_eq!(d(&[]), None);
    assert_eq!(d(&["example.test"]).as_deref(), Some("example.test"));
    // The first authorised domain with a key signs; a parent only when it is listed.
    assert_eq!(
        d(&["sub.example.test", "example.test"]).as_deref(),
        Some("example.test")
    );
    // Authorised domains without a key: the default domain's (non-aligned) signature.
    assert_eq!(d(&["sub.example.test"]).as_deref(), Some("relay.test"));
    assert_eq!(d(&["other.test"]).as_deref(), Some("relay.test"));
}

#[test]
fn authorised_domains_by_job() {
    use hedwig_queue::job::{Envelope, Kind};
    let envelope = |mail_from: &str, dkim: Option<&[&str]>| {
        let mut e = Envelope::new("q".into(), "web1.test".into(), mail_from.into(), vec![]);
        e.dkim_domains = dkim.map(|d| d.iter().map(|s| s.to_string()).collect());
        e
    };
    let msg = |from: &str| format!("{from}Subject: s\r\n\r\nbody\r\n").into_bytes();
    let host = "mx1.relay.test";
    // What the post office wrote wins over the From: field.
    let e = envelope("a@tenant-a.test", Some(&["tenant-a.test"]));
    assert_eq!(
        authorised_domains(&e, &msg("From: ceo@tenant-b.test\r\n"), host),
        ["tenant-a.test"]
    );
    let e = envelope("a@tenant-a.test", Some(&[]));
    assert!(authorised_domains(&e, &msg("From: a@tenant-a.test\r\n"), host).is_empty());
    // Old jobs: only when every From: address is in the envelope sender's domain.
    let old = envelope("a@Tenant-A.test", None);
    assert_eq!(
        authorised_domains(&old, &msg("From: A <b@tenant-a.test>\r\n"), host),
        ["tenant-a.test"]
    );
    for from in [
        "From: ceo@tenant-b.test\r\n",
        "From: ceo@sub.tenant-a.test\r\n",
        "From: a@tenant-a.test, ceo@tenant-b.test\r\n",
        "From: a@tenant-a.test\r\nFrom: a@tenant-a.test\r\n",
        "",
    ] {
        assert!(
            authorised_domains(&old, &msg(from), host).is_empty(),
            "{from:?}"
        );
    }
    let null = envelope("", None);
    assert!(authorised_domains(&null, &msg("From: a@tenant-a.test\r\n"), host).is_empty());
    // The worker's own bounces: its host name and parents.
    let mut bounce = envelope("", None);
    bounce.kind = Kind::Bounce;
    assert_eq!(
        authorised_domains(&bounce, &msg("From: ceo@tenant-b.test\r\n"), host),
        ["mx1.relay.test", "relay.test"]
    );
}
