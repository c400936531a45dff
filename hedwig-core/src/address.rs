//! Mailbox syntax: RFC 5321 §4.1.2 with the RFC 6531 (SMTPUTF8) extensions.
//!
//! A mailbox is `local-part@domain`. The local part is a dot-string of atext (UTF-8 allowed) or a
//! quoted string; the domain is a host name whose labels may be U-labels (IDN, checked and
//! converted with the `idna` crate) or an address literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`.
//! [`Recipient`] is a recipient as a queued job carries it: the text, and the mailbox parsed
//! once from it (at intake, then when the worker decodes the job). This module checks syntax
//! only; whether the domain exists is the worker's business.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Why an address is not a valid mailbox.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{address:?} is not a valid mailbox: {why}")]
pub struct AddressError {
    pub address: String,
    pub why: &'static str,
}

/// A syntactically valid mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part as written (quotes kept).
    pub local: String,
    /// The domain as written (U-labels kept), or the address literal with brackets.
    pub domain: String,
    /// The domain in A-labels, lowercase (`xn--...`), for DNS; the literal for literals.
    pub ascii_domain: String,
}

impl Mailbox {
    /// Parses `local@domain`; one pair of surrounding angle brackets is tolerated.
    pub fn parse(address: &str) -> Result<Mailbox, AddressError> {
        let err = |why| AddressError {
            address: address.to_string(),
            why,
        };
        // Checked before trimming: a CR, LF or NUL anywhere (also at the ends, which `trim`
        // would hide) means someone tried to smuggle an SMTP command or a header line in.
        if address.chars().any(char::is_control) {
            return Err(err(
                "it contains a control character (CR, LF, NUL, TAB or another)",
            ));
        }
        let addr = address.trim();
        let addr = addr
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(addr);
        if addr.is_empty() {
            return Err(err("it is empty"));
        }
        // RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the brackets.
        if addr.len() > 254 {
            return Err(err("it is longer than 254 octets"));
        }
        let at = addr.rfind('@').ok_or_else(|| err("it has no '@'"))?;
        let (local, domain) = (&addr[..at], &addr[at + 1..]);
        check_local(local).map_err(err)?;
        let ascii_domain = check_domain(domain).map_err(err)?;
        Ok(Mailbox {
            local: local.to_string(),
            domain: domain.to_string(),
            ascii_domain,
        })
    }

    /// Whether delivering this address needs the SMTPUTF8 extension (a non-ASCII local part;
    /// a non-ASCII domain can travel as A-labels).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }

    /// The address as it goes on the wire (MAIL FROM, RCPT TO): a non-ASCII domain as
    /// A-labels when the local part is ASCII (so it needs no SMTPUTF8); otherwise as written.
    pub fn wire(&self) -> String {
        if self.needs_smtputf8() {
            self.to_string()
        } else {
            format!("{}@{}", self.local, self.ascii_domain)
        }
    }
}

/// A recipient as a queued job carries it: the address as queued (the post office writes
/// [`Mailbox`]'s display form) and, parsed once when the job is decoded, its [`Mailbox`].
///
/// On the wire (the job's JSON) it is the plain string, so job bodies are unchanged. A
/// string that does not parse still decodes: the recipient keeps its [`AddressError`] and
/// the worker fails that one recipient for good (`bad-address`) instead of refusing the job.
/// Equality, order and hashing are those of the text.
#[derive(Debug, Clone)]
pub struct Recipient {
    text: String,
    mailbox: Result<Mailbox, AddressError>,
}

impl Recipient {
    /// Parses `text`; never fails (a bad address keeps its error, see [`Recipient::mailbox`]).
    pub fn parse(text: impl Into<String>) -> Recipient {
        let text = text.into();
        let mailbox = Mailbox::parse(&text);
        Recipient { text, mailbox }
    }

    /// A recipient already parsed (the post office's intake): the text is its display form.
    pub fn from_mailbox(mailbox: Mailbox) -> Recipient {
        Recipient {
            text: mailbox.to_string(),
            mailbox: Ok(mailbox),
        }
    }

