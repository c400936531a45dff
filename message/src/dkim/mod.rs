//! DKIM signing (RFC 6376) for outgoing mail, with keys chosen among the domains the sending
//! host is authorised for ([`authorised_domains`], [`Signer::sign_for`]).
//!
//! [`Signer::new`] reads and parses every configured key once; [`Signer::sign`] then costs one
//! body hash plus one private-key operation per key (an RSA-2048 signature or an Ed25519 one;
//! both when both are configured for the domain, RFC 8463 §1). Canonicalization is
//! relaxed/relaxed. Every field named in [`SIGNED_HEADERS`] is signed once per occurrence plus
//! once more (oversigned, RFC 6376 §5.4.2 and §8.15): a second Subject:, a Reply-To: or another
//! Cc: added after signing, on top or at the bottom, breaks the signature.
//!
//! The message is never modified: [`Signer::sign`] returns the `DKIM-Signature:` fields to
//! write in front of it, so 8-bit and UTF-8 bodies go out byte for byte as signed. The caller
//! must pass exactly the bytes it will send (CRLF line endings, not yet dot-stuffed).
//!
//! Not here: verification, ARC, `l=` body lengths (unsafe), and DNS publication (see
//! [`txt_record`] for the record to publish).

mod fields;
mod key;

use std::collections::HashMap;
use std::path::PathBuf;

use mail_auth::common::crypto::{DkimKey as AnyKey, HashAlgorithm, SigningKey as _};
use mail_auth::common::headers::{HeaderWriter as _, Writable, Writer};
use mail_auth::dkim::canonicalize::CanonicalHeaders;
use mail_auth::dkim::{Canonicalization, Signature};
use serde::{Deserialize, Serialize};

pub use key::{generate, txt_record, txt_record_for_pem, Algorithm, GeneratedKey};

use crate::Error;
use fields::Fields;
use hedwig_core::from::{domain_and_parents, FromHeader};
use hedwig_queue::job::{Envelope, Kind};

/// The header fields that carry meaning for the reader or for the receiver's filters: each is
/// signed once per occurrence plus once more (also when absent), so none can be added later.
///
/// `List-Unsubscribe-Post` is included because RFC 8058 §4 requires one-click unsubscribe
/// headers to be covered by a DKIM signature. `Sender` because a receiver may show it in place
/// of From:.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Reply-To",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Sender",
];

/// The `dkim:` section of the worker's config.
///
/// ```yaml
/// dkim:
///   default_domain: example.com      # optional: signs mail from domains without a key
///   keys:
///     - { domain: example.com, selector: rsa2026, key_file: /etc/hedwig/dkim/example.com.rsa.pem }
///     - { domain: example.com, selector: ed2026, algorithm: ed25519, key_file: /etc/hedwig/dkim/example.com.ed25519.pem }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// Keys by signing domain; several per domain (e.g. one RSA and one Ed25519) all sign.
    #[serde(default)]
    pub keys: Vec<DkimKey>,
    /// Mail that may be signed for some domain (the post office authorised its From:) but
    /// has no key for any of them is signed with this domain's keys (the signature then does
    /// not align for DMARC, but still carries the relay's reputation). Unset: such mail goes
    /// out unsigned. Mail from a host without `allowed_sender_domains` is never signed.
    #[serde(default)]
    pub default_domain: Option<String>,
}

/// One signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The `d=` domain. It signs mail the post office authorised for this domain: From: in
    /// this domain, or in a subdomain when the host's policy also names this domain.
    pub domain: String,
    /// The `s=` selector: the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// `rsa` or `ed25519`; when absent it is read from the key file. When given, the key
    /// file must match.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// PEM private key: RSA PKCS#1/PKCS#8, or Ed25519 PKCS#8.
    pub key_file: PathBuf,
}

/// A loaded key with its `d=` and `s=`.
struct DomainKey {
    /// A-labels, lowercase, no trailing dot.
    domain: String,
    selector: String,
    algorithm: Algorithm,
    key: AnyKey,
    txt: String,
    key_file: PathBuf,
}

