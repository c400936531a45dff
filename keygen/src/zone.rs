//! DNS records as an operator publishes them: zone-file lines, with TXT values split into
//! quoted strings of at most 255 bytes (RFC 1035 §3.3: a <character-string> holds 255 octets).
//!
//! Only formatting; nothing here queries DNS.

use serde::Serialize;

/// RFC 1035 §3.3: the longest <character-string>.
pub const TXT_STRING_MAX: usize = 255;

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    /// Owner name, no trailing dot.
    pub name: String,
    /// `TXT`, `MX`, `A`, `AAAA` or `PTR`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// The record data as a resolver returns it (TXT: the strings concatenated, unquoted).
    pub value: String,
    /// The same as one zone-file line, ready to paste.
    pub zone_line: String,
}

impl DnsRecord {
    /// A TXT record; the zone line splits `value` into ≤255-byte quoted strings.
    pub fn txt(name: &str, value: &str) -> Self {
        Self::new(name, "TXT", value, quote_txt(value))
    }

    /// A record whose data is one name (`PTR`, `CNAME`) or address (`A`, `AAAA`), or an MX
    /// `preference exchange`; names in the data get a trailing dot in the zone line.
    pub fn other(name: &str, rtype: &str, value: &str) -> Self {
        let data = match rtype {
            "PTR" | "CNAME" => absolute(value),
            "MX" => match value.split_once(' ') {
                Some((pref, exchange)) => format!("{pref} {}", absolute(exchange)),
                None => value.to_string(),
            },
            _ => value.to_string(),
        };
        Self::new(name, rtype, value, data)
    }

    fn new(name: &str, rtype: &str, value: &str, data: String) -> Self {
        let name = name.trim_end_matches('.').to_string();
        DnsRecord {
            zone_line: format!("{} 3600 IN {rtype} {data}", absolute(&name)),
            name,
            rtype: rtype.to_string(),
            value: value.to_string(),
        }
    }
}

fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// `value` as zone-file TXT data: `"..." "..."`, each string at most 255 bytes before
/// escaping (`"` and `\` are escaped), split on character boundaries.
pub fn quote_txt(value: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = value;
    loop {
        let mut cut = rest.len().min(TXT_STRING_MAX);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        let escaped = head.replace('\\', "\\\\").replace('"', "\\\"");
        parts.push(format!("\"{escaped}\""));
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes [`quote_txt`]: the strings' contents, unescaped.
    fn unquote(data: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = data.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                continue;
            }
            let mut s = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => s.extend(chars.next()),
                    '"' => break,
                    c => s.push(c),
                }
            }
            out.push(s);
        }
        out
    }

    #[test]
    fn long_values_split_into_255_byte_strings() {
        let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(392));
        let data = quote_txt(&value);
        let strings = unquote(&data);
        assert_eq!(
            strings.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [255, 155]
        );
        assert_eq!(strings.concat(), value);
        assert_eq!(quote_txt(""), "\"\"");
        assert_eq!(quote_txt("a\"b\\c"), r#""a\"b\\c""#);
        // Exactly 255 bytes stays one string.
        assert_eq!(unquote(&quote_txt(&"x".repeat(255))).len(), 1);
        // Multi-byte characters are not cut.
        let wide = "é".repeat(200);
        let strings = unquote(&quote_txt(&wide));
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), wide);
    }

    #[test]
    fn zone_lines() {
        let r = DnsRecord::txt("sel._domainkey.example.com.", "v=DKIM1; p=x");
        assert_eq!(r.name, "sel._domainkey.example.com");
        assert_eq!(
            r.zone_line,
            "sel._domainkey.example.com. 3600 IN TXT \"v=DKIM1; p=x\""
        );
        let r = DnsRecord::other("25.2.0.192.in-addr.arpa", "PTR", "mail.example.com");
        assert_eq!(
            r.zone_line,
            "25.2.0.192.in-addr.arpa. 3600 IN PTR mail.example.com."
        );
        let r = DnsRecord::other("example.com", "MX", "10 mail.example.com");
        assert_eq!(r.zone_line, "example.com. 3600 IN MX 10 mail.example.com.");
    }
}
