//! Signed requests (issue 11, F3 and F7): mailman proves its host key in request headers, so
//! the post office authenticates a post before it reads the body, and a captured post cannot be
//! replayed outside a short window (and inside it, its message id is already queued).
//!
//! ```text
//! X-Hedwig-Host:           web1.example.com
//! X-Hedwig-Date:           1764626400                      (Unix seconds)
//! X-Hedwig-Content-SHA256: <64 hex digits: SHA-256 of the body bytes>
//! X-Hedwig-Signature:      v1=<64 hex digits>
//! ```
//!
//! The signature is HMAC-SHA256, keyed with the host key (its 64 hex digits as ASCII, as they
//! appear in the config), over the canonical string
//!
//! ```text
//! hedwig-v1\n<date>\n<METHOD>\n<path>\n<host, lowercase>\n<body SHA-256, lowercase hex>
//! ```
//!
//! The host key itself never travels in a signed request.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const HOST: &str = "x-hedwig-host";
pub const DATE: &str = "x-hedwig-date";
pub const CONTENT_SHA256: &str = "x-hedwig-content-sha256";
pub const SIGNATURE: &str = "x-hedwig-signature";

/// The scheme label in `X-Hedwig-Signature`.
const SCHEME: &str = "v1=";

/// Lowercase hex SHA-256 of `body`.
pub fn content_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn canonical(date: u64, method: &str, path: &str, host: &str, digest: &str) -> String {
    format!(
        "hedwig-v1\n{date}\n{}\n{path}\n{}\n{}",
        method.to_ascii_uppercase(),
        host.trim_end_matches('.').to_ascii_lowercase(),
        digest.to_ascii_lowercase()
    )
}

fn mac(key: &str, canonical: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key.trim().to_ascii_lowercase().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(canonical.as_bytes());
    mac
}

/// The four headers that sign a request of `body` to `method path` as `host` at `date`.
pub fn sign(
    key: &str,
    host: &str,
    date: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> [(&'static str, String); 4] {
    let digest = content_digest(body);
    let signature = hex::encode(
        mac(key, &canonical(date, method, path, host, &digest))
            .finalize()
            .into_bytes(),
    );
    [
        (HOST, host.to_string()),
        (DATE, date.to_string()),
        (CONTENT_SHA256, digest),
        (SIGNATURE, format!("{SCHEME}{signature}")),
    ]
}

/// The signing headers of a request, read but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The host name as sent (normalize it before use).
    pub host: String,
    pub date: u64,
    /// Lowercase hex SHA-256 the body must have.
    pub digest: String,
    signature: Vec<u8>,
}

/// Why signing headers cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is malformed")]
    Malformed(&'static str),
}

impl Signed {
    /// Reads the headers through `get` (a header name → its value). `Ok(None)`: the request is
    /// not signed (none of the headers is present).
    pub fn from_headers<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Option<Signed>, SignedError> {
        if [HOST, DATE, CONTENT_SHA256, SIGNATURE]
            .iter()
            .all(|h| get(h).is_none())
        {
            return Ok(None);
        }
        let need = |h: &'static str| get(h).map(str::trim).ok_or(SignedError::Missing(h));
        let host = need(HOST)?.to_string();
        let date = need(DATE)?
            .parse::<u64>()
            .map_err(|_| SignedError::Malformed(DATE))?;
        let digest = need(CONTENT_SHA256)?.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SignedError::Malformed(CONTENT_SHA256));
        }
        let signature = need(SIGNATURE)?
            .strip_prefix(SCHEME)
            .and_then(|hexed| hex::decode(hexed).ok())
            .filter(|s| s.len() == 32)
            .ok_or(SignedError::Malformed(SIGNATURE))?;
        Ok(Some(Signed {
            host,
            date,
            digest,
            signature,
        }))
    }

    /// Whether the signature is `key`'s over this request (compared in constant time).
    pub fn verify(&self, key: &str, method: &str, path: &str) -> bool {
        mac(
            key,
            &canonical(self.date, method, path, &self.host, &self.digest),
        )
        .verify_slice(&self.signature)
        .is_ok()
    }

    /// Whether `date` is within `window` seconds of `now`, either way.
    pub fn fresh(&self, now: u64, window: u64) -> bool {
        self.date.abs_diff(now) <= window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "78470f6c8ed9ad1675439ee455fdcf6758324d0f6f28d34b7679928251cfbb87";

    fn read(headers: &[(&'static str, String)]) -> Result<Option<Signed>, SignedError> {
        Signed::from_headers(|name| {
            headers
                .iter()
                .find(|(h, _)| *h == name)
                .map(|(_, v)| v.as_str())
        })
    }

    #[test]
    fn matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib; k=b"78470f6c8ed9ad1675439ee455fdcf6758324d0f6f28d34b7679928251cfbb87";
        //   d=hashlib.sha256(b"{}").hexdigest();
        //   print(hmac.new(k, ("hedwig-v1\n1700000000\nPOST\n/\nweb1.example.com\n"+d).encode(),
        //   hashlib.sha256).hexdigest())'
        let headers = sign(KEY, "web1.example.com", 1_700_000_000, "POST", "/", b"{}");
        assert_eq!(
            headers[2].1,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(
            headers[3].1,
            "v1=2a051e1e0ba44ab0bcc4991583bdf31b8c22bfad169e546607472b043813f5c5"
        );
    }

    #[test]
    fn verifies_and_refuses_what_was_changed() {
        let headers = sign(KEY, "web1.example.com", 1_700_000_000, "POST", "/", b"body");
        let signed = read(&headers).unwrap().unwrap();
        assert!(signed.verify(KEY, "POST", "/"));
        assert!(!signed.verify(KEY, "POST", "/check"));
        assert!(!signed.verify(&KEY.replace('7', "8"), "POST", "/"));
        assert_eq!(signed.digest, content_digest(b"body"));
        for i in 0..4 {
            let mut changed = headers.clone();
            changed[i].1 = match i {
                0 => "web2.example.com".into(),
                1 => "1700000001".into(),
                2 => content_digest(b"other"),
                _ => format!("v1={}", "0".repeat(64)),
            };
            assert!(!read(&changed).unwrap().unwrap().verify(KEY, "POST", "/"));
        }
        assert!(signed.fresh(1_700_000_000 + 300, 300));
        assert!(signed.fresh(1_700_000_000 - 300, 300));
        assert!(!signed.fresh(1_700_000_000 + 301, 300));
    }

    #[test]
    fn unsigned_and_malformed_headers() {
        assert_eq!(read(&[]), Ok(None));
        let headers = sign(KEY, "h.example", 1, "POST", "/", b"");
        assert_eq!(read(&headers[..3]), Err(SignedError::Missing(SIGNATURE)));
        let mut bad = headers.clone();
        bad[1].1 = "yesterday".into();
        assert_eq!(read(&bad), Err(SignedError::Malformed(DATE)));
        let mut bad = headers.clone();
        bad[3].1 = bad[3].1.replace("v1=", "v2=");
        assert_eq!(read(&bad), Err(SignedError::Malformed(SIGNATURE)));
    }
}