/// A key as the signer holds it, for reporting and DNS checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// A-labels, lowercase.
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// The TXT value that must be published at [`KeyInfo::dns_name`].
    pub txt: String,
    pub key_file: PathBuf,
}

impl KeyInfo {
    /// `<selector>._domainkey.<domain>`
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

/// Signs messages with the configured keys. Cheap to share (`Arc<Signer>`): `sign` takes
/// `&self` and allocates only the output.
pub struct Signer {
    keys: Vec<DomainKey>,
    /// Domain → indexes into `keys`, in config order.
    by_domain: HashMap<String, Vec<usize>>,
    default_domain: Option<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys())
            .field("default_domain", &self.default_domain)
            .finish()
    }
}

impl Signer {
    /// Loads every key of `config`. All problems are reported at once, one per line, each
    /// naming the key file or domain.
    pub fn new(config: &DkimConfig) -> Result<Signer, Error> {
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        let mut by_domain: HashMap<String, Vec<usize>> = HashMap::new();
        for entry in &config.keys {
            let domain = match normalize_domain(&entry.domain) {
                Ok(domain) => domain,
                Err(why) => {
                    problems.push(format!("domain {:?}: {why}", entry.domain));
                    continue;
                }
            };
            if !valid_selector(&entry.selector) {
                problems.push(format!(
                    "selector {:?} of {domain}: not a DNS name (letters, digits, '-', '_', '.')",
                    entry.selector
                ));
                continue;
            }
            let selector = entry.selector.to_ascii_lowercase();
            if keys
                .iter()
                .any(|k: &DomainKey| k.domain == domain && k.selector == selector)
            {
                problems.push(format!(
                    "selector {selector} of {domain} is configured twice"
                ));
                continue;
            }
            let loaded = match key::load_file(&entry.key_file) {
                Ok(loaded) => loaded,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            if let Some(wanted) = entry.algorithm {
                if wanted != loaded.algorithm {
                    problems.push(format!(
                        "{}: configured as {wanted} but holds an {} key",
                        entry.key_file.display(),
                        loaded.algorithm
                    ));
                    continue;
                }
            }
            by_domain
                .entry(domain.clone())
                .or_default()
                .push(keys.len());
            keys.push(DomainKey {
                txt: txt_record(loaded.algorithm, &loaded.public),
                domain,
                selector,
                algorithm: loaded.algorithm,
                key: loaded.key,
                key_file: entry.key_file.clone(),
            });
        }
        let default_domain = match &config.default_domain {
            None => None,
            Some(d) => match normalize_domain(d) {
                Ok(domain) if by_domain.contains_key(&domain) => Some(domain),
                Ok(domain) => {
                    problems.push(format!("default_domain {domain} has no key"));
                    None
                }
                Err(why) => {
                    problems.push(format!("default_domain {d:?}: {why}"));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("\n")));
        }
        Ok(Signer {
            keys,
            by_domain,
            default_domain,
        })
    }

    /// The loaded keys, in config order.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|k| KeyInfo {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                algorithm: k.algorithm,
                txt: k.txt.clone(),
                key_file: k.key_file.clone(),
            })
            .collect()
    }

    /// Whether any key is configured (if not, `sign` always answers `None`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The domain whose keys sign a message that may be signed for `authorised` (most
    /// specific first, A-labels): the first of them that has a key, else the default domain,
    /// else `None`. Always `None` when `authorised` is empty: the default domain's signature
    /// is only added to mail whose From: the sending host was allowed to use.
    pub fn signing_domain_for(&self, authorised: &[String]) -> Option<&str> {
        if authorised.is_empty() {
            return None;
        }
        for wanted in authorised {
            let wanted = wanted.trim_end_matches('.').to_ascii_lowercase();
            if let Some((domain, _)) = self.by_domain.get_key_value(&wanted) {
                return Some(domain.as_str());
            }
        }
        self.default_domain.as_deref()
    }

    /// Signs `message` at Unix time `now` (the `t=` tag) for the first domain of `authorised`
    /// that has keys (see [`Signer::signing_domain_for`]).
    ///
    /// Returns the `DKIM-Signature:` header fields (CRLF-terminated, folded) to write in
    /// front of the message, one per key of the signing domain, or `None` when no key
    /// applies.
    pub fn sign_for(
        &self,
        message: &[u8],
        authorised: &[String],
        now: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let Some(domain) = self.signing_domain_for(authorised) else {
            return Ok(None);
        };
        self.sign_with(domain, message, now)
    }

    /// [`Signer::sign_for`]'s header fields followed by `message`, or a copy of `message`.
    pub fn sign_message_for(
        &self,
        message: &[u8],
        authorised: &[String],
        now: u64,
    ) -> Result<Vec<u8>, Error> {
        prepend(self.sign_for(message, authorised, now)?, message)
    }

    /// The domain whose keys would sign `message` when its own From: domain is trusted: the
    /// From: domain or its nearest parent with a key, else the default domain, else `None`
    /// (also for a message without a parsable From:).
    ///
    /// For tools and tests that sign their own mail. Mail from sending hosts is signed with
    /// [`Signer::sign_for`] and the domains the post office authorised: the From: of such
    /// mail says nothing about what its sender may sign for.
    pub fn signing_domain(&self, message: &[u8]) -> Option<&str> {
        self.signing_domain_for(&from_domain_and_parents(message)?)
    }

    /// Signs `message` as [`Signer::signing_domain`] chooses (trusting its From:); see
    /// [`Signer::sign_for`] for mail from sending hosts.
    pub fn sign(&self, message: &[u8], now: u64) -> Result<Option<Vec<u8>>, Error> {
        let Some(domain) = self.signing_domain(message) else {
            return Ok(None);
        };
        self.sign_with(domain, message, now)
    }

    fn sign_with(&self, domain: &str, message: &[u8], now: u64) -> Result<Option<Vec<u8>>, Error> {
        let Some(indexes) = self.by_domain.get(domain) else {
            return Ok(None);
        };
        let h = oversigned_headers(message);
        let mut out = Vec::with_capacity(indexes.len() * 512);
        let mut body_hash: Option<Vec<u8>> = None;
        for &i in indexes {
            let key = &self.keys[i];
            let template = Signature {
                v: 1,
                a: key.key.algorithm(),
                d: key.domain.clone(),
                s: key.selector.clone(),
                h: h.clone(),
                ch: Canonicalization::Relaxed,
                cb: Canonicalization::Relaxed,
                ..Default::default()
            };
            let (_, headers, signed, body) = template.canonicalize(Fields::new(message));
            let mut signature = template;
            // Both algorithms hash the body with SHA-256 the same way: hash it once.
            let bh =
                body_hash.get_or_insert_with(|| HashAlgorithm::Sha256.hash(body).as_ref().to_vec());
            signature.bh = bh.clone();
            signature.t = now;
            signature.h = signed;
            signature.b = key
                .key
                .sign(Signable {
                    headers,
                    signature: &signature,
                })
                .map_err(|e| Error::Sign {
                    domain: key.domain.clone(),
                    why: e.to_string(),
                })?;
            signature.write_header(&mut out);
        }
        Ok(Some(out))
    }

    /// The signed message: [`Signer::sign`]'s header fields followed by `message`, or a copy
    /// of `message` when no key applies.
    pub fn sign_message(&self, message: &[u8], now: u64) -> Result<Vec<u8>, Error> {
        prepend(self.sign(message, now)?, message)
    }
}

