//! One-click unsubscribe tokens (RFC 8058, issue 19): the worker adds to a bulk host's mail
//! `List-Unsubscribe: <https://…/unsubscribe/<token>>` and `List-Unsubscribe-Post:
//! List-Unsubscribe=One-Click`; a POST to that URL reaches the post office, which checks the
//! token without any database and records an `unsubscribed` event for the message and
//! recipient it names (the ledger writer then puts the recipient on the sender domain's
//! suppression list).
//!
//! Token: base64url (no padding) of `mac (16 octets) || version (1) || expires (4 octets,
//! Unix seconds, big endian) || queue id (12 octets) || sender domain NUL list id NUL
//! recipient`, where `mac` is the first 16 octets of HMAC-SHA256(secret, "hedwig-unsub-1"
//! NUL payload). The MAC binds every field, so a token unsubscribes exactly one recipient from
//! one sender domain: it cannot be changed to another address or domain, and it stops working
//! at its expiry. Using it twice does what the first use did.
//!
//! Not here: which hosts get the header (worker config), the endpoint (post office).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 16;
const VERSION: u8 = 1;
const QID_LEN: usize = 12;
/// Longest token checked (longer ones are refused before decoding): room for a 256-octet
/// recipient, a 253-octet domain and a 256-octet list id.
pub const MAX_TOKEN: usize = 1100;
/// Longest list id carried (a longer `List-Id:` is cut at a character boundary).
pub const MAX_LIST_ID: usize = crate::list_id::MAX_LIST_ID;

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The message's queue id (24 uppercase hex digits).
    pub queue_id: String,
    /// The envelope sender's domain (lowercase): the suppression list's scope.
    pub sender_domain: String,
    /// The message's `List-Id:` (its `<…>` part), or empty.
    pub list_id: String,
    /// The recipient, as the job had it.
    pub recipient: String,
    /// Unix seconds after which the token is refused.
    pub expires: u64,
}

/// Why a token cannot be made or is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsubscribeError {
    #[error("queue id {0:?} is not 24 hex digits")]
    QueueId(String),
    #[error("a field holds a NUL")]
    Nul,
    #[error("the token is malformed or was not made with this secret")]
    Invalid,
    #[error("the token expired")]
    Expired,
}

/// The key tokens are made and checked with (the workers' and the post office's
/// `unsubscribe` secret).
#[derive(Clone)]
pub struct UnsubscribeKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for UnsubscribeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsubscribeKey(..)")
    }
}

impl UnsubscribeKey {
    /// A key from the secret (surrounding white space is not part of it).
    pub fn new(secret: &str) -> UnsubscribeKey {
        UnsubscribeKey {
            secret: secret.trim().as_bytes().to_vec(),
        }
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"hedwig-unsub-1\0");
        mac.update(payload);
        mac
    }

    /// The token for `what` (its `list_id` cut to [`MAX_LIST_ID`]).
    pub fn token(&self, what: &Unsubscribe) -> Result<String, UnsubscribeError> {
        let packed = match hex::decode(what.queue_id.to_ascii_uppercase()) {
            Ok(b) if b.len() == QID_LEN => b,
            _ => return Err(UnsubscribeError::QueueId(what.queue_id.clone())),
        };
        let list_id = cut(&what.list_id, MAX_LIST_ID);
        let domain = what.sender_domain.to_ascii_lowercase();
        if [domain.as_str(), list_id, what.recipient.as_str()]
            .iter()
            .any(|f| f.contains('\0'))
        {
            return Err(UnsubscribeError::Nul);
        }
        let expires = u32::try_from(what.expires).unwrap_or(u32::MAX);
        let mut payload = Vec::with_capacity(64 + what.recipient.len() + list_id.len());
        payload.push(VERSION);
        payload.extend_from_slice(&expires.to_be_bytes());
        payload.extend_from_slice(&packed);
        payload.extend_from_slice(domain.as_bytes());
        payload.push(0);
        payload.extend_from_slice(list_id.as_bytes());
        payload.push(0);
        payload.extend_from_slice(what.recipient.as_bytes());
        let tag = self.mac(&payload).finalize().into_bytes();
        let mut raw = tag[..MAC_LEN].to_vec();
        raw.extend_from_slice(&payload);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// What `token` names, when this key made it (MAC compared in constant time) and it has
    /// not expired at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Unsubscribe, UnsubscribeError> {
        if token.len() > MAX_TOKEN {
            return Err(UnsubscribeError::Invalid);
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| UnsubscribeError::Invalid)?;
        if raw.len() < MAC_LEN + 1 + 4 + QID_LEN + 2 {
            return Err(UnsubscribeError::Invalid);
        }
        let (tag, payload) = raw.split_at(MAC_LEN);
        self.mac(payload)
            .verify_truncated_left(tag)
            .map_err(|_| UnsubscribeError::Invalid)?;
        if payload[0] != VERSION {
            return Err(UnsubscribeError::Invalid);
        }
        let expires = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
        let queue_id = hex::encode_upper(&payload[5..5 + QID_LEN]);
        let text =
            std::str::from_utf8(&payload[5 + QID_LEN..]).map_err(|_| UnsubscribeError::Invalid)?;
        let mut fields = text.splitn(3, '\0');
        let (Some(sender_domain), Some(list_id), Some(recipient)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(UnsubscribeError::Invalid);
        };
        if u64::from(expires) < now {
            return Err(UnsubscribeError::Expired);
        }
        Ok(Unsubscribe {
            queue_id,
            sender_domain: sender_domain.to_owned(),
            list_id: list_id.to_owned(),
            recipient: recipient.to_owned(),
            expires: u64::from(expires),
        })
    }
}

