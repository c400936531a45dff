//! Per-host rules applied after a host has proved its key: revocation, allowed sender domains
//! and a rate limit (a token bucket per host).
//!
//! The rate limit counts recipients, not posts (issue 11 F4): each recipient is one delivery
//! and one possible bounce, so a post to 1,000 recipients takes 1,000 tokens. A post takes
//! all its tokens or none. One with more recipients than the bucket holds (`rate_burst`)
//! could never pass: it is refused for good ([`RateRefusal::OverBurst`], 403) instead of
//! being retried forever (429).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Config, HostPolicy};

/// Why a host's message is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    SenderDomain(String),
}

/// Why a host's message is over its rate limit.
#[derive(Debug, PartialEq, Eq)]
pub enum RateRefusal {
    /// Not enough tokens now: enough will have refilled after `retry_after`.
    Later { retry_after: Duration },
    /// More recipients than the bucket can ever hold: split the message.
    OverBurst { recipients: usize, burst: u32 },
}

/// The policies of every host, with names normalized, and the rate-limit buckets.
pub struct Policies {
    revoked: HashSet<String>,
    default: HostPolicy,
    hosts: HashMap<String, HostPolicy>,
    buckets: Buckets,
    /// `POST /status` requests per minute per host (0: unlimited), and their buckets.
    status_rate: u32,
    status_buckets: Buckets,
}

/// Token buckets by host name. Only authenticated hosts get one, so the map is as large as
/// the fleet.
#[derive(Default)]
struct Buckets(Mutex<HashMap<String, Bucket>>);

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Buckets {
    /// Takes `need` tokens from `key`'s bucket (refilled at `per_minute`, holding `burst`),
    /// all or none; else how long until enough have refilled.
    fn take(
        &self,
        key: &str,
        per_minute: u32,
        burst: u32,
        need: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        let rate = f64::from(per_minute) / 60.0;
        let burst = f64::from(burst);
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= need {
            bucket.tokens -= need;
            Ok(())
        } else {
            let wait = (need - bucket.tokens) / rate;
            Err(Duration::from_secs_f64(wait.ceil().max(1.0)))
        }
    }
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
            buckets: Buckets::default(),
            status_rate: config.status_rate_per_minute,
            status_buckets: Buckets::default(),
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
    /// sender). The rate limit is [`Policies::take_rate`].
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
        Ok(())
    }

    /// Takes one token per recipient from `fqdn`'s bucket, all or none.
    pub fn take_rate(&self, fqdn: &str, recipients: usize) -> Result<(), RateRefusal> {
        self.take_rate_at(fqdn, recipients, Instant::now())
    }

    fn take_rate_at(&self, fqdn: &str, recipients: usize, now: Instant) -> Result<(), RateRefusal> {
        let policy = self.policy(fqdn);
        if policy.rate_per_minute == 0 {
            return Ok(());
        }
        let burst_n = policy.burst();
        if recipients > burst_n as usize {
            return Err(RateRefusal::OverBurst {
                recipients,
                burst: burst_n,
            });
        }
        self.buckets
            .take(
                fqdn,
                policy.rate_per_minute,
                burst_n,
                recipients.max(1) as f64,
                now,
            )
            .map_err(|retry_after| RateRefusal::Later { retry_after })
    }

    /// Takes one `POST /status` token from `fqdn`'s (authenticated) bucket; else how long
    /// until one has refilled.
    pub fn take_status(&self, fqdn: &str) -> Result<(), Duration> {
        self.take_status_at(fqdn, Instant::now())
    }

    fn take_status_at(&self, fqdn: &str, now: Instant) -> Result<(), Duration> {
        if self.status_rate == 0 {
            return Ok(());
        }
        self.status_buckets
            .take(fqdn, self.status_rate, self.status_rate, 1.0, now)
    }
}

