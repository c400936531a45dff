//! The `Received:` trace header field (RFC 5321 §4.4), added by each hop that takes a message.
//!
//! What the client said (its EHLO name) is untrusted: control characters, spaces,
//! parentheses, angle brackets, semicolons, backslashes and quotes are replaced and each word
//! is cut to 255 octets, so a hostile name cannot break the header. mailman writes one for
//! every message it takes. Only the one field is built here; where it goes is the caller's
//! business.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::rfc5322_date;

/// The parts of a `Received:` field; [`Received::field`] writes it, CRLF-terminated and
/// folded:
///
/// ```text
/// Received: from web1.example.com ([192.0.2.7])
///         by relay.example.net (mailman) with ESMTPS id 0190AB12CD34EF56;
///         Mon, 23 Nov 2026 04:15:31 +0000
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// What the client said in HELO/EHLO (untrusted).
    pub from_helo: &'a str,
    /// The client's address, written as an RFC 5321 §4.1.3 address literal.
    pub client_ip: Option<IpAddr>,
    /// This host's name.
    pub by_host: &'a str,
    /// The software, written as a comment after `by_host` (`mailman`).
    pub by_software: Option<&'a str>,
    /// The RFC 3848 `with` keyword (`SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`,
    /// `UTF8SMTPS`, ... or `HTTP` for the post office).
    pub protocol: &'a str,
    /// The queue id.
    pub id: &'a str,
    /// Adds `for <rcpt>`: give it only for a single recipient, as that leaks no other
    /// recipient's (a Bcc's) address.
    pub for_rcpt: Option<&'a str>,
    /// Unix seconds (passed in so the field is repeatable in tests).
    pub date: u64,
}

impl Received<'_> {
    /// The field, every client-given or configured word made safe by [`token`].
    pub fn field(&self) -> String {
        let mut out = String::with_capacity(200);
        let _ = write!(out, "Received: from {}", token(self.from_helo, "unknown"));
        if let Some(ip) = self.client_ip {
            // RFC 5321 §4.1.3 address literals.
            match ip {
                IpAddr::V4(v4) => {
                    let _ = write!(out, " ([{v4}])");
                }
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => {
                        let _ = write!(out, " ([{v4}])");
                    }
                    None => {
                        let _ = write!(out, " ([IPv6:{v6}])");
                    }
                },
            }
        }
        let _ = write!(out, "\r\n\tby {}", token(self.by_host, "localhost"));
        if let Some(software) = self.by_software {
            let _ = write!(out, " ({})", token(software, "unknown"));
        }
        let _ = write!(
            out,
            " with {} id {}",
            token(self.protocol, "SMTP"),
            token(self.id, "unknown")
        );
        if let Some(rcpt) = self.for_rcpt {
            let rcpt = token(rcpt.trim_start_matches('<').trim_end_matches('>'), "");
            if !rcpt.is_empty() {
                let _ = write!(out, "\r\n\tfor <{rcpt}>");
            }
        }
        let _ = write!(out, ";\r\n\t{}\r\n", rfc5322_date(self.date));
        out
    }
}

