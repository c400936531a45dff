//! VERP return paths (issue 14, late bounces): the envelope sender of one recipient's copy of
//! a message is `bounces+<token>@<bounce domain>`, where the token carries the message's queue
//! id and the recipient, and a MAC over both, so the post office's bounce listener can tell,
//! without a database, which message and recipient a late bounce or complaint is about, and
//! refuses every token it did not make.
//!
//! Token: RFC 4648 base32, lowercase, no padding, of `mac (8 octets) || queue id (12 octets,
//! the 24 hex digits of [`crate::new_queue_id`]) || recipient (UTF-8)`, where `mac` is the
//! first 8 octets of HMAC-SHA256(secret, "hedwig-verp-1" NUL queue id NUL recipient). Base32
//! survives a remote server that changes the case of the local part. 64 bits of MAC: a forger
//! gets one guess per RCPT (and a session closes after 20 refusals), far from 2^63.
//!
//! A token is longer than RFC 5321 §4.5.3.1.1's 64-octet local part for all but short
//! recipients; common MTAs (Postfix, Exim, Exchange, Gmail) accept longer ones, as they do
//! for classic `user=domain` VERP.
//!
//! Not here: which sender domains use it (worker config), the listener (post office).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The local part before the `+`.
pub const LOCAL_PREFIX: &str = "bounces";

/// Octets of MAC in a token.
const MAC_LEN: usize = 8;
/// Octets of a packed queue id.
const QID_LEN: usize = 12;
/// Longest recipient a token carries (RFC 5321 §4.5.3.1.3: 256 octets per path).
pub const MAX_RECIPIENT: usize = 256;

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verp {
    /// The message's queue id (24 uppercase hex digits).
    pub queue_id: String,
    /// The recipient, as the job had it.
    pub recipient: String,
}

/// Why [`Token::make`] cannot make a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("queue id {0:?} is not 24 hex digits")]
    QueueId(String),
    #[error("recipient is longer than {MAX_RECIPIENT} octets")]
    RecipientTooLong,
    #[error("recipient is empty")]
    EmptyRecipient,
    #[error("the return path would be {0} octets; a path holds at most {MAX_PATH}")]
    PathTooLong(usize),
}

/// Longest return path made: RFC 5321 §4.5.3.1.3 allows a path of 256 octets, angle
/// brackets included. A longer one is refused by the bounce listener's SMTP parser (and by
/// strict receivers), so the worker sends such a recipient's copy with the plain envelope
/// sender instead (its late bounces then reach the sender, as without VERP).
pub const MAX_PATH: usize = 254;

/// The key tokens are made and checked with.
#[derive(Clone)]
pub struct VerpKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for VerpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerpKey(..)")
    }
}

impl VerpKey {
    /// A key from the secret (surrounding white space is not part of it).
    pub fn new(secret: &str) -> VerpKey {
        VerpKey {
            secret: secret.trim().as_bytes().to_vec(),
        }
    }

