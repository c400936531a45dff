//! `keygen dns`: checks, per sending domain, the DNS records mail from the post office needs,
//! and says for each what to publish.
//!
//! Per domain: MX (a warning only: bounces and replies need it, sending does not), SPF
//! covering the sending IP, each configured DKIM key's TXT record, DMARC. For the sending
//! host: the PTR of the sending IP naming the EHLO host, which resolves back to the IP
//! (forward-confirmed reverse DNS). Each check ends [`Status::Ok`], `Missing`, `Wrong`, or
//! `Error` (a lookup failed, so nothing can be said), with the record to publish.
//!
//! - [`lookup`]: the [`Dns`] trait and hickory's implementation.
//! - [`spf`]: SPF parsing and evaluation.
//! - [`records`]: DKIM key and DMARC record reading.
//! - [`settings`]: the keys and names to check, from the worker config or the command line.
//!
//! Not checked: SPF of the EHLO name (the HELO identity), MTA-STS, TLS-RPT, BIMI, DNSSEC.

pub mod lookup;
pub mod records;
pub mod settings;
pub mod spf;
#[cfg(test)]
mod testdns;

use std::fmt::Write as _;
use std::net::IpAddr;

use hedwig_message::dkim::KeyInfo;
use hickory_resolver::proto::rr::Name;
use serde::Serialize;

pub use lookup::{Dns, HickoryDns};
use spf::SpfResult;

use crate::zone::DnsRecord;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    /// Nothing is published.
    Missing,
    /// Something is published, but not what is needed.
    Wrong,
    /// A lookup failed (timeout, SERVFAIL): could not check.
    Error,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Missing => "MISSING",
            Status::Wrong => "WRONG",
            Status::Error => "ERROR",
        }
    }
}

/// Which record a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Check {
    Mx,
    Spf,
    Dkim,
    Ptr,
    Dmarc,
}

impl Check {
    fn label(self) -> &'static str {
        match self {
            Check::Mx => "MX",
            Check::Spf => "SPF",
            Check::Dkim => "DKIM",
            Check::Ptr => "PTR",
            Check::Dmarc => "DMARC",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: Check,
    pub status: Status,
    /// What was found, or why it is wrong.
    pub detail: String,
    /// The record to publish to make it OK (`None` when OK, or when no record can say it).
    pub publish: Option<DnsRecord>,
    /// A problem here is reported but does not fail the run (MX).
    pub warning_only: bool,
}

impl Finding {
    fn new(check: Check, status: Status, detail: impl Into<String>) -> Self {
        Finding {
            check,
            status,
            detail: detail.into(),
            publish: None,
            warning_only: false,
        }
    }

    fn publish(mut self, record: DnsRecord) -> Self {
        self.publish = Some(record);
        self
    }

    fn error(check: Check, e: &crate::Error) -> Self {
        Finding::new(check, Status::Error, format!("could not check: {e}"))
    }

    /// Whether this finding fails the run.
    pub fn fails(&self) -> bool {
        self.status != Status::Ok && !self.warning_only
    }
}

/// The findings of one sending domain.
#[derive(Debug, Clone, Serialize)]
pub struct DomainReport {
    pub domain: String,
    pub findings: Vec<Finding>,
}

/// Everything `keygen dns` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no finding fails (warnings allowed).
    pub ok: bool,
    pub sending_ip: IpAddr,
    pub ehlo: String,
    /// Findings about the sending host (PTR).
    pub host: Vec<Finding>,
    pub domains: Vec<DomainReport>,
}

impl Report {
    /// Human-readable: one line per check, the record to publish under it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let section = |out: &mut String, title: &str, findings: &[Finding]| {
            let _ = writeln!(out, "{title}");
            for f in findings {
                let warn = if f.warning_only && f.status != Status::Ok {
                    " (warning)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  {:<8}{:<7}{}{warn}",
                    f.status.label(),
                    f.check.label(),
                    f.detail
                );
                if let Some(record) = &f.publish {
                    let _ = writeln!(out, "{:17}publish: {}", "", record.zone_line);
                }
            }
        };
        section(
            &mut out,
            &format!("sending host {} (EHLO {})", self.sending_ip, self.ehlo),
            &self.host,
        );
        for domain in &self.domains {
            section(&mut out, &domain.domain, &domain.findings);
        }
        let failing = self
            .host
            .iter()
            .chain(self.domains.iter().flat_map(|d| &d.findings))
            .filter(|f| f.fails())
            .count();
        let _ = match failing {
            0 => writeln!(out, "all required records are in place"),
            n => writeln!(out, "{n} problem(s): publish the records above (DNS changes can take the zone's TTL to be seen)"),
        };
        out
    }
}

