//! TLS-RPT (RFC 8460) as text: the `_smtp._tls` TXT record, the aggregate report's JSON
//! (§4), the report file name (§5.1) and the report message for a `mailto:` rua (§5.3).
//! Pure functions, no I/O.
//!
//! Not here: counting sessions, scheduling and sending ([`super`]).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a report goes (one `rua` URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    /// `mailto:` address (percent-decoded).
    Mailto(String),
    /// An `https:` URL, as given.
    Https(String),
}

/// Parses the TXT strings of `_smtp._tls.<domain>` (RFC 8460 §3): the one record that
/// starts with `v=TLSRPTv1;` (others discarded; more than one: none), its `rua` field a
/// comma-separated list of URIs of which `mailto:` and `https:` are kept. `None` when the
/// domain does not implement TLS-RPT (no record, several, no usable `rua`).
pub fn parse_txt<'a>(records: impl IntoIterator<Item = &'a str>) -> Option<Vec<Rua>> {
    let mut found = records.into_iter().filter(|r| {
        let r = r.trim_start();
        r.len() >= 11
            && r.is_char_boundary(10)
            && r[..10].eq_ignore_ascii_case("v=TLSRPTv1")
            && r[10..].trim_start().starts_with(';')
    });
    let record = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let mut ruas = None;
    for field in record.split(';').skip(1) {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("rua") || ruas.is_some() {
            continue;
        }
        let list: Vec<Rua> = value.split(',').filter_map(parse_uri).collect();
        ruas = Some(list);
    }
    ruas.filter(|l| !l.is_empty())
}

fn parse_uri(uri: &str) -> Option<Rua> {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    if scheme.eq_ignore_ascii_case("mailto") {
        let addr = percent_decode(rest.split('?').next()?)?;
        let (local, domain) = addr.rsplit_once('@')?;
        let ok = !local.is_empty()
            && !domain.is_empty()
            && !addr
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"<>,".contains(&b));
        return ok.then_some(Rua::Mailto(addr));
    }
    if scheme.eq_ignore_ascii_case("https") && rest.starts_with("//") && rest.len() > 2 {
        return (!uri
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
        .then(|| Rua::Https(uri.to_string()));
    }
    None
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One failure-details row (§4.3): a result type at one place, and how many sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    pub result_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    pub failed_session_count: u64,
}

/// The counts under one policy (§4.3: one entry of `policies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCounts {
    /// `sts` or `no-policy-found`.
    pub policy_type: String,
    /// The policy as lines (`version: STSv1`, `mode: ...`, `mx: ...`, `max_age: ...`).
    pub policy_string: Vec<String>,
    /// The `mx:` patterns of the policy: an array in the report (the RFC's example has a
    /// single string, corrected by erratum 6241; receivers read arrays).
    pub mx_host: Vec<String>,
    pub success: u64,
    pub failure: u64,
    pub details: Vec<Detail>,
    /// Failures whose detail row was not kept (over the per-domain cap): counted in
    /// `failure`, not in any row.
    #[serde(default)]
    pub details_dropped: u64,
}

/// What a report is made of besides the counts.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    pub organization_name: &'a str,
    pub contact_info: &'a str,
    pub report_id: &'a str,
    /// Unix seconds, the first second of the period and the period's length.
    pub start: u64,
    pub length: Duration,
    pub policy_domain: &'a str,
}

