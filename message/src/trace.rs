//! The `Received:` trace header field (RFC 5321 §4.4), added by each hop that takes a message.
//!
//! What the client said (its EHLO name) is untrusted: control characters, parentheses and
//! spaces are replaced and it is cut to 255 octets, so a hostile name cannot break the
//! header. Only the one field is built here; where it goes is the caller's business.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::rfc5322_date;

/// A `Received:` field, CRLF-terminated and folded:
///
/// ```text
/// Received: from web1.example.com ([192.0.2.7])
///         by relay.example.net with ESMTPS id 0190AB12CD34EF56;
///         Mon, 23 Nov 2026 04:15:31 +0000
/// ```
///
/// `protocol` is the RFC 3848 `with` keyword (`SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`,
/// `UTF8SMTPS`, ... or `HTTP` for the post office); `for_rcpt` adds `for <rcpt>` (only
/// for a single recipient, as that leaks no other recipient's address).
pub fn received_header(
    from_helo: &str,
    client_ip: Option<IpAddr>,
    by_host: &str,
    protocol: &str,
    id: &str,
    for_rcpt: Option<&str>,
    date: u64,
) -> String {
    let mut out = String::with_capacity(200);
    let _ = write!(out, "Received: from {}", token(from_helo, "unknown"));
    if let Some(ip) = client_ip {
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
    let _ = write!(
        out,
        "\r\n\tby {} with {} id {}",
        token(by_host, "localhost"),
        token(protocol, "SMTP"),
        token(id, "unknown")
    );
    if let Some(rcpt) = for_rcpt {
        let rcpt = token(rcpt.trim_start_matches('<').trim_end_matches('>'), "");
        if !rcpt.is_empty() {
            let _ = write!(out, "\r\n\tfor <{rcpt}>");
        }
    }
    let _ = write!(out, ";\r\n\t{}\r\n", rfc5322_date(date));
    out
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

    #[test]
    fn a_received_field() {
        let field = received_header(
            "web1.example.com",
            Some("192.0.2.7".parse().unwrap()),
            "relay.example.net",
            "ESMTPS",
            "0190AB12",
            Some("<bob@example.org>"),
            1_795_407_331,
        );
        assert_eq!(
            field,
            "Received: from web1.example.com ([192.0.2.7])\r\n\
             \tby relay.example.net with ESMTPS id 0190AB12\r\n\
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

    #[test]
    fn ipv6_and_no_recipient() {
        let field = received_header(
            "h",
            Some("2001:db8::1".parse().unwrap()),
            "by.example",
            "ESMTP",
            "Q",
            None,
            0,
        );
        assert!(
            field.starts_with("Received: from h ([IPv6:2001:db8::1])\r\n"),
            "{field}"
        );
        assert!(!field.contains("for"));
        let mapped = received_header(
            "h",
            Some("::ffff:192.0.2.1".parse().unwrap()),
            "b",
            "SMTP",
            "Q",
            None,
            0,
        );
        assert!(mapped.contains("([192.0.2.1])"), "{mapped}");
    }

    #[test]
    fn hostile_helo_cannot_break_the_field() {
        let long = "x".repeat(1000);
        let field = received_header(
            "evil\r\nBcc: victim@example.com (x)",
            None,
            "by.example",
            "SMTP",
            "Q",
            Some("a\r\nb@example.org"),
            0,
        );
        // Exactly the four lines we write, each CRLF-terminated, no injected field.
        assert_eq!(field.matches("\r\n").count(), 4, "{field}");
        assert!(!field.contains("\r\nBcc"));
        assert!(
            field.starts_with("Received: from evil__Bcc:_victim@example.com__x_\r\n"),
            "{field}"
        );
        let field = received_header(&long, None, "", "", "", None, 0);
        assert!(field.contains(&format!("from {}\r\n", "x".repeat(255))));
        assert!(field.contains("by localhost with SMTP id unknown"));
    }
}
