//! One-click unsubscribe for bulk mail (RFC 8058, issue 19): `unsubscribe:` in the worker
//! config names the sending hosts whose mail is bulk, the post office's public base URL and
//! the token secret (the post office's `unsubscribe.secret`). Each recipient's copy of such a
//! message gets
//!
//! ```text
//! List-Unsubscribe: <https://po.example.com/unsubscribe/<token>>
//! List-Unsubscribe-Post: List-Unsubscribe=One-Click
//! ```
//!
//! before it is DKIM-signed (the signature covers both, as RFC 8058 §4 requires; see
//! `hedwig_message::dkim`), with a token for that recipient, the envelope sender's domain and
//! the message's `List-Id:` ([`hedwig_core::unsubscribe`]). One token per recipient means one
//! SMTP transaction and one signature per recipient for these messages, as with VERP.
//!
//! Nothing is added to a message that has its own `List-Unsubscribe:` (the app's is kept), to
//! bounces, or to mail from the null sender.
//!
//! Not here: the endpoint the link reaches (post office, `unsubscribe`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use hedwig_core::unsubscribe::{Unsubscribe, UnsubscribeKey};
use hedwig_queue::job::{Envelope, Kind};
use serde::{Deserialize, Serialize};

/// The `unsubscribe:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnsubscribeConfig {
    /// The post office's public base URL of the endpoint, e.g.
    /// `https://mail.example.com/unsubscribe` (the token is appended as a path segment).
    pub url: Option<String>,
    /// The token secret (the post office's `unsubscribe.secret`), or a file holding it (wins).
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Sending hosts whose mail is bulk and gets the link.
    pub hosts: Vec<String>,
    /// Lanes (docs/lanes.md) whose mail gets the link, from any host, e.g. `[bulk]`. With
    /// `hosts` empty too: off.
    pub lanes: Vec<String>,
    /// How long a link works.
    #[serde(with = "humantime_serde")]
    pub validity: Duration,
}

impl Default for UnsubscribeConfig {
    fn default() -> Self {
        UnsubscribeConfig {
            url: None,
            secret: None,
            secret_file: None,
            hosts: Vec::new(),
            lanes: Vec::new(),
            validity: Duration::from_secs(90 * 86_400),
        }
    }
}

/// The checked `unsubscribe:` settings.
#[derive(Debug, Clone)]
pub struct Unsubscriber {
    key: UnsubscribeKey,
    /// The base URL without a trailing `/`.
    url: String,
    hosts: HashSet<String>,
    lanes: HashSet<String>,
    validity: Duration,
}

/// What [`Unsubscriber::plan`] found a message needs: a link per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    sender_domain: String,
    list_id: String,
}

impl UnsubscribeConfig {
    /// `None` when off (no hosts); every problem, each naming its key.
    pub fn check(&self, require_safe_keys: bool) -> Result<Option<Unsubscriber>, Vec<String>> {
        if self.hosts.is_empty() && self.lanes.is_empty() {
            return Ok(None);
        }
        let mut errors = Vec::new();
        let mut hosts = HashSet::new();
        for h in &self.hosts {
            match hedwig_core::key::normalize_fqdn(h) {
                Ok(h) => {
                    hosts.insert(h);
                }
                Err(e) => errors.push(format!("unsubscribe.hosts: {e}")),
            }
        }
        let url = match self.url.as_deref().map(str::trim) {
            None | Some("") => {
                errors.push(
                    "unsubscribe.url: required (the post office's public https://…/unsubscribe)"
                        .into(),
                );
                String::new()
            }
            Some(u) => match base_url(u) {
                Some(base) => {
                    if base.starts_with("http://") {
                        tracing::warn!(
                            url = u,
                            "unsubscribe.url is http://: RFC 8058 requires https, and mailbox providers ignore other links"
                        );
                    }
                    base
                }
                None => {
                    errors.push(format!(
                        "unsubscribe.url: {u:?} is not an http(s) URL with a host, without query or fragment"
                    ));
                    String::new()
                }
            },
        };
        if self.validity < Duration::from_secs(86_400) {
            errors.push("unsubscribe.validity: at least 1d (links in read mail must work)".into());
        }
        let key = hedwig_core::config::checked_secret(
            "unsubscribe",
            self.secret.as_deref(),
            self.secret_file.as_deref(),
            require_safe_keys,
        )
        .map_err(|e| errors.push(e))
        .ok();
        match key {
            Some(secret) if errors.is_empty() => Ok(Some(Unsubscriber {
                key: UnsubscribeKey::new(&secret),
                url,
                hosts,
                lanes: self
                    .lanes
                    .iter()
                    .map(|l| l.trim().to_ascii_lowercase())
                    .collect(),
                validity: self.validity,
            })),
            _ => Err(errors),
        }
    }
}

/// `url` without its trailing `/` when it is `http(s)://host[...]` of printable ASCII, without
/// query, fragment or characters that would end the `<…>` of the header field.
fn base_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or("");
    let ok = !host.is_empty()
        && url
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'?' | b'#'));
    ok.then(|| url.trim_end_matches('/').to_owned())
}