/// `2016-04-01T00:00:00Z`.
pub fn datetime(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The report (§4.4), as JSON: `date-range` from the period's start to its last second.
pub fn json(meta: &Meta<'_>, policies: &[PolicyCounts]) -> serde_json::Value {
    use serde_json::json;
    let end = meta.start + meta.length.as_secs().max(1) - 1;
    let policies: Vec<serde_json::Value> = policies
        .iter()
        .map(|p| {
            let mut policy = json!({
                "policy-type": p.policy_type,
                "policy-domain": meta.policy_domain,
            });
            if !p.policy_string.is_empty() {
                policy["policy-string"] = json!(p.policy_string);
            }
            if !p.mx_host.is_empty() {
                policy["mx-host"] = json!(p.mx_host);
            }
            let details: Vec<serde_json::Value> = p
                .details
                .iter()
                .map(|d| {
                    let mut row = json!({
                        "result-type": d.result_type,
                        "failed-session-count": d.failed_session_count,
                    });
                    if let Some(ip) = &d.sending_mta_ip {
                        row["sending-mta-ip"] = json!(ip);
                    }
                    if let Some(mx) = &d.receiving_mx_hostname {
                        row["receiving-mx-hostname"] = json!(mx);
                    }
                    if let Some(ip) = &d.receiving_ip {
                        row["receiving-ip"] = json!(ip);
                    }
                    row
                })
                .collect();
            let mut entry = json!({
                "policy": policy,
                "summary": {
                    "total-successful-session-count": p.success,
                    "total-failure-session-count": p.failure,
                },
            });
            if !details.is_empty() {
                entry["failure-details"] = json!(details);
            }
            entry
        })
        .collect();
    json!({
        "organization-name": meta.organization_name,
        "date-range": {
            "start-datetime": datetime(meta.start),
            "end-datetime": datetime(end),
        },
        "contact-info": meta.contact_info,
        "report-id": meta.report_id,
        "policies": policies,
    })
}

/// §5.1: `sender!policy-domain!begin!end!unique-id.json.gz` (Unix seconds).
pub fn file_name(submitter: &str, meta: &Meta<'_>, unique: &str) -> String {
    let end = meta.start + meta.length.as_secs().max(1) - 1;
    format!(
        "{submitter}!{}!{}!{end}!{unique}.json.gz",
        meta.policy_domain, meta.start
    )
}

/// What a report message (§5.3) is made of.
#[derive(Debug, Clone)]
pub struct Mail<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// The submitter: this relay's host name.
    pub submitter: &'a str,
    pub policy_domain: &'a str,
    pub report_id: &'a str,
    pub file_name: &'a str,
    /// The gzipped JSON.
    pub gzip: &'a [u8],
    /// Unix seconds (the Date: field) and a unique part for Message-ID and the boundary.
    pub now: u64,
    pub unique: &'a str,
}

