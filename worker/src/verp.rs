//! VERP return paths per sender domain (issue 14, late bounces): `verp:` in the worker config
//! names, for each sender domain, a bounce domain; a message from that domain goes out with
//! the envelope sender `bounces+<token>@<bounce domain>`, one token per recipient
//! ([`hedwig_core::verp`]), so a bounce or complaint that comes back after the remote server
//! took the message reaches the post office's bounce listener and lands on the right message
//! and recipient.
//!
//! One token per recipient means one SMTP transaction per recipient for these messages (the
//! connection is reused). The null sender (bounces) is never replaced. For a VERP domain this
//! wins over `return_path`.
//!
//! Not here: the listener (post office, `bounce_listener`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use hedwig_core::verp::VerpKey;
use serde::{Deserialize, Serialize};

/// The `verp:` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerpConfig {
    /// The VERP secret (the post office's `bounce_listener.secret`), or a file holding it
    /// (wins).
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Sender domain (of the envelope sender the host gave) -> bounce domain. Empty: off.
    pub domains: BTreeMap<String, String>,
}

/// The checked `verp:` settings.
#[derive(Debug, Clone)]
pub struct Verp {
    key: VerpKey,
    /// Lowercase A-label sender domain -> lowercase bounce domain.
    domains: BTreeMap<String, String>,
}

impl VerpConfig {
    /// `None` when off; every problem, each naming its key.
    pub fn check(&self, require_safe_keys: bool) -> Result<Option<Verp>, Vec<String>> {
        if self.domains.is_empty() {
            return Ok(None);
        }
        let mut errors = Vec::new();
        let mut domains = BTreeMap::new();
        for (sender, bounce) in &self.domains {
            let s = hedwig_core::address::parse_domain(sender)
                .map_err(|e| errors.push(format!("verp.domains.{sender}: not a domain ({e})")))
                .ok();
            let b = hedwig_core::key::normalize_fqdn(bounce)
                .map_err(|e| errors.push(format!("verp.domains.{sender}: {e}")))
                .ok();
            if let (Some(s), Some(b)) = (s, b) {
                if domains.insert(s.clone(), b).is_some() {
                    errors.push(format!(
                        "verp.domains.{sender}: another entry is for {s} too"
                    ));
                }
            }
        }
        if let Some(path) = &self.secret_file {
            if let Err(e) = hedwig_core::keyfile::check("VERP secret file", path, require_safe_keys)
            {
                errors.push(format!("verp.secret_file: {e}"));
            }
        }
        let key = match hedwig_core::config::read_secret(
            self.secret.as_deref(),
            self.secret_file.as_deref(),
        ) {
            Ok(Some(s)) => match hedwig_core::key::check_secret(&s) {
                Ok(s) => Some(VerpKey::new(s)),
                Err(e) => {
                    errors.push(format!("verp.secret: {e}"));
                    None
                }
            },
            Ok(None) => {
                errors.push("verp.secret: not set (secret_file or secret; the same as the post office's bounce_listener.secret)".into());
                None
            }
            Err(e) => {
                errors.push(format!("verp.secret_file: {e}"));
                None
            }
        };
        match key {
            Some(key) if errors.is_empty() => Ok(Some(Verp { key, domains })),
            _ => Err(errors),
        }
    }
}

impl Verp {
    /// The return path for `recipient` of message `queue_id` sent by `mail_from`, when its
    /// domain uses VERP; `None` otherwise (and for the null sender, or a queue id that is not
    /// ours).
    pub fn return_path(&self, mail_from: &str, queue_id: &str, recipient: &str) -> Option<String> {
        let bounce_domain = self.bounce_domain(mail_from)?;
        self.key
            .return_path(queue_id, recipient, bounce_domain)
            .ok()
    }

    /// The bounce domain for messages from `mail_from`.
    pub fn bounce_domain(&self, mail_from: &str) -> Option<&str> {
        let mailbox = hedwig_core::address::parse_reverse_path(mail_from).ok()??;
        self.domains
            .get(&mailbox.ascii_domain.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_sender_domain() {
        let config = VerpConfig {
            secret: Some("a verp secret that is long enough".into()),
            secret_file: None,
            domains: [("Example.COM".to_string(), "Bounces.Example.com".to_string())].into(),
        };
        let verp = config.check(false).unwrap().unwrap();
        let qid = "018F2A3B4C5D0123456789AB";
        let path = verp
            .return_path("app@example.com", qid, "bob@example.org")
            .unwrap();
        assert!(
            path.starts_with("bounces+") && path.ends_with("@bounces.example.com"),
            "{path}"
        );
        let key = VerpKey::new("a verp secret that is long enough");
        let v = key
            .verify_address(&path, &["bounces.example.com".into()])
            .unwrap();
        assert_eq!(
            (v.queue_id.as_str(), v.recipient.as_str()),
            (qid, "bob@example.org")
        );
        assert_eq!(
            verp.return_path("app@other.example", qid, "bob@example.org"),
            None
        );
        assert_eq!(verp.return_path("", qid, "bob@example.org"), None);
        // A recipient so long that its return path would not fit in an SMTP path: the plain
        // sender (RFC 5321 §4.5.3.1.3; the bounce listener would refuse it).
        let long = format!("{}@example.org", "b".repeat(150));
        assert_eq!(verp.return_path("app@example.com", qid, &long), None);
        assert_eq!(
            verp.return_path("app@example.com", "not-ours", "bob@example.org"),
            None
        );
        assert!(VerpConfig::default().check(false).unwrap().is_none());
        let errors = VerpConfig {
            secret: None,
            secret_file: None,
            domains: [("not a domain".to_string(), "-bad-".to_string())].into(),
        }
        .check(false)
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