/// `s` cut to at most `max` octets at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const QID: &str = "018F2A3B4C5D0123456789AB";

    fn what() -> Unsubscribe {
        Unsubscribe {
            queue_id: QID.into(),
            sender_domain: "news.example.com".into(),
            list_id: "weekly.news.example.com".into(),
            recipient: "Bob@example.org".into(),
            expires: 2_000_000_000,
        }
    }

    #[test]
    fn a_token_names_one_recipient_of_one_sender_domain_until_it_expires() {
        let key = UnsubscribeKey::new("an unsubscribe secret, long enough");
        let token = key.token(&what()).unwrap();
        assert!(token.len() <= MAX_TOKEN);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(key.verify(&token, 1_900_000_000).unwrap(), what());
        assert_eq!(
            key.verify(&token, 2_000_000_001),
            Err(UnsubscribeError::Expired)
        );
        // another secret, any changed character, another recipient spliced in
        let other = UnsubscribeKey::new("another secret, long enough too");
        assert_eq!(other.verify(&token, 0), Err(UnsubscribeError::Invalid));
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(key.verify(&changed, 0).is_err(), "position {i}");
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        let mut spliced = raw.clone();
        let at = spliced.len() - "Bob@example.org".len();
        spliced.truncate(at);
        spliced.extend_from_slice(b"eve@example.org");
        let spliced = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(spliced);
        assert_eq!(key.verify(&spliced, 0), Err(UnsubscribeError::Invalid));
        // bounded before decoding, and junk is refused
        assert!(key.verify(&"A".repeat(MAX_TOKEN + 1), 0).is_err());
        assert!(key.verify("not base64!", 0).is_err());
        assert!(key.verify("", 0).is_err());
    }

    #[test]
    fn long_list_ids_are_cut_and_bad_fields_refused() {
        let key = UnsubscribeKey::new("an unsubscribe secret, long enough");
        let mut w = what();
        w.list_id = "é".repeat(200);
        let got = key.verify(&key.token(&w).unwrap(), 0).unwrap();
        assert_eq!(got.list_id, "é".repeat(128));
        w.recipient = "a\0b@example.org".into();
        assert_eq!(key.token(&w), Err(UnsubscribeError::Nul));
        w.queue_id = "nothex".into();
        assert!(matches!(key.token(&w), Err(UnsubscribeError::QueueId(_))));
        let mut longest = what();
        longest.recipient = format!("{}@{}", "r".repeat(64), "d".repeat(190));
        longest.sender_domain = "s".repeat(253);
        longest.list_id = "l".repeat(MAX_LIST_ID);
        let t = key.token(&longest).unwrap();
        assert!(t.len() <= MAX_TOKEN, "{}", t.len());
        assert_eq!(key.verify(&t, 0).unwrap().recipient, longest.recipient);
    }
}