fn prepend(fields: Option<Vec<u8>>, message: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(match fields {
        Some(mut signed) => {
            signed.extend_from_slice(message);
            signed
        }
        None => message.to_vec(),
    })
}

/// The domains a queued message may be signed for, as the worker decides it:
///
/// - a bounce (made by a worker, From: `MAILER-DAEMON@<hostname>`): `hostname` and its
///   parents;
/// - a job with `dkim_domains`: exactly those (the post office chose them from the sending
///   host's policy);
/// - a job from a post office before that field: the From: domain, only when the message has
///   one From: field whose every address is in the envelope sender's domain (the one that
///   post office checked); else none.
pub fn authorised_domains(envelope: &Envelope, message: &[u8], hostname: &str) -> Vec<String> {
    if envelope.kind == Kind::Bounce {
        let hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
        return domain_and_parents(&hostname).map(str::to_string).collect();
    }
    if let Some(domains) = &envelope.dkim_domains {
        return domains.clone();
    }
    let Ok(Some(sender)) = hedwig_core::address::parse_reverse_path(&envelope.mail_from) else {
        return Vec::new();
    };
    let from = FromHeader::parse(message);
    match from.domains() {
        Ok(domains)
            if from.fields == 1
                && !domains.is_empty()
                && domains.iter().all(|d| *d == sender.ascii_domain) =>
        {
            vec![sender.ascii_domain]
        }
        _ => Vec::new(),
    }
}

