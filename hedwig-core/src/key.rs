//! Host keys.
//!
//! `key = lowercase hex of HMAC-SHA256(secret, lowercase(fqdn))`. The post office keeps only the
//! secret (and, during a rotation, the previous ones) and recomputes the key of the host that
//! claims to send; the comparison is constant-time so that response timing says nothing about
//! how much of a guessed key was right.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted, in bytes. `keygen secret` makes 64 hex digits (256 bits).
pub const MIN_SECRET_LEN: usize = 16;

/// Why a secret or an fqdn cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the secret is empty")]
    EmptySecret,
    #[error("the secret is {0} bytes long; at least {MIN_SECRET_LEN} are needed (make one with `keygen secret`)")]
    ShortSecret(usize),
    #[error("{0:?} is not a valid host name: {1}")]
    InvalidFqdn(String, &'static str),
}

/// Checks a secret's length. Surrounding whitespace (a newline at the end of a secret file) is
/// not part of the secret.
pub fn check_secret(secret: &str) -> Result<&str, KeyError> {
    let secret = secret.trim();
    match secret.len() {
        0 => Err(KeyError::EmptySecret),
        n if n < MIN_SECRET_LEN => Err(KeyError::ShortSecret(n)),
        _ => Ok(secret),
    }
}

/// Validates a host name (RFC 1123 labels) and returns it lowercased, without a trailing dot.
pub fn normalize_fqdn(fqdn: &str) -> Result<String, KeyError> {
    let invalid = |why| KeyError::InvalidFqdn(fqdn.to_string(), why);
    let name = fqdn.strip_suffix('.').unwrap_or(fqdn);
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 253 {
        return Err(invalid("it is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("it has an empty label"));
        }
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "only letters, digits, '-' and '_' may appear in a label",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label starts or ends with '-'"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// The key of host `fqdn` under `secret` (lowercase hex, 64 digits).
pub fn derive_key(secret: &str, fqdn: &str) -> String {
    hex::encode(mac(secret, fqdn).finalize().into_bytes())
}

/// Whether `presented` is the key of `fqdn` under `secret`, compared in constant time.
pub fn verify_key(secret: &str, fqdn: &str, presented: &str) -> bool {
    // Hex case is not part of the secret: accept an uppercased key too.
    let Ok(bytes) = hex::decode(presented.trim()) else {
        return false;
    };
    mac(secret, fqdn).verify_slice(&bytes).is_ok()
}

fn mac(secret: &str, fqdn: &str) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.trim().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(fqdn.trim_end_matches('.').to_ascii_lowercase().as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn key_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(
        //   b"0123456789abcdef0123456789abcdef", b"web1.example.com", hashlib.sha256).hexdigest())'
        let expected = "78470f6c8ed9ad1675439ee455fdcf6758324d0f6f28d34b7679928251cfbb87";
        assert_eq!(derive_key(SECRET, "web1.example.com"), expected);
        assert_eq!(derive_key(SECRET, "WEB1.Example.COM"), expected);
    }

    #[test]
    fn fqdn_is_case_insensitive_and_key_verifies() {
        let key = derive_key(SECRET, "Web1.Example.com");
        assert_eq!(key.len(), 64);
        assert!(verify_key(SECRET, "web1.example.com", &key));
        assert!(verify_key(SECRET, "web1.example.com.", &key.to_uppercase()));
        assert!(!verify_key(SECRET, "web2.example.com", &key));
        assert!(!verify_key(
            "another-secret-of-enough-length",
            "web1.example.com",
            &key
        ));
        assert!(!verify_key(SECRET, "web1.example.com", "not hex"));
        assert!(!verify_key(SECRET, "web1.example.com", &key[..62]));
    }

    #[test]
    fn every_byte_of_the_key_counts_and_nothing_else_passes() {
        // `verify_key` compares with `Mac::verify_slice` (digest 0.10: a length check, then
        // `subtle::ConstantTimeEq`), never with `==` on strings. Functionally that means: the
        // full 32 bytes must match (no prefix, no truncation), each byte position matters.
        let key = derive_key(SECRET, "web1.example.com");
        for pos in 0..key.len() {
            let mut wrong = key.clone().into_bytes();
            wrong[pos] = if wrong[pos] == b'0' { b'1' } else { b'0' };
            let wrong = String::from_utf8(wrong).unwrap();
            assert!(
                !verify_key(SECRET, "web1.example.com", &wrong),
                "digit {pos}"
            );
        }
        for len in [0, 2, 32, 62] {
            assert!(
                !verify_key(SECRET, "web1.example.com", &key[..len]),
                "{len}"
            );
        }
        assert!(!verify_key(SECRET, "web1.example.com", &format!("{key}00")));
        assert!(!verify_key(SECRET, "web1.example.com", &format!("00{key}")));
        assert!(verify_key(SECRET, "web1.example.com", &format!(" {key}\n")));
    }

    #[test]
    fn secrets_and_names_are_checked() {
        assert_eq!(check_secret(" \n"), Err(KeyError::EmptySecret));
        assert_eq!(check_secret("short"), Err(KeyError::ShortSecret(5)));
        assert_eq!(check_secret(&format!("{SECRET}\n")), Ok(SECRET));
        assert_eq!(
            normalize_fqdn("Web1.Example.COM.").as_deref(),
            Ok("web1.example.com")
        );
        for bad in ["", "a..b", "-a.b", "a b.c", "é.com", &"a".repeat(64)] {
            assert!(normalize_fqdn(bad).is_err(), "{bad:?} accepted");
        }
    }
}
