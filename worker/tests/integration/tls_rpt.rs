//! TLS-RPT (RFC 8460): the worker counts its MTA-STS checks and sends the aggregate report
//! to the `rua` of `_smtp._tls.<domain>`. The testkit DNS server publishes the MTA-STS and
//! TLS-RPT records; one small HTTPS server (certificates trusted through `tls.ca_file`)
//! serves policies (`GET`) and takes reports (`POST`); SMTP receivers play the MX hosts.
//! Report periods of 2 s (`tls_rpt.interval`) stand in for UTC days.
//! Addresses: 127.0.240.0/24.

use crate::common;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hedwig_testkit::beanstalkd::Beanstalkd;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::tls::TestCert;
use mail_parser::MimeHeaders;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use worker::plan::Status;

/// A report as the HTTPS receiver got it: its Content-Type and the gunzipped JSON.
type Reports = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Answers `GET /.well-known/mta-sts.txt` with the policy of the `Host` asked for, and
/// `POST /tlsrpt` by gunzipping and keeping the report (200).
struct Https {
    task: tokio::task::JoinHandle<()>,
}

impl Https {
    async fn start(
        ip: &str,
        cert: &TestCert,
        policies: HashMap<String, String>,
        reports: Reports,
    ) -> Self {
        let addr: SocketAddr = format!("{ip}:443").parse().unwrap();
        let mut listener = None;
        for _ in 0..100 {
            if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
                listener = Some(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let listener = listener.expect("bind the HTTPS server");
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        let policies = Arc::new(policies);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, policies, reports) =
                    (acceptor.clone(), policies.clone(), reports.clone());
                tokio::spawn(async move {
                    let wait = Duration::from_secs(5);
                    let Ok(Ok(mut tls)) = tokio::time::timeout(wait, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        if data.len() > 64 * 1024 {
                            return;
                        }
                        match tokio::time::timeout(wait, tls.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    };
                    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim().to_string())
                            .unwrap_or_default()
                    };
                    let length: usize = header("content-length:").parse().unwrap_or(0);
                    while data.len() < head_end + length && data.len() < 2 * 1024 * 1024 {
                        match tokio::time::timeout(wait, tls.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let response = if head.starts_with("post /tlsrpt ") {
                        let mut json = String::new();
                        flate2::read::GzDecoder::new(&data[head_end..])
                            .read_to_string(&mut json)
                            .expect("a gzip body");
                        let value = serde_json::from_str(&json).expect("a JSON report");
                        reports
                            .lock()
                            .unwrap()
                            .push((header("content-type:"), value));
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    } else {
                        match policies.get(&header("host:")) {
                            Some(body) if head.starts_with("get /.well-known/mta-sts.txt ") => {
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                            }
                            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\
                                  Connection: close\r\n\r\n"
                                .to_string(),
                        }
                    };
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Https { task }
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pem(certs: &[&TestCert]) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut out = String::new();
    for cert in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.certificate_der());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(out.as_bytes()).unwrap();
    f
}

fn policy(mx: &[&str]) -> String {
    let mut p = "version: STSv1\r\nmode: enforce\r\n".to_string();
    for m in mx {
        p.push_str(&format!("mx: {m}\r\n"));
    }
    p + "max_age: 86400\r\n"
}

/// The sums of the summaries of `domain`'s reports, and the reports.
fn totals(reports: &Reports, domain: &str) -> (u64, u64, Vec<serde_json::Value>) {
    let mut sums = (0, 0, Vec::new());
    for (_, r) in reports.lock().unwrap().iter() {
        for p in r["policies"].as_array().into_iter().flatten() {
            if p["policy"]["policy-domain"] == domain {
                sums.0 += p["summary"]["total-successful-session-count"]
                    .as_u64()
                    .unwrap();
                sums.1 += p["summary"]["total-failure-session-count"]
                    .as_u64()
                    .unwrap();
                sums.2.push(r.clone());
            }
        }
    }
    sums
}

fn tls_rpt_config(config: &mut worker::Config) {
    config.tls_rpt.enabled = true;
    config.tls_rpt.organization_name = "Hedwig Test Relay".into();
    config.tls_rpt.interval = Duration::from_secs(2);
    config.tls_rpt.max_delay = Duration::ZERO;
    config.tls_rpt.flush_interval = Duration::from_millis(200);
    // The policy and report servers are on loopback.
    config.mta_sts.allow_private_addresses = true;
}

/// Two sessions with verified TLS and one with a certificate for the wrong name: the report
/// POSTed to the `https:` rua says 2 successful and 1 failed (`certificate-host-mismatch`,
/// at the MX host and address it happened), under the domain's `sts` policy. The counts
/// survive a restart (the state directory) and are sent once.
#[tokio::test]
async fn https_report_counts_sessions() {
    let policy_cert = TestCert::new(&["mta-sts.rpt.test"]);
    let report_cert = TestCert::new(&["reports.rpt.test"]);
    let reports: Reports = Default::default();
    let policies = HashMap::from([(
        "mta-sts.rpt.test".to_string(),
        policy(&["mx1.rpt.test", "mx2.rpt.test"]),
    )]);
    let _policy_server =
        Https::start("127.0.240.1", &policy_cert, policies, Default::default()).await;
    let _report_server =
        Https::start("127.0.240.2", &report_cert, HashMap::new(), reports.clone()).await;
    let zone = Zone::new()
        .txt("_mta-sts.rpt.test", "v=STSv1; id=1;")
        .a("mta-sts.rpt.test", "127.0.240.1")
        .mx("rpt.test", 10, "mx1.rpt.test")
        .mx("rpt.test", 20, "mx2.rpt.test")
        .a("mx1.rpt.test", "127.0.240.10")
        .a("mx2.rpt.test", "127.0.240.11")
        .txt(
            "_smtp._tls.rpt.test",
            "v=TLSRPTv1; rua=https://reports.rpt.test/tlsrpt",
        )
        .a("reports.rpt.test", "127.0.240.2");
    let dns = DnsServer::start(zone).await;
    let good = common::mx(
        "127.0.240.10",
        Behaviour::new().starttls().cert_names(&["mx1.rpt.test"]),
    )
    .await;
    // The testkit's default certificate names the IP address, not mx2.rpt.test.
    let wrong = common::mx("127.0.240.11", Behaviour::new().starttls()).await;
    let ca = pem(&[&policy_cert, &report_cert, good.cert(), wrong.cert()]);
    let state = tempfile::tempdir().unwrap();

    let mut config = common::config("127.0.240.250:11300", dns.addr());
    config.ipv6 = false;
    config.tls.ca_file = Some(ca.path().to_path_buf());
    config.mta_sts.state_dir = Some(state.path().to_path_buf());
    // A session per message: RFC 8460 counts sessions.
    config.limits.default.messages_per_connection = 1;
    tls_rpt_config(&mut config);
    let parts = worker::build(config.clone()).unwrap();
    let d = parts.worker.deliverer.clone();
    let rpt = parts.tls_rpt.clone().expect("tls_rpt enabled");

    for to in ["a@rpt.test", "b@rpt.test"] {
        let out = common::deliver(&d, "rpt.test", &[to]).await;
        assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    }
    assert_eq!(good.received().len(), 2);
    // mx1 down: mx2's certificate does not name it → deferred (enforce), one failure.
    good.pause().await;
    let out = common::deliver(&d, "rpt.test", &["c@rpt.test"]).await;
    assert_eq!(out[0].1.status, Status::Deferred, "{:?}", out[0].1);
    assert!(wrong.received().is_empty());
    assert_eq!(rpt.pending("rpt.test"), (2, 1));

    // A restart: the counts written to the state directory are read back by a new worker,
    // which sends the report (this one never runs its reporter).
    rpt.flush().await;
    assert!(state.path().join("tls-rpt/counts.json").exists());
    let restarted = worker::build(config.clone()).unwrap().tls_rpt.unwrap();
    assert_eq!(restarted.pending("rpt.test"), (2, 1));
    let stop = CancellationToken::new();
    let reporter = tokio::spawn(restarted.clone().run(stop.clone()));
    for _ in 0..300 {
        if totals(&reports, "rpt.test").0 >= 2 && restarted.pending("rpt.test") == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    reporter.await.unwrap();

    let (ok, failed, sent) = totals(&reports, "rpt.test");
    assert_eq!((ok, failed), (2, 1), "{sent:#?}");
    for (content_type, _) in reports.lock().unwrap().iter() {
        assert_eq!(content_type, "application/tlsrpt+gzip");
    }
    let mut ids = std::collections::HashSet::new();
    let mut details = Vec::new();
    for r in &sent {
        assert_eq!(r["organization-name"], "Hedwig Test Relay");
        assert_eq!(r["contact-info"], "postmaster@relay.hedwig.test");
        let start = r["date-range"]["start-datetime"].as_str().unwrap();
        let end = r["date-range"]["end-datetime"].as_str().unwrap();
        assert!(
            start.ends_with('Z') && end.ends_with('Z') && start < end,
            "{r}"
        );
        assert!(ids.insert(r["report-id"].as_str().unwrap().to_string()));
        let p = &r["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(
            p["policy"]["policy-string"],
            serde_json::json!([
                "version: STSv1",
                "mode: enforce",
                "mx: mx1.rpt.test",
                "mx: mx2.rpt.test",
                "max_age: 86400"
            ])
        );
        assert_eq!(
            p["policy"]["mx-host"],
            serde_json::json!(["mx1.rpt.test", "mx2.rpt.test"])
        );
        details.extend(p["failure-details"].as_array().cloned().unwrap_or_default());
    }
    assert_eq!(details.len(), 1, "{details:#?}");
    let row = &details[0];
    assert_eq!(row["result-type"], "certificate-host-mismatch");
    assert_eq!(row["receiving-mx-hostname"], "mx2.rpt.test");
    assert_eq!(row["receiving-ip"], "127.0.240.11");
    assert_eq!(row["failed-session-count"], 1);
    assert!(row["sending-mta-ip"].as_str().unwrap().starts_with("127."));

    // Sent once: the counts are gone, also from the state directory.
    let again = worker::build(config).unwrap().tls_rpt.unwrap();
    assert_eq!(again.pending("rpt.test"), (0, 0));
}

/// A `mailto:` rua: the report goes as a message (RFC 8460 §5.3) through the worker's own
/// outbound tube, from `tls_rpt.sender`, DKIM-signed for the sender's domain, to the rua's MX.
#[tokio::test]
async fn mailto_report_is_a_message() {
    let bs = Beanstalkd::start_on("127.0.240.3".parse().unwrap());
    // The rua's own domain has an `enforce` policy its MX (no STARTTLS) fails: the report
    // goes anyway (RFC 8460 §3: delivered despite TLS failures).
    let policy_cert = TestCert::new(&["mta-sts.mail.rpt.test", "mta-sts.reports.rpt.test"]);
    let policies = HashMap::from([
        (
            "mta-sts.mail.rpt.test".to_string(),
            policy(&["mx.mail.rpt.test"]),
        ),
        (
            "mta-sts.reports.rpt.test".to_string(),
            policy(&["mx.reports.rpt.test"]),
        ),
    ]);
    let _policy_server =
        Https::start("127.0.240.31", &policy_cert, policies, Default::default()).await;
    let zone = Zone::new()
        .txt("_mta-sts.mail.rpt.test", "v=STSv1; id=7;")
        .a("mta-sts.mail.rpt.test", "127.0.240.31")
        .txt("_mta-sts.reports.rpt.test", "v=STSv1; id=1;")
        .a("mta-sts.reports.rpt.test", "127.0.240.31")
        .mx("mail.rpt.test", 10, "mx.mail.rpt.test")
        .a("mx.mail.rpt.test", "127.0.240.32")
        .txt(
            "_smtp._tls.mail.rpt.test",
            "v=TLSRPTv1; rua=mailto:tls-reports@reports.rpt.test",
        )
        .mx("reports.rpt.test", 10, "mx.reports.rpt.test")
        .a("mx.reports.rpt.test", "127.0.240.33");
    let dns = DnsServer::start(zone).await;
    let mx = common::mx(
        "127.0.240.32",
        Behaviour::new()
            .starttls()
            .cert_names(&["mx.mail.rpt.test"]),
    )
    .await;
    let inbox = common::mx("127.0.240.33", Behaviour::new()).await;
    let ca = pem(&[&policy_cert, mx.cert()]);

    let mut config = common::config(&bs.url(), dns.addr());
    config.ipv6 = false;
    config.tls.ca_file = Some(ca.path().to_path_buf());
    tls_rpt_config(&mut config);
    config.tls_rpt.sender = "tlsrpt@relay.hedwig.test".into();
    // A DKIM key for the sender's domain: the report goes out signed, like any mail.
    let keys = tempfile::tempdir().unwrap();
    let key = hedwig_message::dkim::generate(hedwig_message::dkim::Algorithm::Ed25519).unwrap();
    let key_file = keys.path().join("ed.pem");
    std::fs::write(&key_file, key.private_pem).unwrap();
    config.dkim = hedwig_message::dkim::DkimConfig {
        keys: vec![hedwig_message::dkim::DkimKey {
            domain: "relay.hedwig.test".into(),
            selector: "r1".into(),
            algorithm: None,
            key_file,
        }],
        default_domain: None,
    };
    let running = common::start(config);
    common::enqueue(
        &bs.url(),
        &common::job(
            "s@sender.test",
            &["a@mail.rpt.test"],
            &common::message("one"),
        ),
    )
    .await;
    assert!(mx.wait_for(1, Duration::from_secs(30)).await.is_some());
    assert!(mx.received()[0].tls);
    let got = inbox
        .wait_for(1, Duration::from_secs(30))
        .await
        .expect("a report message");
    running.stop().await;

    let m = &got[0];
    assert_eq!(m.mail_from, "tlsrpt@relay.hedwig.test");
    assert_eq!(m.rcpt_to, ["tls-reports@reports.rpt.test"]);
    let head = String::from_utf8_lossy(&m.data[..m.data.len().min(2000)]).to_string();
    assert!(head.starts_with("DKIM-Signature:"), "{head}");
    assert!(head.contains("d=relay.hedwig.test"), "{head}");
    let parsed = mail_parser::MessageParser::default()
        .parse(&m.data)
        .unwrap();
    let subject = parsed.subject().unwrap();
    assert!(
        subject
            .starts_with("Report Domain: mail.rpt.test Submitter: relay.hedwig.test Report-ID: <"),
        "{subject}"
    );
    let text = |name: &str| {
        parsed
            .header(name)
            .and_then(|h| h.as_text())
            .map(str::to_string)
    };
    assert_eq!(text("TLS-Report-Domain").as_deref(), Some("mail.rpt.test"));
    assert_eq!(
        text("TLS-Report-Submitter").as_deref(),
        Some("relay.hedwig.test")
    );
    let ct = parsed.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("tlsrpt"));
    let att = parsed.attachment(0).expect("the report attachment");
    let act = att.content_type().unwrap();
    assert_eq!(
        (act.ctype(), act.subtype()),
        ("application", Some("tlsrpt+gzip"))
    );
    let name = att.attachment_name().unwrap();
    assert!(
        name.starts_with("relay.hedwig.test!mail.rpt.test!") && name.ends_with(".json.gz"),
        "{name}"
    );
    let mut json = String::new();
    flate2::read::GzDecoder::new(att.contents())
        .read_to_string(&mut json)
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["contact-info"], "tlsrpt@relay.hedwig.test");
    let p = &r["policies"][0];
    assert_eq!(p["policy"]["policy-domain"], "mail.rpt.test");
    assert_eq!(p["summary"]["total-successful-session-count"], 1);
    assert_eq!(p["summary"]["total-failure-session-count"], 0);
    assert!(subject.contains(r["report-id"].as_str().unwrap()));
}
