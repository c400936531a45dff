//! Per-host rules applied after a host has proved its key: revocation, allowed sender domains
//! and a rate limit (a token bucket per host).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{Config, HostPolicy};

/// Why a host's message is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    SenderDomain(String),
    RateLimited,
}

/// The policies of every host, with names normalized, and the rate-limit buckets.
pub struct Policies {
    revoked: HashSet<String>,
    default: HostPolicy,
    hosts: HashMap<String, HostPolicy>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Policies {
    /// Builds from the config; host names are lowercased (the config was validated).
    pub fn new(config: &Config) -> Policies {
        let norm = |h: &String| {
            hedwig_core::key::normalize_fqdn(h).unwrap_or_else(|_| h.to_ascii_lowercase())
        };
        Policies {
            revoked: config.revoked.iter().map(norm).collect(),
            default: config.default_policy.clone(),
            hosts: config
                .hosts
                .iter()
                .map(|(h, p)| (norm(h), p.clone()))
                .collect(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `fqdn` (lowercase) is revoked.
    pub fn is_revoked(&self, fqdn: &str) -> bool {
        self.revoked.contains(fqdn)
    }

    /// Whether `fqdn` (lowercase) must sign its posts.
    pub fn require_signed(&self, fqdn: &str) -> bool {
        self.policy(fqdn).require_signed
    }

    /// The policy that applies to `fqdn` (lowercase).
    pub fn policy(&self, fqdn: &str) -> &HostPolicy {
        self.hosts.get(fqdn).unwrap_or(&self.default)
    }

    /// Whether `fqdn` (authenticated, lowercase) may send from `sender_domain` (None: the null
    /// sender) now. Takes a rate-limit token when it may.
    pub fn admit(&self, fqdn: &str, sender_domain: Option<&str>) -> Result<(), Refusal> {
        if self.revoked.contains(fqdn) {
            return Err(Refusal::Revoked);
        }
        let policy = self.policy(fqdn);
        if let Some(domain) = sender_domain {
            if !domain_allowed(&policy.allowed_sender_domains, domain) {
                return Err(Refusal::SenderDomain(domain.to_string()));
            }
        }
        if policy.rate_per_minute > 0 && !self.take_token(fqdn, policy) {
            return Err(Refusal::RateLimited);
        }
        Ok(())
    }

    fn take_token(&self, fqdn: &str, policy: &HostPolicy) -> bool {
        let rate = f64::from(policy.rate_per_minute) / 60.0;
        let burst = f64::from(policy.rate_burst.unwrap_or(policy.rate_per_minute).max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(fqdn.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `allowed` entries: `example.com` (exactly) or `*.example.com` (it and its subdomains).
pub(crate) fn domain_allowed(allowed: &[String], domain: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.trim_end_matches('.').to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(parent) => {
                domain == parent
                    || domain
                        .strip_suffix(parent)
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            None => domain == a,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_domains() {
        let allowed = vec!["example.com".to_string(), "*.corp.example".to_string()];
        assert!(domain_allowed(&allowed, "Example.COM"));
        assert!(!domain_allowed(&allowed, "sub.example.com"));
        assert!(domain_allowed(&allowed, "corp.example"));
        assert!(domain_allowed(&allowed, "a.b.corp.example"));
        assert!(!domain_allowed(&allowed, "evilcorp.example"));
        assert!(domain_allowed(&[], "anything.test"));
    }

    #[test]
    fn rate_limit_and_revocation() {
        let mut config = Config {
            revoked: vec!["Old.Example.com".into()],
            ..Config::default()
        };
        config.hosts.insert(
            "slow.example.com".into(),
            HostPolicy {
                rate_per_minute: 2,
                ..HostPolicy::default()
            },
        );
        let p = Policies::new(&config);
        assert_eq!(p.admit("old.example.com", None), Err(Refusal::Revoked));
        assert_eq!(p.admit("slow.example.com", Some("x.test")), Ok(()));
        assert_eq!(p.admit("slow.example.com", Some("x.test")), Ok(()));
        assert_eq!(
            p.admit("slow.example.com", Some("x.test")),
            Err(Refusal::RateLimited)
        );
        for _ in 0..100 {
            assert_eq!(p.admit("fast.example.com", None), Ok(()));
        }
    }
}
