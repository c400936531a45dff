//! DKIM private keys: loading PEM files, the DNS TXT record that publishes a key, and
//! generating new key pairs (for `keygen dkim`).
//!
//! RSA keys are PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`), 2048 to
//! 8192 bits (the aws-lc-rs range; RFC 8301 requires at least 1024). Ed25519 keys are PKCS#8
//! v1 or v2, as `openssl genpkey -algorithm ed25519` writes them. Encrypted keys and EC keys
//! are refused with a reason.

use std::path::Path;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use mail_auth::common::crypto::{DkimKey as AnyKey, Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::Error;

/// A DKIM signing algorithm (RFC 6376 `rsa-sha256`, RFC 8463 `ed25519-sha256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `k=` tag of the DNS record: `rsa` or `ed25519`.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key_type())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" => Ok(Algorithm::Rsa),
            "ed25519" => Ok(Algorithm::Ed25519),
            other => Err(format!("unknown DKIM algorithm {other:?} (rsa or ed25519)")),
        }
    }
}

/// A parsed private key, ready to sign, with what the DNS must publish for it.
pub(crate) struct LoadedKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: AnyKey,
    /// RSA: DER SubjectPublicKeyInfo; Ed25519: the raw 32-byte public key (RFC 8463 §4).
    pub(crate) public: Vec<u8>,
}

/// Reads and parses a PEM private key file.
pub(crate) fn load_file(path: &Path) -> Result<LoadedKey, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::KeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_pem(&pem).map_err(|why| Error::Key {
        path: path.to_path_buf(),
        why,
    })
}

/// Parses a PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
pub(crate) fn parse_pem(pem: &[u8]) -> Result<LoadedKey, String> {
    if memfind(pem, b"ENCRYPTED PRIVATE KEY") {
        return Err("the key is encrypted; store it unencrypted with mode 0600".into());
    }
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("no PEM private key found ({e})"))?;
    match der {
        PrivateKeyDer::Pkcs1(pkcs1) => {
            let pair = RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
                .map_err(|e| format!("not a usable RSA key: {e}"))?;
            let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(
                PrivatePkcs1KeyDer::from(pkcs1.secret_pkcs1_der().to_vec()),
            ))
            .map_err(|e| format!("not a usable RSA key: {e}"))?;
            Ok(LoadedKey {
                algorithm: Algorithm::Rsa,
                key: AnyKey::Rsa(key),
                public: rsa_spki(&pair)?,
            })
        }
        PrivateKeyDer::Pkcs8(pkcs8) => {
            let der = pkcs8.secret_pkcs8_der();
            if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
                let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(
                    PrivatePkcs8KeyDer::from(der.to_vec()),
                ))
                .map_err(|e| format!("not a usable RSA key: {e}"))?;
                return Ok(LoadedKey {
                    algorithm: Algorithm::Rsa,
                    key: AnyKey::Rsa(key),
                    public: rsa_spki(&pair)?,
                });
            }
            match Ed25519KeyPair::from_pkcs8(der) {
                Ok(pair) => {
                    let key = Ed25519Key::from_pkcs8_der(der)
                        .map_err(|e| format!("not a usable Ed25519 key: {e}"))?;
                    Ok(LoadedKey {
                        algorithm: Algorithm::Ed25519,
                        key: AnyKey::Ed25519(key),
                        public: pair.public_key().as_ref().to_vec(),
                    })
                }
                Err(e) => Err(format!(
                    "a PKCS#8 key that is neither RSA (2048-8192 bits) nor Ed25519 ({e})"
                )),
            }
        }
        PrivateKeyDer::Sec1(_) => Err("an EC key; DKIM signs with RSA or Ed25519 only".into()),
        _ => Err("an unsupported private key format".into()),
    }
}

fn rsa_spki(pair: &RsaKeyPair) -> Result<Vec<u8>, String> {
    let spki: PublicKeyX509Der<'static> = pair
        .public_key()
        .as_der()
        .map_err(|_| "cannot encode the RSA public key".to_string())?;
    Ok(spki.as_ref().to_vec())
}

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The DNS TXT value publishing a public key at `<selector>._domainkey.<domain>`
/// (RFC 6376 §3.6.1): `v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>` or
/// `v=DKIM1; k=ed25519; p=<base64 raw 32-byte key>` (RFC 8463 §4).
pub fn txt_record(algorithm: Algorithm, public_key: &[u8]) -> String {
    format!(
        "v=DKIM1; k={}; p={}",
        algorithm.key_type(),
        base64::engine::general_purpose::STANDARD.encode(public_key)
    )
}

/// The algorithm and DNS TXT value for a PEM private key (for `keygen dns` to compare with
/// what DNS publishes).
pub fn txt_record_for_pem(pem: &[u8]) -> Result<(Algorithm, String), Error> {
    let key = parse_pem(pem).map_err(|why| Error::Key {
        path: "(PEM text)".into(),
        why,
    })?;
    Ok((key.algorithm, txt_record(key.algorithm, &key.public)))
}

