//! The `From:` header field of a raw message: how many there are and which domains they name.
//!
//! The post office holds every From: domain to the sending host's policy and decides which
//! domains the message may be DKIM-signed for; the worker reads the same field for jobs of an
//! older post office. Both must see the fields the worker will send, so the header block is
//! split into lines the way the worker's `smtp_form` fixes line endings before signing: CRLF,
//! a bare LF and a bare CR each end a line (a bare CR cannot hide a second From:). The header
//! block ends at the first empty line, or at a line that is neither a field nor a
//! continuation (as DKIM's view of the message, `hedwig_message::dkim`, takes it).
//!
//! Not here: the policy itself (the post office), signing (`hedwig_message::dkim`).

use crate::address::Mailbox;

/// What the From: fields of a message say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromHeader {
    /// How many From: fields the header block has (RFC 5322 §3.6: exactly one).
    pub fields: usize,
    /// Every address of every From: field, groups included, in order, as written.
    pub addresses: Vec<String>,
}

/// A From: address without a domain that can be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("From: address {0:?} has no valid domain")]
pub struct NoDomain(pub String);

impl FromHeader {
    /// Reads the From: fields of `message` (the raw bytes, header block first).
    pub fn parse(message: &[u8]) -> FromHeader {
        let mut header = FromHeader::default();
        let mut current: Option<Vec<u8>> = None;
        for line in header_lines(message) {
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if let Some(value) = current.as_mut() {
                    value.extend_from_slice(b"\r\n");
                    value.extend_from_slice(line);
                }
                continue;
            }
            if let Some(value) = current.take() {
                header.add(&value);
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break; // not a field: the body starts here
            };
            let name = trim_end_wsp(&line[..colon]);
            if name.eq_ignore_ascii_case(b"From") {
                header.fields += 1;
                current = Some(line[colon + 1..].to_vec());
            }
        }
        if let Some(value) = current.take() {
            header.add(&value);
        }
        header
    }

    fn add(&mut self, value: &[u8]) {
        let mut value = value.to_vec();
        value.extend_from_slice(b"\r\n");
        let parsed = mail_parser::parsers::MessageStream::new(&value).parse_address();
        let Some(list) = parsed.as_address() else {
            // Not readable as addresses at all: kept as written, so that a policy fails it
            // (a receiver may still find an address in it) instead of letting it pass unseen.
            let raw = String::from_utf8_lossy(&value);
            let raw = raw.trim();
            if !raw.is_empty() {
                self.addresses.push(raw.to_string());
            }
            return;
        };
        for addr in list.iter() {
            // A mailbox the parser reads as a bare name (`From: root`, `From: "ceo@b.test"`)
            // is kept as written: a receiver might still read an address into it, so it must
            // pass the policy like one (and fails it when it has no domain).
            match (addr.address(), addr.name()) {
                (Some(address), _) | (None, Some(address)) => {
                    self.addresses.push(address.to_string())
                }
                (None, None) => {}
            }
        }
    }

    /// The domain (A-labels, lowercase) of each address, in order; the first address that is
    /// not one valid mailbox (`local@domain`, RFC 5321 syntax) is an error. Whole-mailbox
    /// parsing, not "what follows the last @": the parser joins `<a@b.test> <x@c.test>` or
    /// `a@b.test x@c.test` into one token, which must not pass as `c.test`.
    pub fn domains(&self) -> Result<Vec<String>, NoDomain> {
        self.addresses
            .iter()
            .map(|address| {
                Mailbox::parse(address)
                    .ok()
                    .filter(|m| !m.ascii_domain.starts_with('['))
                    .map(|m| m.ascii_domain)
                    .ok_or_else(|| NoDomain(address.clone()))
            })
            .collect()
    }
}

/// `domain`, then each of its parents that still has a dot: `a.b.example.com`,
/// `b.example.com`, `example.com`.
pub fn domain_and_parents(domain: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(domain);
    std::iter::from_fn(move || {
        let current = next?;
        next = current
            .split_once('.')
            .map(|(_, parent)| parent)
            .filter(|parent| parent.contains('.'));
        Some(current)
    })
}

