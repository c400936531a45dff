//! MTA-STS (RFC 8461) as text: the `_mta-sts` TXT record, the policy file, MX name patterns,
//! and the RFC 8460 result types a check can end in. Pure functions, no I/O.
//!
//! Not here: fetching, caching and applying a policy ([`super`], [`crate::deliver`]).

use std::time::Duration;

/// RFC 8461 §3.2: "max_age ... up to 31557600" (one year); larger values are capped.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// Most `mx` lines a policy may have: real ones list a handful; a policy with more is refused
/// (it would be kept in memory, on disk and in TLS-RPT counts for up to a year).
pub const MAX_MX: usize = 64;

/// What a policy asks of senders (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to listed MX hosts over verified TLS; otherwise do not deliver.
    Enforce,
    /// Deliver as without a policy, and report what would have failed.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// One `mx:` line: a host name, or `*.` and a name (matches exactly one more label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxPattern {
    /// Lowercase, without trailing dot; for a wildcard, the part after `*.`.
    name: String,
    wildcard: bool,
}

impl MxPattern {
    fn parse(s: &str) -> Result<MxPattern, PolicyError> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(PolicyError::BadMx(s.to_string()));
        }
        Ok(MxPattern { name, wildcard })
    }

    /// Whether MX host `host` (A-labels, any case, trailing dot allowed) matches. RFC 8461
    /// §4.1: a wildcard covers only the left-most label (`*.example.com` matches
    /// `mx.example.com`, not `a.mx.example.com` nor `example.com`).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !self.wildcard {
            return host == self.name;
        }
        match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == self.name,
            None => false,
        }
    }
}

impl std::fmt::Display for MxPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<MxPattern>,
    /// How long the policy may be cached (capped at [`MAX_AGE_LIMIT`]).
    pub max_age: Duration,
}

impl Policy {
    /// Whether `host` is one of the policy's MX hosts.
    pub fn allows(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }

    /// The MX patterns, comma separated (for log lines and reasons).
    pub fn mx_list(&self) -> String {
        self.mx
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a policy file or TXT record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("no `version: STSv1` line")]
    Version,
    #[error("mode {0:?} is not enforce, testing or none")]
    Mode(String),
    #[error("no mode line")]
    NoMode,
    #[error("mx {0:?} is not a host name or *.name")]
    BadMx(String),
    #[error("no mx line (required in enforce and testing mode)")]
    NoMx,
    #[error("max_age {0:?} is not a number of seconds")]
    MaxAge(String),
    #[error("no max_age line")]
    NoMaxAge,
    #[error("field {0} given twice")]
    Duplicate(&'static str),
    #[error("line {0:?} is not `key: value`")]
    Line(String),
    #[error("not UTF-8 text")]
    NotText,
    #[error("more than {MAX_MX} mx lines")]
    TooManyMx,
}

/// Parses a policy file (RFC 8461 §3.2): `key: value` lines (LF or CRLF), `version`, `mode`,
/// `max_age` once each, `mx` one or more times (may be absent in mode `none`); unknown keys are
/// ignored (§3.2: for extensions), blank lines too. Keys are matched without case.
pub fn parse_policy(bytes: &[u8]) -> Result<Policy, PolicyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PolicyError::NotText)?;
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(PolicyError::Line(line.chars().take(80).collect()));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        match key.as_str() {
            "version" => {
                once(&version, "version")?;
                version = Some(value == "STSv1");
            }
            "mode" => {
                once(&mode, "mode")?;
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(PolicyError::Mode(other.chars().take(40).collect())),
                });
            }
            "max_age" => {
                once(&max_age, "max_age")?;
                // §3.2: 1*10DIGIT.
                let secs = (!value.is_empty()
                    && value.len() <= 10
                    && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| PolicyError::MaxAge(value.chars().take(40).collect()))?;
                max_age = Some(Duration::from_secs(secs.min(MAX_AGE_LIMIT)));
            }
            "mx" if mx.len() >= MAX_MX => return Err(PolicyError::TooManyMx),
            "mx" => mx.push(MxPattern::parse(value)?),
            _ => {}
        }
    }
    if version != Some(true) {
        return Err(PolicyError::Version);
    }
    let mode = mode.ok_or(PolicyError::NoMode)?;
    let max_age = max_age.ok_or(PolicyError::NoMaxAge)?;
    if mx.is_empty() && mode != Mode::None {
        return Err(PolicyError::NoMx);
    }
    Ok(Policy { mode, mx, max_age })
}