/// What the private key signs: the selected header fields, then the DKIM-Signature field
/// itself with an empty `b=` (RFC 6376 §3.7), both canonicalized.
struct Signable<'a> {
    headers: CanonicalHeaders<'a>,
    signature: &'a Signature,
}

impl Writable for Signable<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.headers.write(writer);
        self.signature.write(writer, false);
    }
}

/// The `h=` template for `message`: the names of [`SIGNED_HEADERS`] it has, then every name of
/// [`SIGNED_HEADERS`] once more.
///
/// mail-auth's canonicalization signs every occurrence of a listed name (bottom-up) and then
/// appends each list entry it found no field for. The first entry of a present name matches
/// all its fields; the second entry never matches (a name's first entry takes them), so it is
/// appended as a null field. The result is RFC 6376 §5.4.2's oversigning: a name listed one
/// time more than it occurs, which signs the absence of one more instance, so a verifier
/// taking fields bottom-up finds the added one and the signature no longer verifies. An absent
/// name is listed once and signs its absence.
fn oversigned_headers(message: &[u8]) -> Vec<String> {
    let mut h = present_signed_headers(message);
    h.extend(SIGNED_HEADERS.iter().map(|name| name.to_string()));
    h
}

/// The names of [`SIGNED_HEADERS`] present in `message`, in that list's order.
fn present_signed_headers(message: &[u8]) -> Vec<String> {
    let mut present = [false; SIGNED_HEADERS.len()];
    for (name, _) in Fields::new(message) {
        if let Some(i) = SIGNED_HEADERS
            .iter()
            .position(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            present[i] = true;
        }
    }
    SIGNED_HEADERS
        .iter()
        .zip(present)
        .filter(|(_, p)| *p)
        .map(|(h, _)| h.to_string())
        .collect()
}

/// The domain (A-labels, lowercase) of the first address of the first From: field, then its
/// parents.
fn from_domain_and_parents(message: &[u8]) -> Option<Vec<String>> {
    let (_, value) = Fields::new(message).find(|(name, _)| name.eq_ignore_ascii_case(b"From"))?;
    let parsed = mail_parser::parsers::MessageStream::new(value).parse_address();
    let address = parsed.as_address()?.first()?.address()?;
    let domain = hedwig_core::address::Mailbox::parse(address)
        .ok()?
        .ascii_domain;
    Some(domain_and_parents(&domain).map(str::to_string).collect())
}

/// A-labels, lowercase, without a trailing dot.
fn normalize_domain(domain: &str) -> Result<String, String> {
    let domain = domain.trim().trim_end_matches('.');
    let ascii = idna::domain_to_ascii(domain).map_err(|_| "not a valid domain name".to_string())?;
    if ascii.is_empty() || !ascii.contains('.') {
        return Err("not a fully qualified domain name".to_string());
    }
    Ok(ascii.to_ascii_lowercase())
}

fn valid_selector(selector: &str) -> bool {
    !selector.is_empty()
        && selector.len() <= 63 * 4
        && !selector.starts_with('.')
        && !selector.ends_with('.')
        && !selector.contains("..")
        && selector
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests;