/// The report message (RFC 8460 §5.3): `multipart/report; report-type="tlsrpt"` with a
/// short text part and the report as an `application/tlsrpt+gzip` attachment (base64),
/// `TLS-Report-Domain` and `TLS-Report-Submitter` header fields, CRLF line ends.
pub fn message(mail: &Mail<'_>) -> Vec<u8> {
    use base64::Engine;
    let boundary = format!("tlsrpt-{}", mail.unique);
    let mut m = String::new();
    let _ = write!(
        m,
        "From: <{from}>\r\n\
         To: <{to}>\r\n\
         Date: {date}\r\n\
         Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>\r\n\
         Message-ID: <{unique}.tlsrpt@{submitter}>\r\n\
         TLS-Report-Domain: {domain}\r\n\
         TLS-Report-Submitter: {submitter}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-formatted message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=\"us-ascii\"\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         This is an aggregate TLS report (RFC 8460) from {submitter}\r\n\
         for the policy domain {domain}.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: application/tlsrpt+gzip\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment;\r\n\tfilename=\"{file}\"\r\n\
         \r\n",
        from = mail.from,
        to = mail.to,
        date = hedwig_message::rfc5322_date(mail.now),
        domain = mail.policy_domain,
        submitter = mail.submitter,
        id = mail.report_id,
        unique = mail.unique,
        file = mail.file_name,
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(mail.gzip);
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        m.push_str("\r\n");
    }
    let _ = write!(m, "\r\n--{boundary}--\r\n");
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MimeHeaders;

    #[test]
    fn txt_records_parse() {
        let one =
            parse_txt(["v=TLSRPTv1; rua=mailto:reports@example.com, https://r.example.com/tlsrpt"])
                .unwrap();
        assert_eq!(
            one,
            [
                Rua::Mailto("reports@example.com".into()),
                Rua::Https("https://r.example.com/tlsrpt".into())
            ]
        );
        // Other records are discarded; case of v= and rua; percent-encoding; no spaces.
        let other = parse_txt([
            "v=spf1 -all",
            "V=tlsrptv1;RUA=mailto:tls%2Breports@example.com",
        ])
        .unwrap();
        assert_eq!(other, [Rua::Mailto("tls+reports@example.com".into())]);
        // Unknown schemes dropped; http (not https) too.
        assert_eq!(
            parse_txt(["v=TLSRPTv1; rua=http://x.example/, ftp://y, https://z.example/r"]),
            Some(vec![Rua::Https("https://z.example/r".into())])
        );
        // Two TLS-RPT records: the domain has none (§3).
        assert_eq!(
            parse_txt([
                "v=TLSRPTv1; rua=mailto:a@example.com",
                "v=TLSRPTv1; rua=mailto:b@example.com"
            ]),
            None
        );
        for bad in [
            "",
            "v=TLSRPTv1",
            "v=TLSRPTv1;",
            "v=TLSRPTv1; rua=",
            "v=TLSRPTv1; rua=mailto:",
            "v=TLSRPTv1; rua=mailto:no-at",
            "v=TLSRPTv12; rua=mailto:a@example.com",
            "v=STSv1; id=1",
            "v=TLSRPTv1; rua=https:",
            "v=TLSRPTv1; rua=mailto:a@b%zz",
        ] {
            assert_eq!(parse_txt([bad]), None, "{bad:?}");
        }
    }

    fn sample() -> Vec<PolicyCounts> {
        vec![PolicyCounts {
            policy_type: "sts".into(),
            policy_string: vec![
                "version: STSv1".into(),
                "mode: testing".into(),
                "mx: *.mail.company-y.example".into(),
                "max_age: 86400".into(),
            ],
            mx_host: vec!["*.mail.company-y.example".into()],
            success: 5326,
            failure: 303,
            details: vec![Detail {
                result_type: "certificate-expired".into(),
                sending_mta_ip: Some("2001:db8:abcd:12::1".into()),
                receiving_mx_hostname: Some("mx1.mail.company-y.example".into()),
                receiving_ip: None,
                failed_session_count: 100,
            }],
            details_dropped: 0,
        }]
    }

    #[test]
    fn report_json_has_the_rfc_fields() {
        let meta = Meta {
            organization_name: "Company-X",
            contact_info: "sts-reporting@company-x.example",
            report_id: "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
            start: 1_459_468_800,
            length: Duration::from_secs(86_400),
            policy_domain: "company-y.example",
        };
        let v = json(&meta, &sample());
        assert_eq!(v["organization-name"], "Company-X");
        assert_eq!(v["date-range"]["start-datetime"], "2016-04-01T00:00:00Z");
        assert_eq!(v["date-range"]["end-datetime"], "2016-04-01T23:59:59Z");
        assert_eq!(v["contact-info"], "sts-reporting@company-x.example");
        assert_eq!(v["report-id"], "5065427c-23d3-47ca-b6e0-946ea0e8c4be");
        let p = &v["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-domain"], "company-y.example");
        assert_eq!(p["policy"]["policy-string"][1], "mode: testing");
        assert_eq!(p["policy"]["mx-host"][0], "*.mail.company-y.example");
        assert_eq!(p["summary"]["total-successful-session-count"], 5326);
        assert_eq!(p["summary"]["total-failure-session-count"], 303);
        let d = &p["failure-details"][0];
        assert_eq!(d["result-type"], "certificate-expired");
        assert_eq!(d["sending-mta-ip"], "2001:db8:abcd:12::1");
        assert_eq!(d["receiving-mx-hostname"], "mx1.mail.company-y.example");
        assert!(d.get("receiving-ip").is_none());
        assert_eq!(d["failed-session-count"], 100);
        assert_eq!(
            file_name("mail.sender.example", &meta, "x1"),
            "mail.sender.example!company-y.example!1459468800!1459555199!x1.json.gz"
        );
    }

    #[test]
    fn report_message_is_multipart_report() {
        let m = message(&Mail {
            from: "tlsrpt@relay.example",
            to: "reports@company-y.example",
            submitter: "relay.example",
            policy_domain: "company-y.example",
            report_id: "r1@relay.example",
            file_name: "f.json.gz",
            gzip: &[0x1f, 0x8b, 0, 1, 2, 3],
            now: 1_459_468_800,
            unique: "abc",
        });
        let parsed = mail_parser::MessageParser::default().parse(&m).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Report Domain: company-y.example Submitter: relay.example Report-ID: <r1@relay.example>")
        );
        let ct = parsed.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("tlsrpt"));
        assert_eq!(
            parsed.header("TLS-Report-Domain").and_then(|h| h.as_text()),
            Some("company-y.example")
        );
        let att = parsed.attachment(0).unwrap();
        let act = att.content_type().unwrap();
        assert_eq!(
            (act.ctype(), act.subtype()),
            ("application", Some("tlsrpt+gzip"))
        );
        assert_eq!(att.contents(), &[0x1f, 0x8b, 0, 1, 2, 3]);
        assert!(m.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'));
    }
}
