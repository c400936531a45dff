//! The `Hedwig-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! The time is signed with the body, so a receiver can both check that the request came from
//! us and refuse an old one replayed (docs/webhooks.md shows how, in Python and PHP). The
//! time is an input, so tests are repeatable.
//!
//! Not here: sending (`dispatch`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "Hedwig-Signature";

/// The header's value for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_signature() {
        // printf '%s' '1796169600.{"v":1}' | openssl dgst -sha256 -hmac 'whsec-0123456789abcdef'
        assert_eq!(
            signature("whsec-0123456789abcdef", 1_796_169_600, br#"{"v":1}"#),
            "t=1796169600,v1=ef868ccbb1970c084bc2387ecdff415774647400405f5f132e89fdbeea6dd6af"
        );
    }
}
