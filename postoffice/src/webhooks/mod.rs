//! Signed webhooks (issue 14, docs/webhooks.md): the `webhooks:` settings, checked into
//! [`Endpoint`]s; the ledger writer fills the outbox for them (`hedwig_ledger::webhook`), and
//! the [`dispatch`]er of the post office running the writer sends it.
//!
//! Layout: [`sign`] (the `Hedwig-Signature` header), [`dispatch`] (one task per endpoint:
//! claim, send, backoff, give up after `max_age`), [`cli`] (`postoffice webhooks`), [`api`]
//! (the admin API's `/api/v1/webhooks` routes).
//!
//! Not here: which events go where and the payload (`hedwig_ledger::webhook`).

pub mod api;
pub mod cli;
pub mod dispatch;
pub mod sign;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use hedwig_ledger::webhook::{Route, EVENT_TYPES};
use serde::{Deserialize, Serialize};

/// Shortest secret accepted (a signature is only as good as its key).
pub const MIN_SECRET: usize = 16;

/// One entry of `webhooks:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A short name: the outbox key, in logs, `postoffice webhooks` and the API.
    pub name: String,
    /// Where events are POSTed: `http://` or `https://`.
    pub url: String,
    /// A file holding the signing secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The name of an environment variable holding the secret (wins over `secret_file`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Event types sent: queued, delivered, deferred, bounced, expired, suppressed, held,
    /// released.
    pub events: Vec<String>,
    /// Only messages from these sending hosts (default: every host of the post office).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only messages whose envelope sender is in these domains (default: every domain).
    #[serde(default)]
    pub sender_domains: Vec<String>,
    /// Time for one request, connection included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long an event is retried; then it is marked failed (`postoffice webhooks`).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// The first retry's delay; it doubles per failure (with jitter) up to `max_backoff`.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Requests in flight to this endpoint at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_age() -> Duration {
    Duration::from_secs(3 * 86_400)
}
fn default_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(3600)
}
fn default_concurrency() -> usize {
    4
}

/// A checked endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: reqwest::Url,
    /// The signing secret.
    pub secret: String,
    pub route: Route,
    pub timeout: Duration,
    pub max_age: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub concurrency: usize,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// Checks `webhooks:`; every problem names its entry and key.
