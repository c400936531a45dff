//! An app's label policy as the SMTP session enforces it (issue 17): the domains it may send
//! as (MAIL FROM and every `From:` address) and its message rate. The post office's policy for
//! the sending host still applies on top: these labels can only narrow it.
//!
//! Replies: a domain outside `hedwig.sender-domains` gets `550 5.7.1 container web-1 may not
//! send as evil.test`; over `hedwig.rate`, MAIL gets `451 4.7.1` (the client retries later); a
//! label that cannot be read gets `451 4.3.5` until its owner fixes it (failing open would drop
//! a limit its owner asked for; failing for good would lose mail for a typo).
//!
//! Not here: reading the labels ([`crate::docker`]); the rate's bookkeeping (behind
//! [`RateCheck`]).

use std::sync::Arc;

use hedwig_core::address::Mailbox;
use hedwig_core::from::FromHeader;

/// Takes one message from the app's allowance: `false` when it is used up for now.
#[derive(Clone)]
pub struct RateCheck(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for RateCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateCheck(..)")
    }
}

/// What a session enforces for its app.
#[derive(Debug, Clone, Default)]
pub struct AppPolicy {
    /// How refusals name the app (`container web-1`).
    pub who: String,
    /// `example.com` (exactly) or `*.example.com` (it and its subdomains); `None`: any.
    pub sender_domains: Option<Vec<String>>,
    /// Checked at each MAIL that passes the other checks.
    pub rate: Option<RateCheck>,
    /// A label that cannot be read (`hedwig.rate="fast"`): every MAIL is refused with 451.
    pub bad_label: Option<String>,
}

/// A refusal: code and text (with the enhanced status code).
pub type Refusal = (u16, String);

impl AppPolicy {
    /// The checks at MAIL FROM (`None`: the null sender, which has no domain to check; its
    /// `From:` still is).
    pub fn check_mail(&self, sender: Option<&Mailbox>) -> Result<(), Refusal> {
        if let Some(label) = &self.bad_label {
            return Err((
                451,
                format!(
                    "4.3.5 {} has a label mailman cannot read: {label}",
                    self.who
                ),
            ));
        }
        if let Some(sender) = sender {
            self.check_domain(&sender.ascii_domain)?;
        }
        if let Some(rate) = &self.rate {
            if !(rate.0)() {
                return Err((
                    451,
                    format!(
                        "4.7.1 {} is over its hedwig.rate; try again later",
                        self.who
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The check of a received message: every `From:` address in `hedwig.sender-domains`.
    /// A message without `From:` passes here (mailman adds one from the envelope sender,
    /// which [`AppPolicy::check_mail`] checked, or refuses it for the null sender).
    pub fn check_message(&self, message: &[u8]) -> Result<(), Refusal> {
        if self.sender_domains.is_none() {
            return Ok(());
        }
        let from = FromHeader::parse(message);
        match from.domains() {
            Ok(domains) => domains.iter().try_for_each(|d| self.check_domain(d)),
            Err(no_domain) => Err((
                550,
                format!(
                    "5.7.1 {} may not send as {:?}: no domain in its hedwig.sender-domains",
                    self.who, no_domain.0
                ),
            )),
        }
    }

    fn check_domain(&self, domain: &str) -> Result<(), Refusal> {
        match &self.sender_domains {
            Some(allowed) if !domain_allowed(allowed, domain) => Err((
                550,
                format!(
                    "5.7.1 {} may not send as {}",
                    self.who,
                    domain.trim_end_matches('.').to_ascii_lowercase()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `allowed` entries: `example.com` (exactly) or `*.example.com` (it and its subdomains), as
/// the post office's `allowed_sender_domains` reads them. An empty list allows nothing.
pub fn domain_allowed(allowed: &[String], domain: &str) -> bool {
    hedwig_core::address::domain_in_list(allowed, domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn domains_exact_and_wildcard() {
        let allowed = list(&["shop.test", "*.mail.test"]);
        assert!(domain_allowed(&allowed, "shop.test"));
        assert!(domain_allowed(&allowed, "SHOP.test."));
        assert!(!domain_allowed(&allowed, "a.shop.test"));
        assert!(domain_allowed(&allowed, "mail.test"));
        assert!(domain_allowed(&allowed, "eu.mail.test"));
        assert!(!domain_allowed(&allowed, "evilmail.test"));
        assert!(!domain_allowed(&[], "shop.test"));
    }

    #[test]
    fn from_header_addresses_are_all_checked() {
        let p = AppPolicy {
            who: "container web-1".into(),
            sender_domains: Some(list(&["shop.test"])),
            ..Default::default()
        };
        assert!(p.check_message(b"From: a@shop.test\r\n\r\nx\r\n").is_ok());
        assert!(p.check_message(b"Subject: none\r\n\r\nx\r\n").is_ok());
        let (code, text) = p
            .check_message(b"From: a@shop.test, b@evil.test\r\n\r\nx\r\n")
            .unwrap_err();
        assert_eq!(code, 550);
        assert_eq!(text, "5.7.1 container web-1 may not send as evil.test");
        let (code, _) = p.check_message(b"From: root\r\n\r\nx\r\n").unwrap_err();
        assert_eq!(code, 550);
        // without the label, anything goes
        assert!(AppPolicy::default()
            .check_message(b"From: b@evil.test\r\n\r\n")
            .is_ok());
    }
}