    fn mac(&self, queue_id: &str, recipient: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"hedwig-verp-1\0");
        mac.update(queue_id.as_bytes());
        mac.update(b"\0");
        mac.update(recipient.as_bytes());
        mac
    }

    /// The token for `recipient` of message `queue_id`.
    pub fn token(&self, queue_id: &str, recipient: &str) -> Result<String, VerpError> {
        let qid = queue_id.to_ascii_uppercase();
        let packed = match hex::decode(&qid) {
            Ok(b) if b.len() == QID_LEN => b,
            _ => return Err(VerpError::QueueId(queue_id.to_string())),
        };
        if recipient.len() > MAX_RECIPIENT {
            return Err(VerpError::RecipientTooLong);
        }
        if recipient.is_empty() {
            return Err(VerpError::EmptyRecipient);
        }
        let tag = self.mac(&qid, recipient).finalize().into_bytes();
        let mut raw = Vec::with_capacity(MAC_LEN + QID_LEN + recipient.len());
        raw.extend_from_slice(&tag[..MAC_LEN]);
        raw.extend_from_slice(&packed);
        raw.extend_from_slice(recipient.as_bytes());
        Ok(data_encoding::BASE32_NOPAD
            .encode(&raw)
            .to_ascii_lowercase())
    }

    /// The return path `bounces+<token>@<bounce_domain>`.
    pub fn return_path(
        &self,
        queue_id: &str,
        recipient: &str,
        bounce_domain: &str,
    ) -> Result<String, VerpError> {
        let path = format!(
            "{LOCAL_PREFIX}+{}@{bounce_domain}",
            self.token(queue_id, recipient)?
        );
        if path.len() > MAX_PATH {
            return Err(VerpError::PathTooLong(path.len()));
        }
        Ok(path)
    }

    /// What `token` names, when this key made it (the MAC is compared in constant time).
    pub fn verify(&self, token: &str) -> Option<Verp> {
        // Bounded before decoding: the longest token a recipient of MAX_RECIPIENT makes.
        if token.len() > (MAC_LEN + QID_LEN + MAX_RECIPIENT).div_ceil(5) * 8 {
            return None;
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(token.to_ascii_uppercase().as_bytes())
            .ok()?;
        if raw.len() <= MAC_LEN + QID_LEN {
            return None;
        }
        let (tag, rest) = raw.split_at(MAC_LEN);
        let (qid, recipient) = rest.split_at(QID_LEN);
        let queue_id = hex::encode_upper(qid);
        let recipient = std::str::from_utf8(recipient).ok()?;
        self.mac(&queue_id, recipient)
            .verify_truncated_left(tag)
            .ok()?;
        Some(Verp {
            queue_id,
            recipient: recipient.to_string(),
        })
    }

    /// What the address `local@domain` names: its local part is `bounces+<token>` (any case)
    /// and `domain` is one of `domains` (lowercase).
    pub fn verify_address(&self, address: &str, domains: &[String]) -> Option<Verp> {
        let (local, domain) = address.rsplit_once('@')?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !domains.contains(&domain) {
            return None;
        }
        let (prefix, token) = local.split_once('+')?;
        if !prefix.eq_ignore_ascii_case(LOCAL_PREFIX) {
            return None;
        }
        self.verify(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QID: &str = "018F2A3B4C5D0123456789AB";

    #[test]
    fn round_trip() {
        let key = VerpKey::new("test secret\n");
        let token = key.token(QID, "Bob.Smith+x@Example.COM").unwrap();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let v = key.verify(&token).unwrap();
        assert_eq!(v.queue_id, QID);
        assert_eq!(v.recipient, "Bob.Smith+x@Example.COM");
        // A remote server that uppercases the local part does not break it.
        assert_eq!(key.verify(&token.to_ascii_uppercase()), Some(v.clone()));
        let path = key
            .return_path(QID, "Bob.Smith+x@Example.COM", "bounces.example.com")
            .unwrap();
        let domains = vec!["bounces.example.com".to_string()];
        assert_eq!(key.verify_address(&path, &domains), Some(v.clone()));
        assert_eq!(
            key.verify_address(&path.to_ascii_uppercase(), &domains),
            Some(v)
        );
        assert_eq!(
            key.verify_address(&path, &["other.example".to_string()]),
            None
        );
        // A lowercase queue id packs to the same token.
        assert_eq!(
            key.token(&QID.to_ascii_lowercase(), "a@b").unwrap(),
            key.token(QID, "a@b").unwrap()
        );
    }

    #[test]
    fn forged_tokens_fail() {
        let key = VerpKey::new("test secret");
        let token = key.token(QID, "bob@example.com").unwrap();
        // Another key.
        assert_eq!(VerpKey::new("other").verify(&token), None);
        // Every single-character change.
        for i in 0..token.len() {
            for c in ['a', 'q', '2', '7'] {
                let mut t: Vec<char> = token.chars().collect();
                if t[i] == c {
                    continue;
                }
                t[i] = c;
                let t: String = t.into_iter().collect();
                assert_eq!(key.verify(&t), None, "changed at {i} to {c}");
            }
        }
        // Another recipient spliced onto the same MAC and queue id.
        let mut raw = data_encoding::BASE32_NOPAD
            .decode(token.to_ascii_uppercase().as_bytes())
            .unwrap();
        raw.truncate(MAC_LEN + QID_LEN);
        raw.extend_from_slice(b"eve@example.com");
        let spliced = data_encoding::BASE32_NOPAD.encode(&raw);
        assert_eq!(key.verify(&spliced), None);
        // Junk, empty, too short, too long, not base32.
        for junk in ["", "a", "aaaaaaaa", "!!!!", "0189", &"a".repeat(10_000)] {
            assert_eq!(key.verify(junk), None, "{junk:.20}");
        }
        let domains = vec!["b.example".to_string()];
        assert_eq!(key.verify_address("bounces@b.example", &domains), None);
        assert_eq!(
            key.verify_address(&format!("other+{token}@b.example"), &domains),
            None
        );
        assert_eq!(key.verify_address("no-at-sign", &domains), None);
    }

    #[test]
    fn bad_inputs_to_make() {
        let key = VerpKey::new("k");
        assert!(matches!(
            key.token("short", "a@b"),
            Err(VerpError::QueueId(_))
        ));
        assert!(matches!(
            key.token("ZZ8F2A3B4C5D0123456789AB", "a@b"),
            Err(VerpError::QueueId(_))
        ));
        let long = format!("{}@b", "a".repeat(MAX_RECIPIENT));
        assert_eq!(key.token(QID, &long), Err(VerpError::RecipientTooLong));
        assert_eq!(key.token(QID, ""), Err(VerpError::EmptyRecipient));
        let longest = format!("{}@b", "a".repeat(MAX_RECIPIENT - 2));
        let t = key.token(QID, &longest).unwrap();
        assert_eq!(key.verify(&t).unwrap().recipient, longest);
    }

    #[test]
    fn return_paths_fit_in_an_smtp_path() {
        let key = VerpKey::new("k".repeat(32).as_str());
        let domain = "bounces.example.com";
        // The longest recipient whose return path fits, and one octet more.
        let fits = (1..=MAX_RECIPIENT)
            .take_while(|n| {
                let r = format!("{}@example.org", "a".repeat(*n));
                key.return_path(QID, &r, domain).is_ok()
            })
            .last()
            .unwrap();
        let ok = format!("{}@example.org", "a".repeat(fits));
        let path = key.return_path(QID, &ok, domain).unwrap();
        assert!(
            path.len() <= MAX_PATH && path.len() > MAX_PATH - 8,
            "{}",
            path.len()
        );
        assert_eq!(
            key.verify_address(&path, &[domain.into()])
                .unwrap()
                .recipient,
            ok
        );
        let long = format!("{}@example.org", "a".repeat(fits + 1));
        assert!(matches!(
            key.return_path(QID, &long, domain),
            Err(VerpError::PathTooLong(n)) if n > MAX_PATH
        ));
    }
}