    /// The address as queued.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed mailbox, or why the text is not one.
    pub fn mailbox(&self) -> Result<&Mailbox, &AddressError> {
        self.mailbox.as_ref()
    }

    /// The address for RCPT TO ([`Mailbox::wire`]); the text as queued when it does not parse.
    pub fn wire(&self) -> std::borrow::Cow<'_, str> {
        match &self.mailbox {
            Ok(m) => m.wire().into(),
            Err(_) => self.text.as_str().into(),
        }
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Recipient {
    fn eq(&self, other: &Recipient) -> bool {
        self.text == other.text
    }
}

impl Eq for Recipient {}

impl std::hash::Hash for Recipient {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl PartialOrd for Recipient {
    fn partial_cmp(&self, other: &Recipient) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Recipient {
    fn cmp(&self, other: &Recipient) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

// Eq, Ord and Hash are the text's, as `Borrow` requires; it makes `[Recipient]::join` work.
impl std::borrow::Borrow<str> for Recipient {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for Recipient {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for Recipient {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Recipient {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<String> for Recipient {
    fn eq(&self, other: &String) -> bool {
        self.text == *other
    }
}

impl From<String> for Recipient {
    fn from(text: String) -> Recipient {
        Recipient::parse(text)
    }
}

impl From<&str> for Recipient {
    fn from(text: &str) -> Recipient {
        Recipient::parse(text)
    }
}

impl From<Recipient> for String {
    fn from(r: Recipient) -> String {
        r.text
    }
}

impl Serialize for Recipient {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Recipient {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Recipient, D::Error> {
        String::deserialize(deserializer).map(Recipient::parse)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Checks a domain as it may follow the `@` of a mailbox: a host name (U-labels allowed) or an
/// address literal. Returns the A-label, lowercase form (the literal for a literal).
pub fn parse_domain(domain: &str) -> Result<String, AddressError> {
    check_domain(domain).map_err(|why| AddressError {
        address: domain.to_string(),
        why,
    })
}

/// Whether `domain` (as [`Mailbox::domain`] holds it) is an address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`).
pub fn is_address_literal(domain: &str) -> bool {
    domain.starts_with('[')
}

/// The IP address of an address-literal domain (`[192.0.2.1]`, `[IPv6:2001:db8::1]`, the tag
/// in any case); `None` for a host name. An IPv4-mapped IPv6 address comes back as IPv4.
pub fn literal_ip(domain: &str) -> Option<IpAddr> {
    let literal = domain.strip_prefix('[')?.strip_suffix(']')?;
    let ip = match literal.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            IpAddr::V6(literal[5..].parse::<Ipv6Addr>().ok()?)
        }
        _ => IpAddr::V4(literal.parse::<Ipv4Addr>().ok()?),
    };
    Some(ip.to_canonical())
}

/// Which address literals may be used as mail domains: the `address_literals` setting of the
/// post office (refused at intake with 400) and of the worker (never connected to). Without
/// it a key holder could make the worker open port 25 on any internal address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddressLiterals {
    /// Networks whose literals are accepted (`[10.1.2.0/24, "fd00::/8"]`); empty (the
    /// default): every address literal is refused.
    pub allow: Vec<ipnet::IpNet>,
}

impl AddressLiterals {
    /// `Ok` for a host name or an allowed literal; for any other literal, why not.
    pub fn check(&self, domain: &str) -> Result<(), String> {
        if !is_address_literal(domain) {
            return Ok(());
        }
        match literal_ip(domain) {
            Some(ip) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(_) => Err(format!(
                "address literal {domain} is refused: it is not in address_literals.allow"
            )),
            None => Err(format!(
                "address literal {domain} is not an IPv4 or IPv6 address"
            )),
        }
    }
}

/// Checks a reverse-path: the null sender (empty, or `<>`) or a mailbox.
pub fn parse_reverse_path(address: &str) -> Result<Option<Mailbox>, AddressError> {
    match address.trim() {
        // `Mailbox::parse` sees the untrimmed text, so a CR or LF at either end is refused.
        "" | "<>" if !address.chars().any(char::is_control) => Ok(None),
        _ => Mailbox::parse(address).map(Some),
    }
}

// RFC 5322 §3.2.3 atext, plus any non-ASCII character (RFC 6531 §3.3 UTF8-non-ascii).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn check_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("the local part is empty");
    }
    // RFC 5321 §4.5.3.1.1: 64 octets.
    if local.len() > 64 {
        return Err("the local part is longer than 64 octets");
    }
    if let Some(inner) = local.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or("the quoted local part is not closed")?;
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                // quoted-pairSMTP = "\" %d32-126
                '\\' => match chars.next() {
                    Some(q) if (' '..='~').contains(&q) => {}
                    _ => return Err("a backslash in the quoted local part escapes nothing valid"),
                },
                // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF8-non-ascii
                '"' => return Err("an unescaped '\"' inside the quoted local part"),
                c if (' '..='~').contains(&c) || !c.is_ascii() => {}
                _ => return Err("a control character in the local part"),
            }
        }
        return Ok(());
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err("the local part has an empty atom (leading, trailing or double '.')");
        }
        if !atom.chars().all(is_atext) {
            return Err("the local part has a character that needs quoting");
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() {
        return Err("the domain is empty");
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal
            .strip_suffix(']')
            .ok_or("the address literal is not closed")?;
        let ok = match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                literal[5..].parse::<Ipv6Addr>().is_ok()
            }
            _ => literal.parse::<Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(domain.to_string())
        } else {
            Err("the address literal is not an IPv4 or IPv6 address")
        };
    }
    let ascii = idna::domain_to_ascii_strict(domain.trim_end_matches('.'))
        .map_err(|_| "the domain is not a valid (internationalized) host name")?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err("the domain is empty or longer than 253 octets");
    }
    for label in ascii.split('.') {
        // RFC 5321 §4.1.2 sub-domain = Let-dig [Ldh-str]
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("the domain has an invalid label");
        }
    }
    Ok(ascii)
}

