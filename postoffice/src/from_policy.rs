//! The From: policy (issue 11 F1): the header field a reader sees and DMARC checks is held to
//! the sending host's `allowed_sender_domains` like the envelope sender, and the domains the
//! message may be DKIM-signed for are chosen here, where the host is known.
//!
//! - More than one From: field: refused (400), whatever the policy; a receiver might show or
//!   check either one.
//! - A host with a list: every From: address (groups included) must have a domain the list
//!   allows (403). The message may be signed for the From: domain and for each of its parents
//!   that the list also allows (an exact entry covers only itself, `*.example.com` covers it
//!   and its subdomains).
//! - A host without a list (any sender): accepted, but never signed; the post office warns at
//!   start naming such hosts.
//!
//! - A bounce the host makes itself (null envelope sender, every From: address in the host's
//!   own name, as mailman's `MAILER-DAEMON@<fqdn>` for a message refused after its 250) is
//!   accepted whatever the list says, and signed only if the list names that domain.
//!
//! The envelope sender is checked in [`crate::policy`]; the null sender skips that check but
//! not this one.

use hedwig_core::from::{domain_and_parents, FromHeader};

use crate::config::{Config, HostPolicy};
use crate::policy::domain_allowed;

/// Why a message's From: is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FromRefusal {
    /// More than one From: field (the count).
    Several(usize),
    /// An address without a domain that the policy could allow.
    NoDomain(String),
    /// A domain the policy does not allow.
    Domain(String),
}

/// Checks the From: fields of `message` against `policy`. `own_bounce` is the host's fqdn
/// when the envelope sender is null (a bounce of the host's own may be From: its own name).
/// Returns the domains the message may be signed for, most specific first (empty: none).
pub fn check(
    policy: &HostPolicy,
    own_bounce: Option<&str>,
    message: &[u8],
) -> Result<Vec<String>, FromRefusal> {
    let from = FromHeader::parse(message);
    if from.fields > 1 {
        return Err(FromRefusal::Several(from.fields));
    }
    let allowed = &policy.allowed_sender_domains;
    if allowed.is_empty() {
        return Ok(Vec::new());
    }
    let domains = from
        .domains()
        .map_err(|no_domain| FromRefusal::NoDomain(no_domain.0))?;
    let own = |d: &String| own_bounce.is_some_and(|fqdn| d.eq_ignore_ascii_case(fqdn));
    if let Some(refused) = domains
        .iter()
        .find(|d| !domain_allowed(allowed, d) && !own(d))
    {
        return Err(FromRefusal::Domain(refused.clone()));
    }
    let Some(first) = domains.first() else {
        return Ok(Vec::new());
    };
    Ok(domain_and_parents(first)
        .filter(|d| domain_allowed(allowed, d))
        .map(str::to_string)
        .collect())
}

/// Warns once at start about the hosts whose mail is never signed: the default policy and
/// every host entry without `allowed_sender_domains`.
pub fn warn_unsigned_hosts(config: &Config) {
    if config.default_policy.allowed_sender_domains.is_empty() {
        tracing::warn!(
            "default_policy has no allowed_sender_domains: hosts without their own entry may use \
             any sender domain, and their mail is never DKIM-signed; list each host's domains"
        );
    }
    let mut open: Vec<&str> = config
        .hosts
        .iter()
        .filter(|(_, p)| p.allowed_sender_domains.is_empty())
        .map(|(h, _)| h.as_str())
        .collect();
    if !open.is_empty() {
        open.sort_unstable();
        tracing::warn!(
            hosts = %open.join(","),
            "these hosts have no allowed_sender_domains: they may use any sender domain, and \
             their mail is never DKIM-signed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(domains: &[&str]) -> HostPolicy {
        HostPolicy {
            allowed_sender_domains: domains.iter().map(|d| d.to_string()).collect(),
            ..HostPolicy::default()
        }
    }

    fn msg(headers: &str) -> Vec<u8> {
        format!("{headers}Subject: s\r\n\r\nbody\r\n").into_bytes()
    }

    #[test]
    fn signing_domains_follow_the_list() {
        let p = policy(&["tenant-a.test", "*.pattern.test", "*.x.exact.test"]);
        let ok = |h: &str| check(&p, None, &msg(h)).unwrap();
        assert_eq!(ok("From: a@Tenant-A.test\r\n"), ["tenant-a.test"]);
        assert_eq!(
            ok("From: a@b.pattern.test\r\n"),
            ["b.pattern.test", "pattern.test"]
        );
        // exact.test itself is not listed: its key never signs for y.x.exact.test.
        assert_eq!(
            ok("From: a@y.x.exact.test\r\n"),
            ["y.x.exact.test", "x.exact.test"]
        );
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("From: undisclosed:;\r\n"), Vec::<String>::new());
        assert_eq!(
            check(&p, None, &msg("From: a@sub.tenant-a.test\r\n")),
            Err(FromRefusal::Domain("sub.tenant-a.test".into()))
        );
        assert_eq!(
            check(&p, None, &msg("From: root\r\n")),
            Err(FromRefusal::NoDomain("root".into()))
        );
        assert_eq!(
            check(
                &p,
                None,
                &msg("From: a@tenant-a.test\r\nFrom: a@tenant-a.test\r\n")
            ),
            Err(FromRefusal::Several(2))
        );
    }

    #[test]
    fn without_a_list_anything_goes_unsigned() {
        let p = policy(&[]);
        assert_eq!(
            check(&p, None, &msg("From: ceo@tenant-b.test\r\n")),
            Ok(Vec::new())
        );
        assert_eq!(
            check(&p, None, &msg("From: a@x.test\r\nFrom: b@y.test\r\n")),
            Err(FromRefusal::Several(2))
        );
    }

    #[test]
    fn a_host_may_bounce_from_its_own_name_unsigned() {
        let p = policy(&["tenant-a.test"]);
        let bounce = msg("From: MAILER-DAEMON@Web1.Example.org\r\n");
        // Null sender, From: the host's own name: accepted, not signed (not in the list).
        assert_eq!(check(&p, Some("web1.example.org"), &bounce), Ok(Vec::new()));
        // Not for a message with a sender, nor for another host's name.
        assert_eq!(
            check(&p, None, &bounce),
            Err(FromRefusal::Domain("web1.example.org".into()))
        );
        assert_eq!(
            check(&p, Some("web2.example.org"), &bounce),
            Err(FromRefusal::Domain("web1.example.org".into()))
        );
    }
}
