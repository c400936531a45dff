//! Measures DKIM signing speed on this machine, one core: `cargo run --release -p
//! hedwig-message --example dkim_speed`. Signs a 4 KB message with the fixed test keys
//! (RSA-2048, Ed25519, both) for about two seconds each and prints signatures per second.

use std::path::Path;
use std::time::{Duration, Instant};

use hedwig_message::dkim::{DkimConfig, DkimKey, Signer};

fn signer(files: &[(&str, &str)]) -> Signer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let keys = files
        .iter()
        .map(|(selector, file)| DkimKey {
            domain: "example.test".into(),
            selector: selector.to_string(),
            algorithm: None,
            key_file: dir.join(file),
        })
        .collect();
    match Signer::new(&DkimConfig {
        keys,
        default_domain: None,
    }) {
        Ok(signer) => signer,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let mut message = b"From: Alice <alice@example.test>\r\nTo: bob@example.org\r\n\
Subject: speed\r\nDate: Mon, 23 Nov 2026 04:15:31 +0000\r\nMessage-ID: <s@example.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    while message.len() < 4096 {
        message.extend_from_slice(b"The quick brown fox jumps over the lazy dog, 0123456789.\r\n");
    }
    for (name, files) in [
        ("rsa-2048", &[("rsa", "rsa2048.pem")][..]),
        ("ed25519", &[("ed", "ed25519.pem")][..]),
        (
            "rsa-2048 + ed25519",
            &[("rsa", "rsa2048.pem"), ("ed", "ed25519.pem")][..],
        ),
    ] {
        let signer = signer(files);
        let start = Instant::now();
        let mut count = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            for _ in 0..50 {
                match signer.sign(&message, 1_795_407_331) {
                    Ok(Some(sig)) => std::hint::black_box(sig),
                    other => panic!("not signed: {other:?}"),
                };
            }
            count += 50;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name:>20}: {:>8.0} messages/s ({:.1} µs each, {} B message)",
            count as f64 / secs,
            secs * 1e6 / count as f64,
            message.len()
        );
    }
    raw_rsa();
}

/// The bare aws-lc-rs RSA-2048 PKCS#1 v1.5 SHA-256 signature, for comparison with the
/// above (what DKIM adds: canonicalization, hashing, header formatting) and with
/// `openssl speed rsa2048`.
fn raw_rsa() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivatePkcs1KeyDer;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rsa2048.pem");
    let der = PrivatePkcs1KeyDer::from_pem_file(path).expect("the test key");
    let pair = RsaKeyPair::from_der(der.secret_pkcs1_der()).expect("an RSA key");
    let rng = SystemRandom::new();
    let mut signature = vec![0; pair.public_modulus_len()];
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..50 {
            pair.sign(&RSA_PKCS1_SHA256, &rng, b"data to sign", &mut signature)
                .expect("signs");
        }
        count += 50;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:>20}: {:>8.0} signatures/s (aws-lc-rs alone)",
        "raw rsa-2048",
        count as f64 / secs
    );
}