/// Whether `domain` is in `allowed`, whose entries are `example.com` (exactly) or
/// `*.example.com` (it and its subdomains), in any case, with or without a trailing dot. An
/// empty list matches nothing. The one reading of a domain list: the post office's
/// `allowed_sender_domains` (where empty means any) and mailman's `hedwig.sender-domains`.
pub fn domain_in_list(allowed: &[String], domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.trim_end_matches('.').to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(parent) => {
                domain == parent
                    || domain
                        .strip_suffix(parent)
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            None => domain == a,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_mailboxes() {
        for ok in [
            "user@example.com",
            "<user@example.com>",
            "first.last+tag@sub.example.co.uk",
            "\"john doe\"@example.com",
            "\"a\\\"b\"@example.com",
            "!#$%&'*+-/=?^_`{|}~@example.com",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "josé@example.com",
            "用户@例子.广告",
            "user@bücher.de",
        ] {
            assert!(
                Mailbox::parse(ok).is_ok(),
                "{ok} rejected: {:?}",
                Mailbox::parse(ok)
            );
        }
        let m = Mailbox::parse("josé@Bücher.DE").unwrap();
        assert_eq!(m.ascii_domain, "xn--bcher-kva.de");
        assert!(m.needs_smtputf8());
        assert!(!Mailbox::parse("a@bücher.de").unwrap().needs_smtputf8());
    }

    #[test]
    fn invalid_mailboxes() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long = format!("a@{}.com", "b.".repeat(130));
        for bad in [
            "",
            "plain",
            "@example.com",
            "user@",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a(b)@example.com",
            "\"unclosed@example.com",
            "\"a\"b\"@example.com",
            "user@-example.com",
            "user@exa mple.com",
            "user@example..com",
            "user@[300.1.1.1]",
            "user@[IPv6:zz::1]",
            "a\u{0}b@example.com",
            "user@exa_mple.com",
            &long_local,
            &long,
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn control_characters_anywhere_are_refused() {
        // `trim` would strip the ones at the ends; they must be refused, not dropped.
        for bad in [
            "a@example.com\r\n",
            "\r\na@example.com",
            "a@example.com\n",
            "a@example.com\r",
            "a@example.com\0",
            "\0a@example.com",
            "j\u{f6}rg@example.com\r\n",
            "a@example.com\r\nRCPT TO:<victim@example.org>",
            "a@example.com>\r\nRSET",
            "\"a\r\nb\"@example.com",
            "\"a\tb\"@example.com",
            "a@exam\nple.com",
            "a@example.com\u{7f}",
            "a@example.com\u{85}",
        ] {
            let err = Mailbox::parse(bad).expect_err(bad);
            assert!(err.why.contains("control character"), "{bad:?}: {err}");
            assert!(parse_reverse_path(bad).is_err(), "{bad:?}");
        }
        // Spaces around an address are still tolerated (and dropped).
        assert_eq!(
            Mailbox::parse("  a@example.com ").unwrap().to_string(),
            "a@example.com"
        );
        // Characters that could end the path or add parameters are refused unquoted.
        for bad in [
            "a>b@example.com",
            "a b@example.com",
            "<a@example.com> SIZE=1",
            "a@example.com> NOTIFY=NEVER",
            "a@example.com SIZE=1",
            "<a@example.com><b@example.com>",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            literal_ip("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            literal_ip("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            literal_ip("[IPv6:::ffff:10.0.0.1]"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(literal_ip("example.com"), None);
        assert_eq!(literal_ip("[2001:db8::1]"), None, "IPv6 needs its tag");
        let none = AddressLiterals::default();
        assert!(none.check("example.com").is_ok());
        assert!(none.check("[192.0.2.1]").is_err());
        assert!(none.check("[IPv6:::1]").is_err());
        let some = AddressLiterals {
            allow: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        };
        assert!(some.check("[10.1.2.3]").is_ok());
        assert!(some.check("[IPv6:::ffff:10.1.2.3]").is_ok());
        assert!(some.check("[IPv6:fd00::25]").is_ok());
        assert!(some.check("[127.0.0.1]").is_err());
        assert!(some.check("[IPv6:::1]").is_err());
    }

    #[test]
    fn recipients_keep_their_text_and_parse_once() {
        let r = Recipient::parse("a@B\u{fc}cher.example");
        assert_eq!(r, "a@B\u{fc}cher.example");
        assert_eq!(r.mailbox().unwrap().ascii_domain, "xn--bcher-kva.example");
        assert_eq!(r.wire(), "a@xn--bcher-kva.example");
        let utf8 = Recipient::parse("j\u{f6}rg@b\u{fc}cher.example");
        assert_eq!(utf8.wire(), "j\u{f6}rg@b\u{fc}cher.example");
        // Not an address: kept, with its error; never a panic.
        let bad = Recipient::parse("no at sign");
        assert!(bad.mailbox().is_err());
        assert_eq!(bad.wire(), "no at sign");
        // The JSON form is the plain string, both ways.
        let json = serde_json::to_string(&vec![r.clone(), bad.clone()]).unwrap();
        assert_eq!(json, "[\"a@B\u{fc}cher.example\",\"no at sign\"]");
        let back: Vec<Recipient> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [r, bad]);
        assert!(back[1].mailbox().is_err());
        assert_eq!(back.join(","), "a@B\u{fc}cher.example,no at sign");
        let m = Mailbox::parse("x@y.example").unwrap();
        assert_eq!(Recipient::from_mailbox(m.clone()).mailbox(), Ok(&m));
    }

    #[test]
    fn reverse_path() {
        assert_eq!(parse_reverse_path(""), Ok(None));
        assert_eq!(parse_reverse_path("<>"), Ok(None));
        assert!(parse_reverse_path("a@b.example").unwrap().is_some());
        assert!(parse_reverse_path("nope").is_err());
        assert_eq!(parse_reverse_path(" <> "), Ok(None));
        for bad in ["\r\n", "<>\r\n", "\0", "\r\nRSET"] {
            assert!(parse_reverse_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
