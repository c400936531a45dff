//! Issue 11, F7: the post office serves its intake over TLS (rustls), with a certificate from
//! a private CA made here; mailman trusts that CA through `ca_file` and refuses the post office
//! without it (the message stays spooled). A new certificate written over the files is served
//! without a restart.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::stack::{self, take_jobs};
use crate::common::{hello, spooled, Mailman};
use hedwig_testkit::Beanstalkd;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_util::sync::CancellationToken;

const IP: [u8; 4] = [127, 0, 117, 1];

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hedwig test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for the test address, written to `dir`; returns its DER.
    fn issue(&self, dir: &Path) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.117.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        // Written beside, then renamed: a reader never sees half a file.
        std::fs::write(dir.join("key.tmp"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("cert.tmp"), cert.pem()).unwrap();
        std::fs::rename(dir.join("key.tmp"), dir.join("key.pem")).unwrap();
        std::fs::rename(dir.join("cert.tmp"), dir.join("cert.pem")).unwrap();
        cert.der().to_vec()
    }
}

/// The certificate the server at `addr` presents, verified against `ca`.
async fn served_certificate(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.117.1").unwrap(), tcp)
        .await
        .unwrap();
    let certs: &[CertificateDer<'_>] = tls.get_ref().1.peer_certificates().unwrap();
    certs[0].to_vec()
}

fn mailman_config(dir: &Path, url: &str, ca_file: Option<&Path>) -> mailman::Config {
    let mut cfg = common::config(dir, &[url.to_string()]);
    cfg.listen = vec!["127.0.117.10:0".into()];
    cfg.key = Some(stack::key());
    cfg.fqdn = stack::FQDN.into();
    cfg.ca_file = ca_file.map(Path::to_path_buf);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_intake_with_a_private_ca_and_reload_without_restart() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let first = ca.issue(certs.path());
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();

    let bs = Beanstalkd::start();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((IP, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let config = postoffice::Config {
        listen: addr,
        beanstalkd: vec![bs.url()],
        secret: Some(stack::SECRET.into()),
        tls: Some(postoffice::tls::TlsSettings {
            cert_file: certs.path().join("cert.pem"),
            key_file: certs.path().join("key.pem"),
        }),
        // No ledger writer (it would write to /var/lib/hedwig); ledger tests turn it on.
        ledger: postoffice::config::LedgerConfig {
            writer: false,
            ..Default::default()
        },
        ..postoffice::Config::default()
    };
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(postoffice::serve(config, listener, stop));
    let url = format!("https://127.0.117.1:{}/", addr.port());

    // mailman with the CA: the message is queued.
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(mailman_config(dir.path(), &url, Some(&ca_file))).await;
    let mut c = hello(m.smtp).await;
    let reply = c
        .send_mail(
            "a@example.com",
            &["b@example.org"],
            b"Subject: s\r\n\r\nover TLS\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    assert_eq!(take_jobs(&bs, Duration::from_millis(300)).await.len(), 1);
    m.stop().await;

    // Without it, the certificate is not trusted: nothing leaves the spool.
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(mailman_config(dir.path(), &url, None)).await;
    let mut c = hello(m.smtp).await;
    let reply = c
        .send_mail(
            "a@example.com",
            &["b@example.org"],
            b"Subject: s\r\n\r\nuntrusted\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    assert_eq!(spooled(dir.path()), 1);
    assert!(take_jobs(&bs, Duration::from_millis(300)).await.is_empty());
    m.stop().await;

    // A renewed certificate is served without a restart.
    assert_eq!(served_certificate(addr, &ca).await, first);
    tokio::time::sleep(Duration::from_millis(1100)).await; // a new modification time
    let second = ca.issue(certs.path());
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(addr, &ca).await != second {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