/// What to check against.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address the workers send from.
    pub sending_ip: IpAddr,
    /// The name the workers send in EHLO (lowercase, no trailing dot).
    pub ehlo: String,
    /// The configured DKIM keys; each domain's keys are checked with it.
    pub keys: Vec<KeyInfo>,
}

/// Runs every check for `domains` (A-labels, lowercase) and the sending host.
pub async fn check_all<D: Dns + Sync>(dns: &D, domains: &[String], target: &Target) -> Report {
    let host = vec![check_ptr(dns, target.sending_ip, &target.ehlo).await];
    let mut reports = Vec::new();
    for domain in domains {
        let mut findings = vec![
            check_mx(dns, domain).await,
            check_spf(dns, domain, target.sending_ip).await,
        ];
        let keys: Vec<&KeyInfo> = target.keys.iter().filter(|k| &k.domain == domain).collect();
        if keys.is_empty() {
            findings.push(Finding::new(
                Check::Dkim,
                Status::Missing,
                format!(
                    "no DKIM key configured for {domain}: make one with `keygen dkim {domain}` and pass --dkim-config or --dkim-key"
                ),
            ));
        }
        for key in keys {
            findings.push(check_dkim(dns, key).await);
        }
        findings.push(check_dmarc(dns, domain).await);
        reports.push(DomainReport {
            domain: domain.clone(),
            findings,
        });
    }
    let ok = !host
        .iter()
        .chain(reports.iter().flat_map(|d| &d.findings))
        .any(Finding::fails);
    Report {
        ok,
        sending_ip: target.sending_ip,
        ehlo: target.ehlo.clone(),
        host,
        domains: reports,
    }
}

/// MX: the domain can receive bounces and replies. Warning-level.
pub async fn check_mx<D: Dns + Sync>(dns: &D, domain: &str) -> Finding {
    let suggestion = || DnsRecord::other(domain, "MX", &format!("10 mail.{domain}"));
    let mut finding = match dns.mx(domain).await {
        Err(e) => Finding::error(Check::Mx, &e),
        Ok(hosts) if hosts.is_empty() => Finding::new(
            Check::Mx,
            Status::Missing,
            format!("no MX: bounces and replies to @{domain} have nowhere to go, and some receivers refuse mail from such domains (use your inbound mail host)"),
        )
        .publish(suggestion()),
        Ok(hosts) if hosts.iter().all(|(_, h)| h.is_empty()) => Finding::new(
            Check::Mx,
            Status::Wrong,
            format!("null MX (RFC 7505): {domain} says it receives no mail, so bounces to its senders are lost"),
        )
        .publish(suggestion()),
        Ok(mut hosts) => {
            hosts.sort();
            let list: Vec<String> = hosts.iter().map(|(p, h)| format!("{p} {h}")).collect();
            Finding::new(Check::Mx, Status::Ok, list.join(", "))
        }
    };
    finding.warning_only = true;
    finding
}

/// SPF: the domain's policy passes mail from `ip`.
pub async fn check_spf<D: Dns + Sync>(dns: &D, domain: &str, ip: IpAddr) -> Finding {
    let eval = spf::check_host(dns, ip, domain).await;
    let add = |record: &Option<String>| {
        let value = match record {
            Some(r) => spf::add_ip(r, ip),
            None => spf::new_record(ip),
        };
        DnsRecord::txt(domain, &value)
    };
    let notes = if eval.notes.is_empty() {
        String::new()
    } else {
        format!(" (not evaluated: {})", eval.notes.join("; "))
    };
    match &eval.result {
        SpfResult::Pass if eval.pass_all => Finding::new(
            Check::Spf,
            Status::Wrong,
            format!("passes {ip} only through a pass-everything `all` ({}): anyone may send as {domain}",
                eval.matched.as_deref().unwrap_or("all")),
        )
        .publish(add(&eval.record)),
        SpfResult::Pass => Finding::new(
            Check::Spf,
            Status::Ok,
            format!("{ip} passes: {}", eval.matched.as_deref().unwrap_or("matched")),
        ),
        SpfResult::None => Finding::new(Check::Spf, Status::Missing, format!("no v=spf1 TXT record at {domain}"))
            .publish(add(&None)),
        SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => {
            let how = match &eval.matched {
                Some(m) => format!("{} by {m}", eval.result.name()),
                None => format!("{}: no mechanism matches", eval.result.name()),
            };
            Finding::new(
                Check::Spf,
                Status::Wrong,
                format!("does not cover {ip} ({how}){notes}"),
            )
            .publish(add(&eval.record))
        }
        SpfResult::PermError(why) => {
            let finding = Finding::new(Check::Spf, Status::Wrong, format!("broken (permerror): {why}"));
            match eval.record {
                // Adding the IP first makes it pass before any lookup is counted.
                Some(_) => finding.publish(add(&eval.record)),
                // Several records: merge them into one.
                None => finding.publish(add(&None)),
            }
        }
        SpfResult::TempError(why) => Finding::new(Check::Spf, Status::Error, format!("could not check: {why}")),
    }
}