/// `Err` when the field `name` was given before.
fn once<T>(slot: &Option<T>, name: &'static str) -> Result<(), PolicyError> {
    match slot {
        Some(_) => Err(PolicyError::Duplicate(name)),
        None => Ok(()),
    }
}

/// The `id` of a domain's `_mta-sts` TXT records (RFC 8461 §3.1), given each record's
/// strings joined. `None` when no record starts with `v=STSv1`, when more than one does (§3.1:
/// then there is no valid record), or when the one that does has no valid `id`.
pub fn parse_txt<'a>(records: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut sts = records
        .into_iter()
        .filter(|r| r.trim_start().starts_with("v=STSv1"));
    let record = sts.next()?;
    if sts.next().is_some() {
        return None;
    }
    let mut fields = record.split(';').map(str::trim);
    // The version must come first, exactly.
    if fields.next()? != "v=STSv1" {
        return None;
    }
    fields.find_map(|f| {
        let (k, v) = f.split_once('=')?;
        (k.trim() == "id"
            && (1..=32).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| v.to_string())
    })
}

/// The RFC 8460 §4.3 result types of an MTA-STS check, so that a TLS-RPT report can count
/// them per policy domain (the counting itself is not done yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultType {
    /// The session went as the policy asks.
    Success,
    /// The MX host is not in the policy (reported as `validation-failure`, §4.3.2.2 has no
    /// closer type).
    MxNotInPolicy,
    /// §4.3.1: the receiving host did not offer STARTTLS.
    StarttlsNotSupported,
    /// §4.3.1: the certificate is not valid for the MX name.
    CertificateHostMismatch,
    /// §4.3.1: the certificate has expired.
    CertificateExpired,
    /// §4.3.1: the certificate does not chain to a trusted root.
    CertificateNotTrusted,
    /// §4.3.1: any other TLS failure.
    ValidationFailure,
    /// §4.3.2.2: the policy could not be fetched.
    StsPolicyFetchError,
    /// §4.3.2.2: the policy host's HTTPS certificate failed PKIX validation.
    StsWebpkiInvalid,
    /// §4.3.2.2: the policy was fetched and did not parse.
    StsPolicyInvalid,
}

