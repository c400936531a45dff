//! The worker signs only for a domain the post office authorised (issue 11 F1): a job put
//! straight into beanstalkd whose From: names a domain the worker has a key for is not
//! signed for it unless the job says so. Jobs in the format of an older post office (no
//! `dkim_domains` field) are signed only when the From: domain is the envelope sender's
//! domain, which that post office checked. Signatures are verified with python3-dkim.

use crate::common;

use std::path::Path;
use std::time::Duration;

use hedwig_message::dkim::{generate, Algorithm, DkimConfig, DkimKey};
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Received};
use hedwig_testkit::Beanstalkd;

const MX: &str = "127.0.140.10";

/// A message whose From: is `from`, with `subject` to find it again at the receiver.
fn message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 04:00:00 +0000\r\nMessage-ID: <{subject}@x.test>\r\n\r\n\
         body of {subject}\r\n"
    )
    .into_bytes()
}

/// A job body exactly as a post office from before `dkim_domains` wrote it.
fn old_format_job(mail_from: &str, message: &[u8]) -> Vec<u8> {
    let header = serde_json::json!({
        "v": 1,
        "queue_id": hedwig_core::new_queue_id(),
        "host": "web1.example.test",
        "received_at": hedwig_core::unix_now(),
        "mail_from": mail_from,
        "rcpt_to": ["rcpt@example.test"],
        "kind": "message",
    });
    [header.to_string().as_bytes(), b"\n", message].concat()
}

async fn put_raw(beanstalkd: &str, body: &[u8]) {
    let mut c = beanstalk::Client::connect(beanstalkd).await.unwrap();
    c.use_tube(hedwig_queue::tubes::TUBE_OUTBOUND)
        .await
        .unwrap();
    c.put(body, 1024, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
}

/// Runs python3-dkim on `data` with DNS at `dns`; (all signatures pass, its output).
async fn verify(dns: &DnsServer, data: &[u8]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, data).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../message/tests/dkim_verify.py");
    let run = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(dns.addr().ip().to_string())
        .arg(dns.addr().port().to_string())
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the verifier finishes")
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn by_subject<'a>(got: &'a [Received], subject: &str) -> &'a Received {
    let needle = format!("Subject: {subject}\r\n");
    got.iter()
        .find(|r| r.data.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or_else(|| panic!("{subject} not delivered"))
}

fn signed_domains(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let header = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .replace("\r\n\t", " ");
    header
        .split("\r\n")
        .filter(|l| l.starts_with("DKIM-Signature:"))
        .filter_map(|l| {
            l.split(';')
                .map(str::trim)
                .find_map(|t| t.strip_prefix("d="))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn only_authorised_domains_are_signed() {
    let bs = Beanstalkd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    let mut zone = Zone::new()
        .mx("example.test", 10, "mx.example.test")
        .a("mx.example.test", MX)
        .mx("tenant-a.test", 10, "mx.example.test");
    for domain in ["tenant-a.test", "tenant-b.test", "hedwig.test"] {
        let key = generate(Algorithm::Ed25519).unwrap();
        let key_file = dir.path().join(format!("{domain}.pem"));
        std::fs::write(&key_file, &key.private_pem).unwrap();
        zone = zone.txt(&format!("s1._domainkey.{domain}"), &key.txt);
        keys.push(DkimKey {
            domain: domain.into(),
            selector: "s1".into(),
            algorithm: None,
            key_file,
        });
    }
    let dns = DnsServer::start(zone).await;
    let mx = common::mx(
        MX,
        Behaviour::new().rcpt("refused@example.test", "550 5.1.1 no such user"),
    )
    .await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.dkim = DkimConfig {
        keys,
        default_domain: None,
    };
    let worker = common::start(config);

    // Old format, From: tenant-b behind envelope tenant-a: not signed for tenant-b.
    put_raw(
        &bs.url(),
        &old_format_job(
            "app@tenant-a.test",
            &message("CEO <ceo@tenant-b.test>", "old-foreign"),
        ),
    )
    .await;
    // Old format, null sender and a From: the worker has a key for: not signed.
    put_raw(
        &bs.url(),
        &old_format_job("", &message("ceo@tenant-b.test", "old-null")),
    )
    .await;
    // Old format, From: domain = envelope domain: signed, and it verifies.
    put_raw(
        &bs.url(),
        &old_format_job(
            "app@tenant-a.test",
            &message("App <app@tenant-a.test>", "old-aligned"),
        ),
    )
    .await;

    // New format: the post office said which domains; the From: alone decides nothing.
    let mut job = common::job(
        "app@tenant-a.test",
        &["rcpt@example.test"],
        &message("app@tenant-a.test", "new-none"),
    );
    job.envelope.dkim_domains = Some(vec![]);
    common::enqueue(&bs.url(), &job).await;
    let mut job = common::job(
        "app@tenant-a.test",
        &["rcpt@example.test"],
        &message("ceo@tenant-b.test", "new-foreign"),
    );
    job.envelope.dkim_domains = Some(vec!["sub.tenant-b.test".into()]);
    common::enqueue(&bs.url(), &job).await;
    let mut job = common::job(
        "app@tenant-a.test",
        &["rcpt@example.test"],
        &message("app@tenant-a.test", "new-authorised"),
    );
    job.envelope.dkim_domains = Some(vec!["tenant-a.test".into()]);
    common::enqueue(&bs.url(), &job).await;
    // A refused recipient: the worker's own bounce is signed for its own name's domain.
    let mut job = common::job(
        "app@tenant-a.test",
        &["refused@example.test"],
        &message("app@tenant-a.test", "refused"),
    );
    job.envelope.dkim_domains = Some(vec![]);
    common::enqueue(&bs.url(), &job).await;

    let got = mx
        .wait_for(7, Duration::from_secs(15))
        .await
        .expect("all delivered");
    for subject in ["old-foreign", "old-null", "new-none", "new-foreign"] {
        let data = &by_subject(&got, subject).data;
        assert_eq!(
            signed_domains(data),
            Vec::<String>::new(),
            "{subject}: {}",
            String::from_utf8_lossy(data)
        );
    }
    let aligned = &by_subject(&got, "old-aligned").data;
    assert_eq!(signed_domains(aligned), ["tenant-a.test"]);
    let (passed, out) = verify(&dns, aligned).await;
    assert!(passed, "{out}");
    let authorised = &by_subject(&got, "new-authorised").data;
    assert_eq!(signed_domains(authorised), ["tenant-a.test"]);
    let (passed, out) = verify(&dns, authorised).await;
    assert!(passed, "{out}");
    let bounce = got
        .iter()
        .find(|r| r.mail_from.is_empty() && r.rcpt_to == ["app@tenant-a.test"])
        .expect("a bounce");
    assert_eq!(signed_domains(&bounce.data), ["hedwig.test"]);
    let (passed, out) = verify(&dns, &bounce.data).await;
    assert!(passed, "{out}");
    worker.stop().await;
}