impl Unsubscriber {
    /// Whether `message` (of `env`) gets links: its host is a bulk host or its lane a bulk
    /// lane, it is not a bounce, it has an envelope sender, and it has no `List-Unsubscribe:`
    /// of its own.
    pub fn plan(&self, env: &Envelope, message: &[u8]) -> Option<Plan> {
        let bulk = self.hosts.contains(&env.host)
            || env.lane.as_deref().is_some_and(|l| self.lanes.contains(l));
        if env.kind != Kind::Message || !bulk {
            return None;
        }
        let mailbox = hedwig_core::address::parse_reverse_path(&env.mail_from).ok()??;
        let list = hedwig_message::list::ListHeaders::of(message);
        if list.has_unsubscribe {
            return None;
        }
        Some(Plan {
            sender_domain: mailbox.ascii_domain.to_ascii_lowercase(),
            list_id: list.list_id.unwrap_or_default(),
        })
    }

    /// The header fields for `recipient` of message `queue_id` (Unix seconds `now`), or `None`
    /// when no token can be made (a queue id that is not ours).
    pub fn fields(
        &self,
        plan: &Plan,
        queue_id: &str,
        recipient: &str,
        now: u64,
    ) -> Option<Vec<u8>> {
        let token = self
            .key
            .token(&Unsubscribe {
                queue_id: queue_id.to_owned(),
                sender_domain: plan.sender_domain.clone(),
                list_id: plan.list_id.clone(),
                recipient: recipient.to_owned(),
                expires: now.saturating_add(self.validity.as_secs()),
            })
            .ok()?;
        Some(hedwig_message::list::one_click_fields(&format!(
            "{}/{token}",
            self.url
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig_core::address::Recipient;

    const QID: &str = "018F2A3B4C5D0123456789AB";
    const SECRET: &str = "an unsubscribe secret, long enough";

    fn config() -> UnsubscribeConfig {
        UnsubscribeConfig {
            url: Some("https://po.example.com/unsubscribe/".into()),
            secret: Some(SECRET.into()),
            hosts: vec!["Bulk.Example.com".into()],
            ..Default::default()
        }
    }

    fn env(host: &str, from: &str) -> Envelope {
        Envelope::new(
            QID.into(),
            host.into(),
            from.into(),
            vec![Recipient::parse("bob@example.org")],
        )
    }

    #[test]
    fn bulk_hosts_get_a_link_per_recipient_that_the_post_office_reads() {
        let u = config().check(false).unwrap().unwrap();
        let message = b"From: News <news@news.example.com>\r\nList-Id: <weekly.news.example.com>\r\n\r\nhi\r\n";
        let plan = u
            .plan(&env("bulk.example.com", "news@News.Example.com"), message)
            .unwrap();
        let fields = u.fields(&plan, QID, "bob@example.org", 1_000).unwrap();
        let text = String::from_utf8(fields).unwrap();
        let url = text
            .strip_prefix("List-Unsubscribe: <https://po.example.com/unsubscribe/")
            .unwrap();
        let (token, rest) = url.split_once(">\r\n").unwrap();
        assert_eq!(
            rest,
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        );
        let what = UnsubscribeKey::new(SECRET).verify(token, 1_000).unwrap();
        assert_eq!(what.recipient, "bob@example.org");
        assert_eq!(what.sender_domain, "news.example.com");
        assert_eq!(what.list_id, "weekly.news.example.com");
        assert_eq!(what.expires, 1_000 + 90 * 86_400);
        // not a bulk host, a bounce, the null sender, an app's own link: nothing added
        assert_eq!(
            u.plan(&env("web1.example.com", "a@news.example.com"), message),
            None
        );
        assert_eq!(u.plan(&env("bulk.example.com", ""), message), None);
        let mut bounce = env("bulk.example.com", "a@news.example.com");
        bounce.kind = Kind::Bounce;
        assert_eq!(u.plan(&bounce, message), None);
        // a bulk lane from any host
        let by_lane = UnsubscribeConfig {
            hosts: vec![],
            lanes: vec!["Bulk".into()],
            ..config()
        }
        .check(false)
        .unwrap()
        .unwrap();
        let mut in_lane = env("web1.example.com", "a@news.example.com");
        assert_eq!(by_lane.plan(&in_lane, message), None);
        in_lane.lane = Some("bulk".into());
        assert!(by_lane.plan(&in_lane, message).is_some());
        in_lane.lane = Some("transactional".into());
        assert_eq!(by_lane.plan(&in_lane, message), None);
        let own = b"List-Unsubscribe: <mailto:u@news.example.com>\r\n\r\nhi\r\n";
        assert_eq!(
            u.plan(&env("bulk.example.com", "a@news.example.com"), own),
            None
        );
    }

    #[test]
    fn every_bad_key_is_named() {
        let off = UnsubscribeConfig::default();
        assert!(off.check(false).unwrap().is_none());
        let bad = UnsubscribeConfig {
            url: Some("ftp://x.example.com/u?x=1".into()),
            secret: None,
            hosts: vec!["not a host".into()],
            validity: Duration::from_secs(60),
            ..Default::default()
        };
        let errors = bad.check(false).unwrap_err();
        assert_eq!(
            base_url("https://po.example.com/unsubscribe/").as_deref(),
            Some("https://po.example.com/unsubscribe")
        );
        assert_eq!(base_url("https:///x"), None);
        assert_eq!(base_url("https://x.test/a b"), None);
        for key in [
            "unsubscribe.url",
            "unsubscribe.hosts",
            "unsubscribe.validity",
            "unsubscribe.secret",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key}: {errors:?}"
            );
        }
    }
}