impl ResultType {
    /// The RFC 8460 name, as a report writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::Success => "success",
            ResultType::MxNotInPolicy | ResultType::ValidationFailure => "validation-failure",
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
        }
    }

    /// The rule named in a deferral reason (`mta-sts: <rule>: ...`).
    pub fn rule(self) -> &'static str {
        match self {
            ResultType::Success => "ok",
            ResultType::MxNotInPolicy => "mx not in policy",
            ResultType::StarttlsNotSupported => "no STARTTLS",
            ResultType::CertificateHostMismatch => "certificate not valid for the MX name",
            ResultType::CertificateExpired => "certificate expired",
            ResultType::CertificateNotTrusted => "certificate not trusted",
            ResultType::ValidationFailure => "TLS failed",
            ResultType::StsPolicyFetchError => "policy fetch failed",
            ResultType::StsWebpkiInvalid => "policy host certificate invalid",
            ResultType::StsPolicyInvalid => "policy invalid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n\
                        mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn rfc_example_parses() {
        let p = parse_policy(GOOD.as_bytes()).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, Duration::from_secs(604_800));
        assert_eq!(
            p.mx_list(),
            "mail.example.com, *.example.net, backupmx.example.com"
        );
        // LF only, spaces around the colon, unknown keys, a blank line.
        let lf = "version:STSv1\nmode :  testing \n\nmx: MX.Example.COM.\nfoo: bar\nmax_age: 86400";
        let p = parse_policy(lf.as_bytes()).unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert!(p.allows("mx.example.com"));
        // mode none needs no mx.
        let none = "version: STSv1\nmode: none\nmax_age: 1\n";
        assert_eq!(parse_policy(none.as_bytes()).unwrap().mode, Mode::None);
    }

    #[test]
    fn bad_policies_are_refused() {
        let cases: &[(&str, PolicyError)] = &[
            ("mode: enforce\nmx: a.b\nmax_age: 1", PolicyError::Version),
            (
                "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1",
                PolicyError::Version,
            ),
            (
                "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1",
                PolicyError::Mode("strict".into()),
            ),
            ("version: STSv1\nmx: a.b\nmax_age: 1", PolicyError::NoMode),
            (
                "version: STSv1\nmode: enforce\nmax_age: 1",
                PolicyError::NoMx,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b",
                PolicyError::NoMaxAge,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1",
                PolicyError::MaxAge("-1".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901",
                PolicyError::MaxAge("12345678901".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1",
                PolicyError::BadMx("a..b".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1",
                PolicyError::BadMx("*.*.b".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmode: testing\nmx: a.b\nmax_age: 1",
                PolicyError::Duplicate("mode"),
            ),
            (
                "<html><body>not found</body></html>",
                PolicyError::Line("<html><body>not found</body></html>".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_policy(text.as_bytes()).as_ref(), Err(want), "{text}");
        }
        assert_eq!(parse_policy(b"\xff\xfe"), Err(PolicyError::NotText));
    }

    #[test]
    fn mx_lines_are_bounded() {
        let policy = |n: usize| {
            let mut p = String::from("version: STSv1\nmode: enforce\nmax_age: 60\n");
            for i in 0..n {
                p.push_str(&format!("mx: mx{i}.example.com\n"));
            }
            p
        };
        assert_eq!(
            parse_policy(policy(MAX_MX).as_bytes()).unwrap().mx.len(),
            MAX_MX
        );
        assert_eq!(
            parse_policy(policy(MAX_MX + 1).as_bytes()),
            Err(PolicyError::TooManyMx)
        );
    }

    #[test]
    fn max_age_is_capped_at_a_year() {
        let p =
            parse_policy(b"version: STSv1\nmode: testing\nmx: a.b\nmax_age: 9999999999").unwrap();
        assert_eq!(p.max_age, Duration::from_secs(MAX_AGE_LIMIT));
    }

    #[test]
    fn wildcards_cover_one_label() {
        let p = parse_policy(GOOD.as_bytes()).unwrap();
        assert!(p.allows("mail.example.com"));
        assert!(p.allows("MAIL.example.com."));
        assert!(p.allows("mx1.example.net"));
        assert!(!p.allows("a.mx1.example.net"));
        assert!(!p.allows("example.net"));
        assert!(!p.allows(".example.net"));
        assert!(!p.allows("evil-mail.example.com"));
        assert!(!p.allows("mail.example.com.evil.test"));
    }

    #[test]
    fn txt_records() {
        assert_eq!(
            parse_txt(["v=STSv1; id=20160831085700Z;"]),
            Some("20160831085700Z".into())
        );
        assert_eq!(parse_txt(["v=STSv1;id=abc"]), Some("abc".into()));
        // Other TXT records at the name are ignored.
        assert_eq!(
            parse_txt(["some other record", "v=STSv1; id=x1"]),
            Some("x1".into())
        );
        // Two STS records: none is valid (§3.1).
        assert_eq!(parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]), None);
        assert_eq!(parse_txt(["v=STSv1; id=no-dashes"]), None);
        assert_eq!(parse_txt(["v=STSv1"]), None);
        assert_eq!(parse_txt(["id=a; v=STSv1"]), None);
        assert_eq!(parse_txt(["v=STSv1; id=".to_string().as_str()]), None);
        let long = format!("v=STSv1; id={}", "a".repeat(33));
        assert_eq!(parse_txt([long.as_str()]), None);
        assert_eq!(parse_txt(Vec::<&str>::new()), None);
    }
}
