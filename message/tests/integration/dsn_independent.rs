//! A bounce made by `hedwig_message::dsn` read by an independent MIME parser (Python's
//! `email` package), and DKIM-signed by the relay's default domain and verified by
//! python3-dkim over the test DNS: what a receiving mail system sees.

use std::path::Path;
use std::time::Duration;

use hedwig_message::dkim::{DkimConfig, DkimKey, Signer};
use hedwig_message::dsn::{bounce_job, Params};
use hedwig_queue::job::{Envelope, Failure};
use hedwig_testkit::dns::{DnsServer, Zone};

const ORIGINAL: &[u8] = b"From: Alice <alice@customer.test>\r\n\
To: bob@example.org\r\n\
Subject: Invoice\r\n\
Message-ID: <inv-7@customer.test>\r\n\
\r\n\
Body not quoted.\r\n";

async fn python(script: &str, args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let run = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("python finishes within 60 s")
        .expect("python3 runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn python_reads_the_bounce_and_dkim_verifies_it() {
    let mut original = Envelope::new(
        "0190AB12CD34EF56".into(),
        "web1.customer.test".into(),
        "alice@customer.test".into(),
        vec!["bob@example.org".into()],
    );
    original.received_at = 1_795_400_000;
    let failed = vec![(
        "bob@example.org".to_string(),
        Failure {
            at: 1_795_407_000,
            reason: "rejected".into(),
            code: Some(550),
            dsn: Some("5.1.1".into()),
            response: "550 5.1.1 <bob@example.org>: Recipient address rejected".into(),
            relay: Some("mx.example.org[127.0.0.2]:25".into()),
        },
    )];
    let job = bounce_job(
        &Params {
            hostname: "relay.hedwig.test",
            from: None,
            original: &original,
            message: ORIGINAL,
            failed: &failed,
            now: 1_795_407_331,
            limits: Default::default(),
        },
        "BOUNCE1".into(),
    )
    .unwrap();

    // The relay signs its bounces with its own domain's key.
    let signer = Signer::new(&DkimConfig {
        keys: vec![DkimKey {
            domain: "hedwig.test".into(),
            selector: "ed".into(),
            algorithm: None,
            key_file: Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ed25519.pem"),
        }],
        default_domain: None,
    })
    .unwrap();
    let signed = signer.sign_message(&job.message, 1_795_407_331).unwrap();
    assert_ne!(
        signed, job.message,
        "MAILER-DAEMON@relay.hedwig.test is signed"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bounce.eml");
    std::fs::write(&path, &signed).unwrap();
    let path = path.to_str().unwrap();

    let (ok, json) = python("dsn_report.py", &[path]).await;
    assert!(ok, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["from"],
        "Mail Delivery System <MAILER-DAEMON@relay.hedwig.test>"
    );
    assert_eq!(report["to"], "alice@customer.test");
    assert_eq!(report["subject"], "Undelivered Mail Returned to Sender");
    assert_eq!(report["auto_submitted"], "auto-replied");
    assert_eq!(report["content_type"], "multipart/report");
    assert_eq!(report["report_type"], "delivery-status");
    assert_eq!(report["defects"], serde_json::json!([]));
    assert_eq!(
        report["parts"],
        serde_json::json!([
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ])
    );
    assert!(report["text"]
        .as_str()
        .unwrap()
        .contains("550 5.1.1 <bob@example.org>: Recipient address rejected"));
    let status = report["status"].as_array().unwrap();
    assert_eq!(status.len(), 2, "{status:?}");
    assert_eq!(status[0]["reporting-mta"], "dns; relay.hedwig.test");
    assert_eq!(status[1]["final-recipient"], "rfc822; bob@example.org");
    assert_eq!(status[1]["action"], "failed");
    assert_eq!(status[1]["status"], "5.1.1");
    assert_eq!(status[1]["remote-mta"], "dns; mx.example.org");
    assert_eq!(
        status[1]["diagnostic-code"],
        "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected"
    );
    let headers = report["headers"].as_str().unwrap();
    assert!(
        headers.contains("Message-ID: <inv-7@customer.test>"),
        "{headers}"
    );
    assert!(!headers.contains("Body not quoted"));

    let key = &signer.keys()[0];
    let dns = DnsServer::start(Zone::new().txt(&key.dns_name(), &key.txt)).await;
    let (ok, out) = python(
        "dkim_verify.py",
        &[
            &dns.addr().ip().to_string(),
            &dns.addr().port().to_string(),
            path,
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "0 hedwig.test ed ed25519-sha256 pass");
}
