//! Provisioning: host keys for mailman hosts, post office secrets, DKIM keys and the DNS
//! records the post office's mail needs.
//!
//! `keygen <fqdn>` derives a host's key from the post office secret (see
//! [`hedwig_core::key`]) and prints a ready-to-paste mailman config; `keygen secret` makes a new
//! random 256-bit secret. The logic lives here so that tests call it without a process.
//!
//! - [`dkim`]: `keygen dkim`, a new DKIM key pair plus the record and config to go with it.
//! - [`dns_check`]: `keygen dns`, checks MX, SPF, DKIM, PTR and DMARC of sending domains.
//! - [`zone`]: records formatted as zone-file lines.

pub mod dkim;
pub mod dns_check;
mod error;
pub mod zone;

use std::fmt::Write as _;

pub use error::Error;

use rand::RngCore;

/// A new random 256-bit secret, 64 lowercase hex digits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The host's key alone (`keygen --key-only <fqdn>`): 64 hex digits, for `HEDWIG_KEY=$(…)`.
pub fn host_key(secret: &str, fqdn: &str) -> Result<String, String> {
    let secret = hedwig_core::key::check_secret(secret).map_err(|e| e.to_string())?;
    let fqdn = hedwig_core::key::normalize_fqdn(fqdn).map_err(|e| e.to_string())?;
    Ok(hedwig_core::key::derive_key(secret, &fqdn))
}

/// The text `keygen <fqdn>` prints: the key, then a mailman config using it.
pub fn host_config(secret: &str, fqdn: &str, postoffice_url: &str) -> Result<String, String> {
    let key = host_key(secret, fqdn)?;
    let fqdn = hedwig_core::key::normalize_fqdn(fqdn).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = writeln!(out, "# hedwig host key for {fqdn}");
    let _ = writeln!(
        out,
        "# Paste into /etc/hedwig/mailman.yaml on that host (or set"
    );
    let _ = writeln!(
        out,
        "# HEDWIG_FQDN / HEDWIG_KEY / HEDWIG_POSTOFFICE in its environment)."
    );
    let _ = writeln!(out, "fqdn: {fqdn}");
    let _ = writeln!(out, "key: {key}");
    let _ = writeln!(out, "postoffice:");
    let _ = writeln!(out, "  - {postoffice_url}");
    Ok(out)
}

/// A domain as DNS holds it: A-labels, lowercase, no trailing dot, at least two labels.
pub fn normalize_domain(domain: &str) -> Result<String, Error> {
    let invalid = |why: String| Error::InvalidDomain {
        domain: domain.to_string(),
        why,
    };
    let trimmed = domain.trim().trim_end_matches('.');
    let ascii =
        idna::domain_to_ascii(trimmed).map_err(|_| invalid("not a valid domain name".into()))?;
    let ascii = hedwig_core::key::normalize_fqdn(&ascii).map_err(|e| invalid(e.to_string()))?;
    if !ascii.contains('.') {
        return Err(invalid("not a fully qualified domain name".into()));
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_long_enough() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(hedwig_core::key::check_secret(&a).is_ok());
    }

    #[test]
    fn host_config_carries_the_verifiable_key() {
        let secret = new_secret();
        let text = host_config(&secret, "Web1.Example.com", "http://po:8025/").unwrap();
        let key = text.lines().find_map(|l| l.strip_prefix("key: ")).unwrap();
        assert!(hedwig_core::key::verify_key(
            &secret,
            "web1.example.com",
            key
        ));
        assert!(text.contains("fqdn: web1.example.com"));
        assert!(text.contains("  - http://po:8025/"));
        assert!(host_config("short", "h.example", "u").is_err());
        assert!(host_config(&secret, "bad host", "u").is_err());
        assert_eq!(host_key(&secret, "WEB1.example.com").unwrap(), key);
        assert!(host_key("short", "h.example").is_err());
    }

    #[test]
    fn domains_are_normalized() {
        assert_eq!(normalize_domain("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        for bad in ["", "localhost", "a..b", "a b.com", "-x.com"] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }
}