/// The lines of the header block (without their line ends), up to the first empty line.
fn header_lines(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = message;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = match rest.get(end..end + 2) {
            Some(b"\r\n") => 2,
            _ if end < rest.len() => 1,
            _ => 0,
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            rest = &[];
            return None;
        }
        Some(line)
    })
}

fn trim_end_wsp(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(message: &str) -> (usize, Vec<String>) {
        let h = FromHeader::parse(message.as_bytes());
        (h.fields, h.addresses)
    }

    #[test]
    fn one_from_many_shapes() {
        assert_eq!(
            parse("From: A <a@x.test>\r\nSubject: s\r\n\r\nFrom: b@y.test\r\n"),
            (1, vec!["a@x.test".into()])
        );
        assert_eq!(
            parse("Subject: s\r\nfrom : \"b@y.test\"\r\n <a@x.test>\r\n\r\n"),
            (1, vec!["a@x.test".into()])
        );
        assert_eq!(
            parse("From: g: a@x.test, B <b@y.test>;, c@z.test\n\nbody"),
            (
                1,
                vec!["a@x.test".into(), "b@y.test".into(), "c@z.test".into()]
            )
        );
        assert_eq!(parse("Subject: none\r\n\r\n"), (0, vec![]));
        assert_eq!(parse("From: root\r\n\r\n").0, 1);
        assert_eq!(parse(""), (0, vec![]));
    }

    #[test]
    fn every_line_end_counts() {
        for message in [
            "From: a@x.test\r\nFrom: b@y.test\r\n\r\n",
            "From: a@x.test\nFrom: b@y.test\n\n",
            "From: a@x.test\rFrom: b@y.test\r\r",
            "X: 1\rFrom: a@x.test\r\nFROM: b@y.test",
        ] {
            assert_eq!(parse(message).0, 2, "{message:?}");
        }
        // After the empty line, or after a line that is not a field, is the body.
        assert_eq!(parse("From: a@x.test\r\n\r\nFrom: b@y.test\r\n").0, 1);
        assert_eq!(
            parse("From: a@x.test\r\nno colon\r\nFrom: b@y.test\r\n").0,
            1
        );
        assert_eq!(parse("From: a@x.test\r\n\rFrom: b@y.test\r\n").0, 1);
    }

    #[test]
    fn domains() {
        let h = FromHeader::parse("From: a@Tenant-A.test, b@bücher.test\r\n\r\n".as_bytes());
        assert_eq!(
            h.domains().unwrap(),
            ["tenant-a.test", "xn--bcher-kva.test"]
        );
        let h = FromHeader::parse(b"From: root\r\n\r\n");
        assert_eq!(h.domains(), Err(NoDomain("root".into())));
        let h = FromHeader::parse(b"From: \"ceo@b.test\" (<a@x.test>)\r\n\r\n");
        assert_eq!(h.domains().unwrap(), ["b.test"]);
        let h = FromHeader::parse(b"From: undisclosed:;\r\n\r\n");
        assert_eq!((h.fields, h.addresses.len()), (1, 0));
        let h = FromHeader::parse(b"From: a@exa_mple.test\r\n\r\n");
        assert_eq!(h.domains(), Err(NoDomain("a@exa_mple.test".into())));
        // Two mailboxes run together are no mailbox: never read as the last one's domain.
        for field in [
            "From: <ceo@tenant-b.test> <x@tenant-a.test>\r\n\r\n",
            "From: ceo@tenant-b.test x@tenant-a.test\r\n\r\n",
            "From: a@[192.0.2.1]\r\n\r\n",
        ] {
            let h = FromHeader::parse(field.as_bytes());
            assert!(h.domains().is_err(), "{field:?}: {:?}", h.domains());
        }
    }

    #[test]
    fn parents() {
        let all: Vec<&str> = domain_and_parents("a.b.example.com").collect();
        assert_eq!(all, ["a.b.example.com", "b.example.com", "example.com"]);
        assert_eq!(
            domain_and_parents("example").collect::<Vec<_>>(),
            ["example"]
        );
    }
}
