//! Which failed records (and which of their recipients) a command acts on: `--code`,
//! `--domain`, `--host`, `--since`, `--older-than`, `--id`. Options of one kind are alternatives (any may
//! match); different kinds must all match. No options: everything.

use std::str::FromStr;
use std::time::Duration;

use hedwig_core::address::Recipient;
use hedwig_queue::job::Envelope;

/// The filter options shared by `failed`, `requeue` and `purge`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// SMTP code (`550`, `5xx`) or enhanced status code (`5.7.1`, `4.x.x`); repeatable.
    #[arg(long = "code", value_name = "CODE")]
    pub codes: Vec<CodePattern>,
    /// Recipient domain (`gmail.com`); only those recipients of a record are acted on;
    /// repeatable.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// Sending host (`web1.example.com`; `web*` and `*.example.com` as patterns); repeatable.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only records that failed within this long (`30m`, `1d`, `2weeks`).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only records that failed longer ago than this (`7d`: clean out old failures).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// Queue id; repeatable.
    #[arg(long = "id", value_name = "QUEUE_ID")]
    pub ids: Vec<String>,
}

/// A `--code` pattern; `x` (or `*`) matches any digit or number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodePattern {
    /// `550`, `5xx`, `55x`.
    Smtp([Option<u8>; 3]),
    /// `5.7.1`, `4.x.x`, `5.1.x`.
    Enhanced([Option<u16>; 3]),
}

impl FromStr for CodePattern {
    type Err = String;

    fn from_str(text: &str) -> Result<CodePattern, String> {
        let bad = || {
            format!("{text:?}: expected an SMTP code like 550 or 5xx, or an enhanced status code like 5.7.1 or 4.x.x")
        };
        let wild = |p: &str| p.eq_ignore_ascii_case("x") || p == "*";
        if text.contains('.') {
            let parts: Vec<&str> = text.split('.').collect();
            if parts.len() != 3 {
                return Err(bad());
            }
            let mut out = [None; 3];
            for (slot, part) in out.iter_mut().zip(&parts) {
                if !wild(part) {
                    *slot = Some(part.parse::<u16>().map_err(|_| bad())?);
                }
            }
            if out[0].is_some_and(|c| !(2..=5).contains(&c)) {
                return Err(bad());
            }
            Ok(CodePattern::Enhanced(out))
        } else {
            let chars: Vec<char> = text.chars().collect();
            if chars.len() != 3 {
                return Err(bad());
            }
            let mut out = [None; 3];
            for (slot, c) in out.iter_mut().zip(&chars) {
                if !wild(&c.to_string()) {
                    *slot = Some(c.to_digit(10).ok_or_else(bad)? as u8);
                }
            }
            Ok(CodePattern::Smtp(out))
        }
    }
}

impl CodePattern {
    /// Whether a failure with this SMTP `code` and enhanced `dsn` matches. When the part the
    /// pattern names is missing, only its class (first digit) is compared, and only if the
    /// pattern leaves the rest open.
    pub fn matches(&self, code: Option<u16>, dsn: Option<&str>) -> bool {
        let dsn_parts: Option<Vec<u16>> = dsn.and_then(|d| {
            let parts: Option<Vec<u16>> = d.split('.').map(|p| p.parse().ok()).collect();
            parts.filter(|p| p.len() == 3)
        });
        let class = code
            .map(|c| c / 100)
            .or_else(|| dsn_parts.as_ref().map(|p| p[0]));
        match self {
            CodePattern::Smtp(want) => match code {
                Some(code) => {
                    let digits = [code / 100, code / 10 % 10, code % 10];
                    want.iter()
                        .zip(digits)
                        .all(|(w, d)| w.is_none_or(|w| u16::from(w) == d))
                }
                None => {
                    want[1].is_none()
                        && want[2].is_none()
                        && class.is_some_and(|c| want[0].is_none_or(|w| u16::from(w) == c))
                }
            },
            CodePattern::Enhanced(want) => match dsn_parts {
                Some(parts) => want
                    .iter()
                    .zip(parts)
                    .all(|(w, p)| w.is_none_or(|w| w == p)),
                None => {
                    want[1].is_none()
                        && want[2].is_none()
                        && class.is_some_and(|c| want[0].is_none_or(|w| w == c))
                }
            },
        }
    }
}

impl Filter {
    /// Whether the record as a whole matches (everything but `--domain`). `now`: Unix seconds.
    pub fn matches_record(&self, envelope: &Envelope, now: u64) -> bool {
        let failure = envelope.failure.as_ref();
        if !self.codes.is_empty() {
            let (code, dsn) = failure.map_or((None, None), |f| (f.code, f.dsn.as_deref()));
            if !self.codes.iter().any(|p| p.matches(code, dsn)) {
                return false;
            }
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|p| glob(p, &envelope.host)) {
            return false;
        }
        if !self.ids.is_empty() && !self.ids.iter().any(|id| id == &envelope.queue_id) {
            return false;
        }
        let at = failure.map_or(envelope.received_at, |f| f.at);
        if let Some(since) = self.since {
            if at.saturating_add(since.as_secs()) < now {
                return false;
            }
        }
        if let Some(older) = self.older_than {
            if at.saturating_add(older.as_secs()) >= now {
                return false;
            }
        }
        true
    }