/// A freshly generated key pair.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub algorithm: Algorithm,
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`): write it with mode 0600.
    pub private_pem: String,
    /// The TXT value to publish at `<selector>._domainkey.<domain>`.
    pub txt: String,
}

/// Generates a key pair: RSA-2048 or Ed25519, with aws-lc-rs (the backend that signs).
pub fn generate(algorithm: Algorithm) -> Result<GeneratedKey, Error> {
    let fail = |why: String| Error::Generate {
        algorithm: algorithm.key_type(),
        why,
    };
    let (pkcs8, public) = match algorithm {
        Algorithm::Rsa => {
            let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|e| fail(e.to_string()))?;
            let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|e| fail(e.to_string()))?;
            (der.as_ref().to_vec(), rsa_spki(&pair).map_err(fail)?)
        }
        Algorithm::Ed25519 => {
            let pair = Ed25519KeyPair::generate().map_err(|e| fail(e.to_string()))?;
            let der = pair.to_pkcs8v1().map_err(|e| fail(e.to_string()))?;
            (der.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
        }
    };
    Ok(GeneratedKey {
        algorithm,
        private_pem: pem_encode("PRIVATE KEY", &pkcs8),
        txt: txt_record(algorithm, &public),
    })
}

/// RFC 7468 PEM: base64 in lines of 64 characters.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PKCS1: &str = include_str!("../../testdata/rsa2048.pem");
    const RSA_PKCS8: &str = include_str!("../../testdata/rsa2048-pkcs8.pem");
    const ED25519: &str = include_str!("../../testdata/ed25519.pem");
    // OpenSSL's view of the same public keys (see testdata/README.md).
    const RSA_SPKI: &str = include_str!("../../testdata/rsa2048.spki.b64");
    const ED25519_RAW: &str = include_str!("../../testdata/ed25519.raw.b64");

    #[test]
    fn txt_records_match_openssl() {
        for pem in [RSA_PKCS1, RSA_PKCS8] {
            let (alg, txt) = txt_record_for_pem(pem.as_bytes()).unwrap();
            assert_eq!(alg, Algorithm::Rsa);
            assert_eq!(txt, format!("v=DKIM1; k=rsa; p={}", RSA_SPKI.trim()));
        }
        let (alg, txt) = txt_record_for_pem(ED25519.as_bytes()).unwrap();
        assert_eq!(alg, Algorithm::Ed25519);
        assert_eq!(txt, format!("v=DKIM1; k=ed25519; p={}", ED25519_RAW.trim()));
    }

    #[test]
    fn bad_keys_say_why() {
        let why = |pem: &str| match txt_record_for_pem(pem.as_bytes()) {
            Err(Error::Key { why, .. }) => why,
            other => panic!("accepted: {other:?}"),
        };
        assert!(why("").contains("no PEM private key"));
        assert!(why(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        )
        .contains("encrypted"));
        // A PKCS#8 document whose content is garbage.
        assert!(
            why("-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n")
                .contains("neither RSA")
        );
        // Truncated RSA key.
        let truncated: String = RSA_PKCS1
            .lines()
            .take(5)
            .chain(RSA_PKCS1.lines().last())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!why(&truncated).is_empty());
    }

    #[test]
    fn generated_keys_load_and_match_their_record() {
        for alg in [Algorithm::Rsa, Algorithm::Ed25519] {
            let generated = generate(alg).unwrap();
            assert!(generated
                .private_pem
                .starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let (loaded_alg, txt) = txt_record_for_pem(generated.private_pem.as_bytes()).unwrap();
            assert_eq!(loaded_alg, alg);
            assert_eq!(txt, generated.txt);
            assert!(generated.txt.starts_with(&format!("v=DKIM1; k={alg}; p=")));
            // Two generations differ.
            assert_ne!(generate(alg).unwrap().txt, generated.txt);
        }
    }

    #[test]
    fn generated_keys_are_readable_by_openssl() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [Algorithm::Rsa, Algorithm::Ed25519] {
            let generated = generate(alg).unwrap();
            let path = dir.path().join(format!("{alg}.pem"));
            std::fs::write(&path, &generated.private_pem).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&path)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let public = match alg {
                Algorithm::Rsa => &out.stdout[..],
                Algorithm::Ed25519 => &out.stdout[out.stdout.len() - 32..],
            };
            assert_eq!(txt_record(alg, public), generated.txt);
        }
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("RSA".parse::<Algorithm>(), Ok(Algorithm::Rsa));
        assert_eq!("ed25519".parse::<Algorithm>(), Ok(Algorithm::Ed25519));
        assert!("dsa".parse::<Algorithm>().is_err());
    }
}