pub fn check(list: &[WebhookConfig]) -> Result<Vec<Endpoint>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, w) in list.iter().enumerate() {
        let at = format!("webhooks[{i}]");
        let before = problems.len();
        let name_ok = !w.name.is_empty()
            && w.name.len() <= 64
            && w.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !name_ok {
            problems.push(format!(
                "{at}.name: {:?}: 1 to 64 of a-z, 0-9, '-', '_', '.'",
                w.name
            ));
        } else if !names.insert(w.name.clone()) {
            problems.push(format!("{at}.name: {:?} is used twice", w.name));
        }
        let url = match reqwest::Url::parse(&w.url) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                Some(u)
            }
            Ok(_) => {
                problems.push(format!(
                    "{at}.url: {:?}: must be http:// or https://",
                    w.url
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{at}.url: {:?}: {e}", w.url));
                None
            }
        };
        let secret = match (&w.secret_env, &w.secret_file) {
            (Some(var), _) => match std::env::var(var) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(_) => {
                    problems.push(format!("{at}.secret_env: {var} is not set"));
                    None
                }
            },
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(e) => {
                    problems.push(format!("{at}.secret_file: {}: {e}", path.display()));
                    None
                }
            },
            (None, None) => {
                problems.push(format!("{at}: no secret: set secret_file or secret_env"));
                None
            }
        };
        if let Some(s) = &secret {
            if s.len() < MIN_SECRET {
                problems.push(format!(
                    "{at}: the secret must be at least {MIN_SECRET} characters (it is {})",
                    s.len()
                ));
            }
        }
        if w.events.is_empty() {
            problems.push(format!(
                "{at}.events: empty; choose from {}",
                EVENT_TYPES.join(", ")
            ));
        }
        for e in &w.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                problems.push(format!(
                    "{at}.events: unknown event {e:?}; known: {}",
                    EVENT_TYPES.join(", ")
                ));
            }
        }
        let mut hosts = Vec::new();
        for h in &w.hosts {
            match hedwig_core::key::normalize_fqdn(h) {
                Ok(h) => hosts.push(h),
                Err(e) => problems.push(format!("{at}.hosts: {h:?}: {e}")),
            }
        }
        let mut domains = Vec::new();
        for d in &w.sender_domains {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if d.is_empty() || d.contains('@') || d.contains(char::is_whitespace) {
                problems.push(format!("{at}.sender_domains: {d:?} is not a domain"));
            } else {
                domains.push(d);
            }
        }
        if w.timeout.is_zero() || w.backoff.is_zero() || w.concurrency == 0 {
            problems.push(format!(
                "{at}: timeout, backoff and concurrency must be more than 0"
            ));
        }
        if w.max_backoff < w.backoff {
            problems.push(format!("{at}.max_backoff: less than backoff"));
        }
        if w.max_age < w.timeout {
            problems.push(format!("{at}.max_age: less than timeout"));
        }
        if problems.len() > before {
            continue;
        }
        if let (Some(url), Some(secret)) = (url, secret) {
            out.push(Endpoint {
                name: w.name.clone(),
                url,
                secret,
                route: Route {
                    name: w.name.clone(),
                    events: w.events.iter().cloned().collect(),
                    hosts,
                    sender_domains: domains,
                },
                timeout: w.timeout,
                max_age: w.max_age,
                backoff: w.backoff,
                max_backoff: w.max_backoff,
                concurrency: w.concurrency.min(64),
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: serde_json::Value) -> WebhookConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_good_entry_and_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "0123456789abcdef-secret\n").unwrap();
        let w = entry(serde_json::json!({
            "name": "app", "url": "https://hooks.example.com/x", "secret_file": secret,
            "events": ["delivered", "bounced"], "hosts": ["Web1.Example.com"],
            "sender_domains": ["Example.COM"]
        }));
        let e = check(&[w]).unwrap().remove(0);
        assert_eq!(e.secret, "0123456789abcdef-secret");
        assert_eq!(e.route.hosts, ["web1.example.com"]);
        assert_eq!(e.route.sender_domains, ["example.com"]);
        assert_eq!(e.timeout, Duration::from_secs(10));
        assert_eq!(e.max_age, Duration::from_secs(3 * 86_400));
        assert!(!format!("{e:?}").contains("secret\""), "{e:?}");
    }

    #[test]
    fn every_problem_is_named() {
        let w = entry(serde_json::json!({
            "name": "app", "url": "ftp://x.example.com/", "events": ["delivered", "openend"],
            "timeout": "0s"
        }));
        let mut twice = w.clone();
        twice.url = "not a url".into();
        let err = check(&[w, twice]).unwrap_err();
        let all = err.join("\n");
        for needle in [
            "webhooks[0].url: \"ftp://x.example.com/\": must be http:// or https://",
            "webhooks[0]: no secret",
            "webhooks[0].events: unknown event \"openend\"",
            "webhooks[0]: timeout, backoff and concurrency must be more than 0",
            "webhooks[1].name: \"app\" is used twice",
            "webhooks[1].url: \"not a url\"",
        ] {
            assert!(all.contains(needle), "{needle} in:\n{all}");
        }
        let mut short = entry(serde_json::json!({
            "name": "a", "url": "http://127.0.150.1/", "events": ["queued"]
        }));
        short.secret_env = Some("HEDWIG_TEST_WEBHOOK_SHORT_SECRET_UNSET".into());
        let err = check(&[short]).unwrap_err();
        assert!(err[0].contains("is not set"), "{err:?}");
    }
}