    /// Splits the recipients into those `--domain` selects and the rest.
    pub fn split_recipients(&self, envelope: &Envelope) -> (Vec<Recipient>, Vec<Recipient>) {
        envelope
            .rcpt_to
            .iter()
            .cloned()
            .partition(|rcpt| self.wants_recipient(rcpt.as_str()))
    }

    fn wants_recipient(&self, rcpt: &str) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| hedwig_queue::hold::normalize(d))
            .unwrap_or_default();
        self.domains
            .iter()
            .any(|d| hedwig_queue::hold::normalize(d) == domain)
    }

    /// The recipients this filter selects from a record, or none if the record does not match.
    pub fn select(&self, envelope: &Envelope, now: u64) -> Vec<Recipient> {
        if self.matches_record(envelope, now) {
            self.split_recipients(envelope).0
        } else {
            Vec::new()
        }
    }
}

/// `*` at the start or end of `pattern` matches any text; case-insensitive.
fn glob(pattern: &str, host: &str) -> bool {
    let pattern = hedwig_queue::hold::normalize(pattern);
    let host = hedwig_queue::hold::normalize(host);
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(suffix), _) if !suffix.contains('*') => host.ends_with(suffix),
        (_, Some(prefix)) if !prefix.contains('*') => host.starts_with(prefix),
        _ => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig_queue::job::Failure;

    fn p(s: &str) -> CodePattern {
        s.parse().unwrap()
    }

    #[test]
    fn code_patterns() {
        assert!(p("550").matches(Some(550), Some("5.7.1")));
        assert!(!p("550").matches(Some(554), None));
        assert!(p("5xx").matches(Some(554), None));
        assert!(p("5.7.1").matches(Some(550), Some("5.7.1")));
        assert!(!p("5.7.1").matches(Some(550), Some("5.1.1")));
        assert!(p("4.x.x").matches(Some(451), Some("4.4.1")));
        assert!(
            p("4.X.x").matches(Some(421), None),
            "class from the SMTP code"
        );
        assert!(!p("4.x.x").matches(Some(550), None));
        assert!(!p("4.7.1").matches(Some(450), None), "detail unknown");
        assert!(p("5xx").matches(None, Some("5.1.1")));
        assert!(!p("550").matches(None, Some("5.1.1")));
        assert!(!p("5.x.x").matches(None, None));
        for bad in ["55", "5.7", "abc", "9.1.1", "5.a.1", "5500"] {
            assert!(bad.parse::<CodePattern>().is_err(), "{bad}");
        }
    }

    fn envelope(host: &str, rcpts: &[&str], at: u64, code: u16, dsn: &str) -> Envelope {
        let mut e = Envelope::new(
            "Q1".into(),
            host.into(),
            "a@example.com".into(),
            rcpts.iter().map(|&s| s.into()).collect(),
        );
        e.failure = Some(Failure {
            at,
            reason: "rejected".into(),
            code: Some(code),
            dsn: Some(dsn.into()),
            response: "no".into(),
            relay: None,
        });
        e
    }

    #[test]
    fn filters_combine() {
        let e = envelope(
            "web1.example.com",
            &["a@gmail.com", "b@Example.org", "c@GMAIL.com"],
            1000,
            550,
            "5.7.1",
        );
        assert_eq!(Filter::default().select(&e, 2000).len(), 3);
        let f = Filter {
            codes: vec![p("4.x.x"), p("5.7.1")],
            domains: vec!["gmail.com".into()],
            hosts: vec!["web*".into()],
            since: Some(Duration::from_secs(86400)),
            older_than: None,
            ids: vec![],
        };
        assert_eq!(f.select(&e, 2000), ["a@gmail.com", "c@GMAIL.com"]);
        assert_eq!(f.split_recipients(&e).1, ["b@Example.org"]);
        assert!(f.select(&e, 1000 + 86400 + 1).is_empty(), "too old");
        let f = Filter {
            hosts: vec!["*.example.net".into()],
            ..Filter::default()
        };
        assert!(f.select(&e, 2000).is_empty());
        let f = Filter {
            ids: vec!["Q2".into()],
            ..Filter::default()
        };
        assert!(!f.matches_record(&e, 2000));
        let f = Filter {
            codes: vec![p("4.x.x")],
            ..Filter::default()
        };
        assert!(!f.matches_record(&e, 2000));
        // --older-than 1h: the record failed at 1000, so it qualifies after 4600
        let f = Filter {
            older_than: Some(Duration::from_secs(3600)),
            ..Filter::default()
        };
        assert!(f.select(&e, 2000).is_empty(), "too recent");
        assert!(f.select(&e, 4600).is_empty(), "exactly 1h old is not older");
        assert_eq!(f.select(&e, 4601).len(), 3);
    }
}
