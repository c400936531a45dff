//! `GET /console/dns`: `keygen dns`'s checks (`keygen::dns_check`: MX, SPF, DKIM, DMARC per
//! sending domain, PTR of the sending address) with the record to publish for each one that
//! is missing or wrong. The report is kept for `console.dns.cache` (DNS answers change
//! slowly and each check asks several servers); `POST /console/dns` checks again now.
//!
//! What is checked comes from `console.dns`: the workers' public address, and the worker's
//! config file (its DKIM keys, whose public halves must be published; its EHLO name; its
//! nameservers), as `keygen dns --dkim-config` reads it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Html;
use keygen::dns_check::{self, settings, Finding, HickoryDns, Report, Target};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};

use crate::console::auth::{Fields, Operator};
use crate::console::{view, Console, ConsoleError};

/// Each DNS query's timeout; the whole check is bounded by [`LIMIT`].
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const LIMIT: Duration = Duration::from_secs(30);

/// `console.dns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The public address the workers send from (SPF, PTR).
    pub sending_ip: IpAddr,
    /// The worker's config file: its `dkim:` keys, `hostname:` (EHLO) and `nameservers:`.
    pub worker_config: PathBuf,
    /// Sending domains to check; default: every domain with a DKIM key.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The workers' EHLO name; default: the worker config's `hostname`.
    #[serde(default)]
    pub ehlo: Option<String>,
    /// DNS servers to ask (`ip` or `ip:port`); default: the worker config's, else the system's.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// How long a report is shown before the page checks again.
    #[serde(default = "default_cache", with = "humantime_serde")]
    pub cache: Duration,
}

fn default_cache() -> Duration {
    Duration::from_secs(300)
}

impl DnsConfig {
    /// Problems that can be seen without the network, each naming its key.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = settings::load_worker_config(&self.worker_config) {
            problems.push(format!("console.dns.worker_config: {e}"));
        }
        for d in &self.domains {
            if let Err(e) = keygen::normalize_domain(d) {
                problems.push(format!("console.dns.domains: {e}"));
            }
        }
        for n in &self.nameservers {
            if let Err(e) = settings::parse_nameserver(n) {
                problems.push(format!("console.dns.nameservers: {e}"));
            }
        }
        problems
    }
}

/// A report and when it was made (Unix milliseconds); or why there is none.
pub struct Cached {
    pub at: u64,
    pub report: Result<Report, String>,
}

/// Runs every check as `keygen dns --dkim-config` does.
async fn run(config: &DnsConfig) -> Result<Report, String> {
    let worker = settings::load_worker_config(&config.worker_config).map_err(|e| e.to_string())?;
    let dkim = hedwig_message::dkim::DkimConfig {
        keys: worker.dkim.keys.clone(),
        default_domain: None,
    };
    // Reading and parsing the private keys is file I/O and RSA work: off the runtime.
    let keys = tokio::task::spawn_blocking(move || settings::load_keys(&dkim))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("DKIM keys: {e}"))?;
    let ehlo = config
        .ehlo
        .as_deref()
        .or(Some(worker.hostname.as_str()).filter(|h| !h.is_empty()))
        .ok_or("no EHLO name: set console.dns.ehlo or the worker's hostname")?;
    let ehlo = keygen::normalize_domain(ehlo).map_err(|e| format!("EHLO name: {e}"))?;
    let mut domains = Vec::new();
    for d in &config.domains {
        domains.push(keygen::normalize_domain(d).map_err(|e| e.to_string())?);
    }
    if domains.is_empty() {
        for key in &keys {
            if !domains.contains(&key.domain) {
                domains.push(key.domain.clone());
            }
        }
    }
    let nameservers = if config.nameservers.is_empty() {
        &worker.nameservers
    } else {
        &config.nameservers
    };
    let nameservers = nameservers
        .iter()
        .map(|s| settings::parse_nameserver(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let resolver = HickoryDns::new(&nameservers, QUERY_TIMEOUT).map_err(|e| e.to_string())?;
    let target = Target {
        sending_ip: config.sending_ip,
        ehlo,
        keys,
    };
    tokio::time::timeout(LIMIT, dns_check::check_all(&resolver, &domains, &target))
        .await
        .map_err(|_| format!("the DNS checks did not finish within {}s", LIMIT.as_secs()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The report, checked again when older than the cache time or when `fresh`.
async fn report(
    console: &Console,
    config: &DnsConfig,
    fresh: bool,
) -> (u64, Result<Report, String>) {
    let mut cached = console.dns_report.lock().await;
    let max_age = u64::try_from(config.cache.as_millis()).unwrap_or(u64::MAX);
    let stale = cached
        .as_ref()
        .is_none_or(|c| fresh || now_ms().saturating_sub(c.at) > max_age);
    if stale {
        *cached = Some(Cached {
            at: now_ms(),
            report: run(config).await,
        });
    }
    match cached.as_ref() {
        Some(c) => (c.at, c.report.clone()),
        None => (now_ms(), Err("no report".into())),
    }
}

fn findings(findings: &[Finding]) -> Markup {
    html! {
        table.dns {
            thead { tr { th { "Check" } th { "Status" } th { "Detail" } th { "Publish" } } }
            tbody {
                @for f in findings {
                    @let status = serde_json::to_value(f.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                    @let check = serde_json::to_value(f.check).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                    tr {
                        td { (check) }
                        td {
                            @if f.warning_only && status != "OK" { (view::badge("warning")) } @else { (view::badge(&status)) }
                        }
                        td { (f.detail) }
                        td { @if let Some(r) = &f.publish { code.record { (r.zone_line) } } }
                    }
                }
            }
        }
    }
}

async fn render(console: &Console, operator: &Operator, fresh: bool) -> Html<String> {
    let Some(config) = &console.settings.dns else {
        return view::page(
            operator,
            "DNS",
            "/console/dns",
            None,
            html! {
                h1 { "DNS" }
                p.muted { "The DNS checks are off. Set " code { "console.dns" } " (the workers' "
                    code { "sending_ip" } " and their " code { "worker_config" }
                    ") to see each sending domain's MX, SPF, DKIM and DMARC records and the "
                    "sending address's PTR here, as " code { "keygen dns" } " prints them." }
            },
        );
    };
    let (at, result) = report(console, config, fresh).await;
    let body = html! {
        h1 { "DNS" }
        p.muted {
            "Checked " (view::time(at)) " UTC for sending address " (config.sending_ip)
            " (kept " (humantime::format_duration(config.cache)) "). "
        }
        form.inline method="post" action="/console/dns" {
            (view::csrf(operator))
            button type="submit" { "Check again now" }
        }
        @match &result {
            Err(e) => { p.error { "The checks could not run: " (e) } }
            Ok(report) => {
                p { @if report.ok { (view::badge("OK")) " every required record is right" }
                    @else { (view::badge("MISSING")) " something is missing or wrong: publish the records below" } }
                h2 { "Sending host " (report.ehlo) }
                (findings(&report.host))
                @for d in &report.domains {
                    h2 { (d.domain) }
                    (findings(&d.findings))
                }
            }
        }
    };
    view::page(operator, "DNS", "/console/dns", None, body)
}

/// `GET /console/dns`.
pub async fn page(State(console): State<Arc<Console>>, operator: Operator) -> Html<String> {
    render(&console, &operator, false).await
}

/// `POST /console/dns`: check again now.
pub async fn recheck(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    Fields::checked(&operator, &body)?;
    tracing::info!(user = %operator.user, "console: DNS checked again");
    Ok(render(&console, &operator, true).await)
}