/// `allowed` entries: `example.com` (exactly) or `*.example.com` (it and its subdomains); an
/// empty list allows any domain ([`hedwig_core::address::domain_in_list`]).
pub(crate) fn domain_allowed(allowed: &[String], domain: &str) -> bool {
    allowed.is_empty() || hedwig_core::address::domain_in_list(allowed, domain)
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
        config.hosts.insert(
            "fast.example.com".into(),
            HostPolicy {
                rate_per_minute: 0,
                ..HostPolicy::default()
            },
        );
        let p = Policies::new(&config);
        assert_eq!(p.admit("old.example.com", None), Err(Refusal::Revoked));
        assert_eq!(p.admit("slow.example.com", Some("x.test")), Ok(()));
        assert_eq!(p.take_rate("slow.example.com", 1), Ok(()));
        assert_eq!(p.take_rate("slow.example.com", 1), Ok(()));
        assert!(matches!(
            p.take_rate("slow.example.com", 1),
            Err(RateRefusal::Later { .. })
        ));
        for _ in 0..100 {
            assert_eq!(p.take_rate("fast.example.com", 1000), Ok(()));
        }
    }

    #[test]
    fn status_requests_have_their_own_bucket_per_host() {
        let config = Config {
            status_rate_per_minute: 3,
            ..Config::default()
        };
        let p = Policies::new(&config);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(p.take_status_at("a.example", t0), Ok(()));
        }
        // the fourth waits for a token: 20 s at 3 a minute
        assert_eq!(
            p.take_status_at("a.example", t0),
            Err(Duration::from_secs(20))
        );
        // another host, and the same host's posts, are untouched
        assert_eq!(p.take_status_at("b.example", t0), Ok(()));
        assert_eq!(p.take_rate_at("a.example", 1, t0), Ok(()));
        assert_eq!(
            p.take_status_at("a.example", t0 + Duration::from_secs(20)),
            Ok(())
        );
        let unlimited = Policies::new(&Config {
            status_rate_per_minute: 0,
            ..Config::default()
        });
        for _ in 0..1000 {
            assert_eq!(unlimited.take_status_at("a.example", t0), Ok(()));
        }
    }

    #[test]
    fn recipients_are_counted_all_or_none() {
        let mut config = Config::default();
        config.hosts.insert(
            "h.example".into(),
            HostPolicy {
                rate_per_minute: 60,
                rate_burst: Some(10),
                ..HostPolicy::default()
            },
        );
        let p = Policies::new(&config);
        let t0 = Instant::now();
        assert_eq!(
            p.take_rate_at("h.example", 11, t0),
            Err(RateRefusal::OverBurst {
                recipients: 11,
                burst: 10
            })
        );
        assert_eq!(p.take_rate_at("h.example", 7, t0), Ok(()));
        // 3 left: a post to 4 takes none of them, and may come back in a second.
        assert_eq!(
            p.take_rate_at("h.example", 4, t0),
            Err(RateRefusal::Later {
                retry_after: Duration::from_secs(1)
            })
        );
        assert_eq!(p.take_rate_at("h.example", 3, t0), Ok(()));
        // One token a second.
        assert_eq!(
            p.take_rate_at("h.example", 5, t0 + Duration::from_secs(2)),
            Err(RateRefusal::Later {
                retry_after: Duration::from_secs(3)
            })
        );
        assert_eq!(
            p.take_rate_at("h.example", 5, t0 + Duration::from_secs(5)),
            Ok(())
        );
    }

    #[test]
    fn the_default_policy_is_finite() {
        let p = Policies::new(&Config::default());
        let t0 = Instant::now();
        assert_eq!(p.take_rate_at("any.example", 600, t0), Ok(()));
        assert!(matches!(
            p.take_rate_at("any.example", 1, t0),
            Err(RateRefusal::Later { .. })
        ));
        assert!(matches!(
            p.take_rate_at("other.example", 601, t0),
            Err(RateRefusal::OverBurst { .. })
        ));
    }
}