/// DKIM: the TXT record at the key's name publishes this key.
pub async fn check_dkim<D: Dns + Sync>(dns: &D, key: &KeyInfo) -> Finding {
    let name = key.dns_name();
    let publish = DnsRecord::txt(&name, &key.txt);
    match dns.txt(&name).await {
        Err(e) => Finding::error(Check::Dkim, &e),
        Ok(found) if found.is_empty() => Finding::new(
            Check::Dkim,
            Status::Missing,
            format!("no TXT record at {name} for {}", key.key_file.display()),
        )
        .publish(publish),
        Ok(found) => match records::compare_dkim(&found, &key.txt) {
            Ok(()) => Finding::new(
                Check::Dkim,
                Status::Ok,
                format!(
                    "{name} publishes the {} key in {}",
                    key.algorithm,
                    key.key_file.display()
                ),
            ),
            Err(why) => {
                Finding::new(Check::Dkim, Status::Wrong, format!("{name}: {why}")).publish(publish)
            }
        },
    }
}

/// DMARC: a `v=DMARC1` record at `_dmarc.<domain>`, or at a parent (the organizational
/// domain, found by walking up: this checker has no public suffix list).
pub async fn check_dmarc<D: Dns + Sync>(dns: &D, domain: &str) -> Finding {
    let name = format!("_dmarc.{domain}");
    let publish = DnsRecord::txt(&name, &records::suggested_dmarc(domain));
    let mut candidate = domain;
    loop {
        let at = format!("_dmarc.{candidate}");
        let txts = match dns.txt(&at).await {
            Ok(txts) => txts,
            Err(e) => return Finding::error(Check::Dmarc, &e),
        };
        match records::dmarc_record(&txts) {
            Ok(Some(record)) if candidate == domain => {
                return Finding::new(Check::Dmarc, Status::Ok, record.to_string())
            }
            Ok(Some(record)) => {
                return Finding::new(Check::Dmarc, Status::Ok, format!("{record} (from {at})"))
            }
            Ok(None) => {}
            Err(why) => {
                return Finding::new(Check::Dmarc, Status::Wrong, format!("{at}: {why}"))
                    .publish(publish)
            }
        }
        match candidate.split_once('.') {
            Some((_, parent)) if parent.contains('.') => candidate = parent,
            _ => break,
        }
    }
    Finding::new(
        Check::Dmarc,
        Status::Missing,
        format!("no v=DMARC1 TXT record at {name}"),
    )
    .publish(publish)
}

/// PTR: `ip`'s reverse name is the EHLO name, and the EHLO name resolves to `ip`.
pub async fn check_ptr<D: Dns + Sync>(dns: &D, ip: IpAddr, ehlo: &str) -> Finding {
    let reverse = Name::from(ip)
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ptr_record = DnsRecord::other(&reverse, "PTR", ehlo);
    let names = match dns.ptr(ip).await {
        Ok(names) => names,
        Err(e) => return Finding::error(Check::Ptr, &e),
    };
    if names.is_empty() {
        return Finding::new(
            Check::Ptr,
            Status::Missing,
            format!("{ip} has no PTR record (it is set by whoever owns the address: ask the hosting provider)"),
        )
        .publish(ptr_record);
    }
    if !names.iter().any(|n| n == ehlo) {
        return Finding::new(
            Check::Ptr,
            Status::Wrong,
            format!(
                "{ip} points to {}, not the EHLO name {ehlo}",
                names.join(", ")
            ),
        )
        .publish(ptr_record);
    }
    let forward = match dns.ips(ehlo).await {
        Ok(ips) => ips,
        Err(e) => return Finding::error(Check::Ptr, &e),
    };
    if forward.contains(&ip) {
        return Finding::new(Check::Ptr, Status::Ok, format!("{ip} -> {ehlo} -> {ip}"));
    }
    let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
    let found = if forward.is_empty() {
        "no address".to_string()
    } else {
        forward
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Finding::new(
        Check::Ptr,
        Status::Wrong,
        format!(
            "{ip} -> {ehlo}, but {ehlo} resolves to {found} (forward-confirmed reverse DNS fails)"
        ),
    )
    .publish(DnsRecord::other(ehlo, rtype, &ip.to_string()))
}

#[cfg(test)]
mod tests;