/// One atom-like word: no controls, spaces, parentheses, angle brackets or semicolons;
/// at most 255 octets; `fallback` when nothing is left.
fn token(text: &str, fallback: &str) -> String {
    let mut out = String::new();
    for c in text.trim().chars() {
        let c = if c.is_control() || c.is_whitespace() || "()<>;\\\"".contains(c) {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received_parts<'a>(
        helo: &'a str,
        ip: Option<IpAddr>,
        by: &'a str,
        protocol: &'a str,
        rcpt: Option<&'a str>,
    ) -> Received<'a> {
        Received {
            from_helo: helo,
            client_ip: ip,
            by_host: by,
            by_software: None,
            protocol,
            id: "Q",
            for_rcpt: rcpt,
            date: 0,
        }
    }

    fn received(
        helo: &str,
        ip: Option<IpAddr>,
        by: &str,
        protocol: &str,
        rcpt: Option<&str>,
    ) -> String {
        received_parts(helo, ip, by, protocol, rcpt).field()
    }

    #[test]
    fn a_received_field() {
        let field = Received {
            from_helo: "web1.example.com",
            client_ip: Some("192.0.2.7".parse().unwrap()),
            by_host: "relay.example.net",
            by_software: Some("mailman"),
            protocol: "ESMTPS",
            id: "0190AB12",
            for_rcpt: Some("<bob@example.org>"),
            date: 1_795_407_331,
        }
        .field();
        assert_eq!(
            field,
            "Received: from web1.example.com ([192.0.2.7])\r\n\
             \tby relay.example.net (mailman) with ESMTPS id 0190AB12\r\n\
             \tfor <bob@example.org>;\r\n\
             \tMon, 23 Nov 2026 04:15:31 +0000\r\n"
        );
        let parsed = mail_parser::MessageParser::new()
            .parse_headers(format!("{field}\r\n").as_bytes())
            .map(|m| {
                m.received().map(|r| {
                    (
                        r.from().map(|h| h.to_string()),
                        r.by().map(|h| h.to_string()),
                        r.id().map(str::to_string),
                    )
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(parsed.0.as_deref(), Some("web1.example.com"));
        assert_eq!(parsed.1.as_deref(), Some("relay.example.net"));
        assert_eq!(parsed.2.as_deref(), Some("0190AB12"));
    }

    /// The delivery ledger reads the client address back out of this field
    /// (`hedwig_core::summary`): the writer and the reader agree, for every address form.
    #[test]
    fn the_ledger_reads_the_client_back() {
        for ip in ["192.0.2.7", "2001:db8::1", "::ffff:192.0.2.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let field = Received {
                from_helo: "we(b) [1.2.3.4] ([5.6.7.8])",
                client_ip: Some(ip),
                by_host: "relay.example.net",
                by_software: Some("mailman"),
                protocol: "ESMTPS",
                id: "0190AB12",
                for_rcpt: Some("<bob@example.org>"),
                date: 1_795_407_331,
            }
            .field();
            let message = format!("{field}Subject: s\r\n\r\nbody\r\n");
            let read = hedwig_core::summary::Summary::of(message.as_bytes()).edge_client;
            let want = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            assert_eq!(read, Some(want), "{field}");
        }
    }

    #[test]
    fn ipv6_and_no_recipient() {
        let field = received(
            "h",
            Some("2001:db8::1".parse().unwrap()),
            "by.example",
            "ESMTP",
            None,
        );
        assert!(
            field.starts_with("Received: from h ([IPv6:2001:db8::1])\r\n"),
            "{field}"
        );
        assert!(!field.contains("for"));
        let mapped = received(
            "h",
            Some("::ffff:192.0.2.1".parse().unwrap()),
            "b",
            "SMTP",
            None,
        );
        assert!(mapped.contains("([192.0.2.1])"), "{mapped}");
    }

    #[test]
    fn hostile_helo_cannot_break_the_field() {
        let long = "x".repeat(1000);
        let field = received(
            "evil\r\nBcc: victim@example.com (x)",
            None,
            "by.example",
            "SMTP",
            Some("a\r\nb@example.org"),
        );
        // Exactly the four lines we write, each CRLF-terminated, no injected field.
        assert_eq!(field.matches("\r\n").count(), 4, "{field}");
        assert!(!field.contains("\r\nBcc"));
        assert!(
            field.starts_with("Received: from evil__Bcc:_victim@example.com__x_\r\n"),
            "{field}"
        );
        let field = Received {
            id: "",
            ..Received {
                by_software: Some("(x)"),
                ..received_parts(&long, None, "", "", None)
            }
        }
        .field();
        assert!(field.contains(&format!("from {}\r\n", "x".repeat(255))));
        assert!(
            field.contains("by localhost (_x_) with SMTP id unknown"),
            "{field}"
        );
    }
}
