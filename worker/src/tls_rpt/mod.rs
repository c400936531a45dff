//! TLS-RPT (RFC 8460): daily aggregate reports of the MTA-STS checks this worker made.
//!
//! Every check against a policy ([`crate::mta_sts`], [`crate::deliver`]) ends in a
//! [`ResultType`] handed to [`TlsRpt::record`]: counted per period (a UTC day by default,
//! `tls_rpt.interval`), per policy domain, per policy: successful and failed sessions, and
//! failure-detail rows (result type, sending and receiving IP, MX host) up to
//! [`MAX_DETAILS`] per domain. Memory is bounded ([`MAX_DOMAINS`] per period, [`MAX_PERIODS`]
//! periods). With `mta_sts.state_dir`, the counts are written to `<state_dir>/tls-rpt/counts.json`
//! (temporary file, fsync, rename) every `tls_rpt.flush_interval` and at stop, and read back at
//! start, so a restart within the day loses at most one interval's counts.
//!
//! [`TlsRpt::run`]: after a period ends (plus a random delay up to `tls_rpt.max_delay`, so
//! that relays do not all report at 00:00), for each domain with counts, looks up
//! `_smtp._tls.<domain>` TXT ([`report::parse_txt`]), builds the JSON ([`report::json`]),
//! gzips it and sends it to each `rua`: `https:` by POST (`application/tlsrpt+gzip`, the
//! worker's resolver, web PKI plus `tls.ca_file`, [`HTTP_ATTEMPTS`] tries with backoff);
//! `mailto:` as a message ([`report::message`]) put into the worker's own outbound tube, from
//! `tls_rpt.sender`, so it goes out through this relay (DKIM-signed for the sender's domain
//! when a key is configured). A period's counts are dropped once its reports went (or
//! failed for good): no report is sent twice by one worker.
//!
//! Several workers each report their own sessions, with distinct report ids (RFC 8460 §4.1
//! allows several reports for one domain and period).

pub mod report;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::mta_sts::{Cached, Mode, ResultType};
use crate::route::Dns;
use report::{Detail, PolicyCounts, Rua};

/// Policy domains counted per period; the sessions of further domains are not counted
/// (logged once per period).
pub const MAX_DOMAINS: usize = 10_000;
/// Failure-detail rows per domain and period; further failures count in the summary only.
pub const MAX_DETAILS: usize = 100;
/// Distinct policies per domain and period (a domain changing its policy several times a day).
pub const MAX_POLICIES: usize = 8;
/// Periods kept (reports that could not go are dropped after this many).
pub const MAX_PERIODS: usize = 7;
/// Tries of an `https:` report.
pub const HTTP_ATTEMPTS: u32 = 3;
/// Most `rua` addresses of one domain a report goes to (real records list one or two; a
/// record of many would make one domain's report hold up the others').
const MAX_RUAS: usize = 4;
/// A compressed report larger than this is not sent (a bounded one is far smaller).
const MAX_REPORT_BYTES: usize = 1024 * 1024;

/// The `tls_rpt` config section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsRptConfig {
    /// Count MTA-STS results and send daily reports (needs `mta_sts.enabled`).
    pub enabled: bool,
    /// `organization-name` in reports; empty: `hostname`.
    pub organization_name: String,
    /// The envelope sender and From: of `mailto:` reports; empty: `postmaster@<hostname>`.
    pub sender: String,
    /// `contact-info` in reports; empty: the sender address.
    pub contact_info: String,
    /// The length of a report period (periods start at multiples of it since 1970-01-01
    /// UTC: a day gives UTC days). Shorter only for tests.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Reports go out after a period ends plus a random delay up to this.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// How often counts are written to the state directory (and due reports looked for).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// One `https:` POST, connect to answer.
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
}

impl Default for TlsRptConfig {
    fn default() -> Self {
        TlsRptConfig {
            enabled: false,
            organization_name: String::new(),
            sender: String::new(),
            contact_info: String::new(),
            interval: Duration::from_secs(86_400),
            max_delay: Duration::from_secs(3600),
            flush_interval: Duration::from_secs(60),
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a session was (what a failure-detail row names); all optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Place<'a> {
    pub mx_host: Option<&'a str>,
    pub receiving_ip: Option<IpAddr>,
    /// The local address (an IP pool's); unset: the one the kernel would choose.
    pub sending_ip: Option<IpAddr>,
}

/// Per period start (Unix seconds), per policy domain.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counts {
    periods: BTreeMap<u64, BTreeMap<String, Vec<PolicyCounts>>>,
}

impl Counts {
    /// Counts one result (`row.result_type` `success`, or a failure with its detail row) in
    /// `period` for `domain` under the policy `(policy_type, lines)`. `false` when it was not
    /// counted (over [`MAX_DOMAINS`] or [`MAX_POLICIES`]); a failure over [`MAX_DETAILS`] rows
    /// counts in the summary only. Beyond [`MAX_PERIODS`] the oldest period is dropped.
    fn add(
        &mut self,
        period: u64,
        domain: &str,
        policy_type: &str,
        lines: Vec<String>,
        mx: Vec<String>,
        row: Detail,
    ) -> bool {
        while self.periods.len() >= MAX_PERIODS && !self.periods.contains_key(&period) {
            let Some((&oldest, _)) = self.periods.iter().next() else {
                break;
            };
            self.periods.remove(&oldest);
            tracing::warn!(
                period = oldest,
                "tls-rpt: counts of an unsent period dropped"
            );
        }
        let domains = self.periods.entry(period).or_default();
        if !domains.contains_key(domain) && domains.len() >= MAX_DOMAINS {
            return false;
        }
        let policies = domains.entry(domain.to_string()).or_default();
        let i = match policies
            .iter()
            .position(|p| p.policy_type == policy_type && p.policy_string == lines)
        {
            Some(i) => i,
            None if policies.len() < MAX_POLICIES => {
                policies.push(PolicyCounts {
                    policy_type: policy_type.to_string(),
                    policy_string: lines,
                    mx_host: mx,
                    success: 0,
                    failure: 0,
                    details: Vec::new(),
                    details_dropped: 0,
                });
                policies.len() - 1
            }
            None => return false,
        };
        let rows: usize = policies.iter().map(|p| p.details.len()).sum();
        let p = &mut policies[i];
        if row.result_type == ResultType::Success.as_str() {
            p.success += 1;
            return true;
        }
        p.failure += 1;
        let key = |d: &Detail| {
            (
                d.result_type.clone(),
                d.sending_mta_ip.clone(),
                d.receiving_mx_hostname.clone(),
                d.receiving_ip.clone(),
            )
        };
        let wanted = key(&row);
        match p.details.iter_mut().find(|d| key(d) == wanted) {
            Some(d) => d.failed_session_count += 1,
            None if rows < MAX_DETAILS => p.details.push(row),
            None => p.details_dropped += 1,
        }
        true
    }
}

/// What a report run ended in, for the metric and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Posted (2xx) or queued as a message.
    Sent,
    /// Every try failed.
    Failed,
    /// The domain publishes no usable `_smtp._tls` record.
    NoRua,
    /// The `_smtp._tls` lookup failed for now (SERVFAIL, timeout): the counts stay and the
    /// report is tried again at the next round.
    DnsLater,
}

impl Sent {
    pub fn as_str(self) -> &'static str {
        match self {
            Sent::Sent => "sent",
            Sent::Failed => "failed",
            Sent::NoRua => "no-rua",
            Sent::DnsLater => "dns-later",
        }
    }
}

/// The counters and the reporter, shared by all delivery tasks.
pub struct TlsRpt {
    config: TlsRptConfig,
    /// `hostname`: the submitter.
    submitter: String,
    sender: String,
    organization: String,
    contact: String,
    beanstalkd: Vec<String>,
    outbound_tube: String,
    /// Whether `mailto:` reports can be DKIM-signed (a key for the sender's domain).
    signed: bool,
    /// `mta_sts.allow_private_addresses`.
    allow_private: bool,
    dns: Dns,
    http: reqwest::Client,
    file: Option<PathBuf>,
    counts: Mutex<Counts>,
    dirty: std::sync::atomic::AtomicBool,
    metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for TlsRpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRpt")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The lines of a policy as a report's `policy-string` shows them.
fn policy_lines(c: &Cached) -> Vec<String> {
    let p = &c.policy;
    let mut lines = vec![
        "version: STSv1".to_string(),
        format!("mode: {}", p.mode.as_str()),
    ];
    lines.extend(p.mx.iter().map(|m| format!("mx: {m}")));
    lines.push(format!("max_age: {}", p.max_age.as_secs()));
    lines
}

/// The local address the kernel would send from to `to` (no packet is sent).
fn local_address(to: IpAddr) -> Option<IpAddr> {
    let bind: IpAddr = if to.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    let socket = std::net::UdpSocket::bind((bind, 0)).ok()?;
    socket.connect((to, 25)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Everything a [`TlsRpt`] is built from.
pub struct Setup<'a> {
    pub config: &'a TlsRptConfig,
    pub hostname: &'a str,
    pub state_dir: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
    pub dns: Dns,
    pub beanstalkd: Vec<String>,
    pub outbound_tube: String,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `mta_sts.allow_private_addresses`: `https:` report addresses may be non-public.
    pub allow_private_addresses: bool,
    /// The domains the worker has DKIM keys for (`dkim.keys`): `mailto:` reports go only
    /// when the sender's domain is one (RFC 8460 §3: receivers ignore unsigned reports).
    pub dkim_domains: Vec<String>,
}

impl TlsRpt {
    /// The counters (read back from `<state_dir>/tls-rpt/counts.json` when there is one)
    /// and an HTTPS client like the MTA-STS fetcher's.
    pub fn new(setup: Setup<'_>) -> Result<TlsRpt, String> {
        let config = setup.config;
        let tls = crate::smtp::tls::verified_config(setup.ca_file)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(crate::mta_sts::Resolver {
                dns: setup.dns.clone(),
                allow_private: setup.allow_private_addresses,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .timeout(config.http_timeout)
            .user_agent(concat!("hedwig-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("tls_rpt: cannot build the HTTPS client: {e}"))?;
        let mut counts = Counts::default();
        let file = match setup.state_dir {
            Some(dir) => {
                let dir = dir.join("tls-rpt");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("tls_rpt: {}: {e}", dir.display()))?;
                let file = dir.join("counts.json");
                match std::fs::read(&file) {
                    Ok(bytes) => match serde_json::from_slice::<Counts>(&bytes) {
                        Ok(c) => counts = c,
                        Err(e) => tracing::warn!(
                            path = %file.display(),
                            "tls-rpt: unreadable counts file, starting afresh: {e}"
                        ),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(path = %file.display(), "tls-rpt: {e}"),
                }
                Some(file)
            }
            None => None,
        };
        let submitter = setup.hostname.to_string();
        let sender = match config.sender.trim() {
            "" => format!("postmaster@{submitter}"),
            s => s.to_string(),
        };
        let sender_domain = sender
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let signed = setup.dkim_domains.contains(&sender_domain);
        if !signed {
            tracing::warn!(
                sender,
                "tls-rpt: no DKIM key for the sender's domain (dkim.keys): reports to mailto: \
                 addresses are not sent (RFC 8460 §3: receivers ignore unsigned ones); https \
                 reports are"
            );
        }
        let organization = match config.organization_name.trim() {
            "" => submitter.clone(),
            s => s.to_string(),
        };
        let contact = match config.contact_info.trim() {
            "" => sender.clone(),
            s => s.to_string(),
        };
        Ok(TlsRpt {
            config: config.clone(),
            submitter,
            sender,
            organization,
            contact,
            beanstalkd: setup.beanstalkd,
            outbound_tube: setup.outbound_tube,
            signed,
            allow_private: setup.allow_private_addresses,
            dns: setup.dns,
            http,
            file,
            counts: Mutex::new(counts),
            dirty: false.into(),
            metrics: setup.metrics,
        })
    }

    fn period_of(&self, unix: u64) -> u64 {
        let len = self.config.interval.as_secs().max(1);
        unix - unix % len
    }

    /// Counts one session (or policy fetch) of `domain`: `policy` is the one in force
    /// (`None`: no policy could be had, reported as `no-policy-found`).
    pub fn record(
        &self,
        domain: &str,
        policy: Option<&Cached>,
        result: ResultType,
        place: Place<'_>,
    ) {
        let (policy_type, lines, mx) = match policy.filter(|c| c.policy.mode != Mode::None) {
            Some(c) => (
                "sts",
                policy_lines(c),
                c.policy.mx.iter().map(ToString::to_string).collect(),
            ),
            None => ("no-policy-found", Vec::new(), Vec::new()),
        };
        let sending_ip = match (place.sending_ip, place.receiving_ip) {
            (Some(ip), _) => Some(ip),
            (None, Some(to)) if result != ResultType::Success => local_address(to),
            _ => None,
        };
        let row = Detail {
            result_type: result.as_str().to_string(),
            sending_mta_ip: sending_ip.map(|ip| ip.to_string()),
            receiving_mx_hostname: place.mx_host.map(|h| h.trim_end_matches('.').to_string()),
            receiving_ip: place.receiving_ip.map(|ip| ip.to_string()),
            failed_session_count: 1,
        };
        let period = self.period_of(unix_now());
        let added = lock(&self.counts).add(period, domain, policy_type, lines, mx, row);
        if !added {
            tracing::debug!(domain, "tls-rpt: over the caps this period, not counted");
            return;
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes the counts when they changed since the last write (state directory only).
    pub async fn flush(&self) {
        let Some(path) = self.file.clone() else {
            return;
        };
        if !self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let json = match serde_json::to_vec(&*lock(&self.counts)) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!("tls-rpt: cannot serialize the counts: {e}");
                return;
            }
        };
        let written =
            tokio::task::spawn_blocking(move || crate::mta_sts::write_file(&path, &json)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("tls-rpt: cannot write the counts file: {e}")
            }
            Err(e) => tracing::warn!("tls-rpt: counts writer failed: {e}"),
        }
    }

    /// Until `stop`: every `flush_interval` writes the counts and sends the reports of the
    /// periods that ended at least `delay` ago; at stop, writes the counts once more.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        use rand::Rng;
        let delay = Duration::from_millis(
            rand::thread_rng().gen_range(0..=self.config.max_delay.as_millis() as u64),
        );
        let tick = self.config.flush_interval.max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.cancelled() => break,
            }
            self.flush().await;
            tokio::select! {
                _ = self.send_due(unix_now(), delay) => {}
                _ = stop.cancelled() => break,
            }
        }
        self.flush().await;
    }

    /// Sends the reports of every period that ended `delay` before `now`, one domain at a
    /// time, and forgets each domain's counts once its report went (or failed for good). A
    /// stop in the middle leaves the domains not done yet in the counts (written at stop).
    pub async fn send_due(&self, now: u64, delay: Duration) {
        let len = self.config.interval.as_secs().max(1);
        let due: Vec<(u64, String)> = {
            let counts = lock(&self.counts);
            counts
                .periods
                .iter()
                .filter(|(start, _)| *start + len + delay.as_secs() <= now)
                .flat_map(|(start, d)| d.keys().map(|k| (*start, k.clone())))
                .collect()
        };
        for (start, domain) in due {
            let policies = lock(&self.counts)
                .periods
                .get(&start)
                .and_then(|d| d.get(&domain))
                .cloned();
            let Some(policies) = policies else {
                continue;
            };
            let status = self.send(start, &domain, &policies).await;
            self.metrics.tls_rpt_report(status.as_str());
            if status == Sent::DnsLater {
                continue;
            }
            let mut counts = lock(&self.counts);
            if let Some(domains) = counts.periods.get_mut(&start) {
                domains.remove(&domain);
                if domains.is_empty() {
                    counts.periods.remove(&start);
                }
            }
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.flush().await;
    }

    /// One domain's report for the period starting at `start`, to each of its `rua`s.
    async fn send(&self, start: u64, domain: &str, policies: &[PolicyCounts]) -> Sent {
        let ruas = match self.dns.txt(&format!("_smtp._tls.{domain}")).await {
            Ok(records) => report::parse_txt(records.iter().map(String::as_str)),
            Err(e) => {
                // Temporary (NXDOMAIN and no record are an empty answer): the day's counts
                // are kept for the next round rather than dropped.
                tracing::info!(
                    domain,
                    "tls-rpt: _smtp._tls lookup failed, trying later: {e}"
                );
                return Sent::DnsLater;
            }
        };
        let Some(ruas) = ruas else {
            return Sent::NoRua;
        };
        let unique = hedwig_core::new_queue_id();
        let report_id = format!(
            "{}.{unique}.{domain}@{}",
            report::datetime(start),
            self.submitter
        );
        let meta = report::Meta {
            organization_name: &self.organization,
            contact_info: &self.contact,
            report_id: &report_id,
            start,
            length: self.config.interval,
            policy_domain: domain,
        };
        let json = report::json(&meta, policies);
        let gzip = match gzip(json.to_string().as_bytes()) {
            Ok(g) if g.len() <= MAX_REPORT_BYTES => g,
            Ok(g) => {
                tracing::warn!(
                    domain,
                    bytes = g.len(),
                    "tls-rpt: report too large, not sent"
                );
                return Sent::Failed;
            }
            Err(e) => {
                tracing::warn!(domain, "tls-rpt: gzip failed: {e}");
                return Sent::Failed;
            }
        };
        let file_name = report::file_name(&self.submitter, &meta, &unique);
        let mut status = Sent::Failed;
        for rua in ruas.iter().take(MAX_RUAS) {
            let result = match rua {
                Rua::Https(url) => self.post(url, &gzip).await,
                Rua::Mailto(to) if !self.signed => Err(format!(
                    "mailto:{to}: not sent: no DKIM key for the domain of {} (receivers ignore \
                     unsigned reports, RFC 8460 §3)",
                    self.sender
                )),
                Rua::Mailto(to) => {
                    self.queue_mail(to, domain, &report_id, &file_name, &gzip, &unique)
                        .await
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(domain, rua = ?rua, report_id, "tls-rpt: report sent");
                    status = Sent::Sent;
                }
                Err(e) => tracing::warn!(domain, rua = ?rua, report_id, "tls-rpt: {e}"),
            }
        }
        status
    }

    /// POSTs the report, [`HTTP_ATTEMPTS`] times at most (1 s, 4 s between tries).
    async fn post(&self, url: &str, gzip: &[u8]) -> Result<(), String> {
        // An IP address in the URL is not resolved (so not filtered by the resolver): the
        // same rule here. A report domain's DNS must not point the worker inside its networks.
        if !self.allow_private {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
                if !crate::mta_sts::is_public(ip) {
                    return Err(format!(
                        "{url}: not a public address (mta_sts.allow_private_addresses)"
                    ));
                }
            }
        }
        let mut last = String::new();
        for attempt in 0..HTTP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(4u64.pow(attempt - 1))).await;
            }
            let sent = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/tlsrpt+gzip")
                .body(gzip.to_vec())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("{url}: HTTP {}", r.status()),
                Err(e) => last = format!("{url}: {}", crate::mta_sts::error_chain(&e)),
            }
        }
        Err(format!("{last} (after {HTTP_ATTEMPTS} tries)"))
    }

    /// Puts the report message into the outbound tube of the first beanstalkd that takes it.
    async fn queue_mail(
        &self,
        to: &str,
        domain: &str,
        report_id: &str,
        file_name: &str,
        gzip: &[u8],
        unique: &str,
    ) -> Result<(), String> {
        let message = report::message(&report::Mail {
            from: &self.sender,
            to,
            submitter: &self.submitter,
            policy_domain: domain,
            report_id,
            file_name,
            gzip,
            now: unix_now(),
            unique,
        });
        let mut envelope = hedwig_queue::job::Envelope::new(
            hedwig_core::new_queue_id(),
            self.submitter.clone(),
            self.sender.clone(),
            vec![hedwig_core::address::Recipient::parse(to)],
        );
        envelope.received_at = unix_now();
        envelope.tls_report = true;
        envelope.dkim_domains = self
            .sender
            .rsplit_once('@')
            .map(|(_, d)| vec![d.to_ascii_lowercase()]);
        let job = hedwig_queue::job::Job { envelope, message };
        let body = job.encode();
        let mut last = String::from("no beanstalkd configured");
        for addr in &self.beanstalkd {
            let put = async {
                let mut c = beanstalk::Client::connect(addr.clone()).await?;
                c.use_tube(&self.outbound_tube).await?;
                c.put(&body, 1024, Duration::ZERO, Duration::from_secs(600))
                    .await
            };
            match tokio::time::timeout(Duration::from_secs(10), put).await {
                Ok(Ok(_)) => {
                    tracing::info!(
                        queue_id = %job.envelope.queue_id,
                        to,
                        "tls-rpt: report message queued"
                    );
                    return Ok(());
                }
                Ok(Err(e)) => last = format!("beanstalkd {addr}: {e}"),
                Err(_) => last = format!("beanstalkd {addr}: no answer within 10s"),
            }
        }
        Err(format!("mailto:{to}: not queued: {last}"))
    }

    /// `domain`'s successful and failed sessions not reported yet, over all periods (for
    /// tests and inspection).
    pub fn pending(&self, domain: &str) -> (u64, u64) {
        let counts = lock(&self.counts);
        let policies = counts
            .periods
            .values()
            .filter_map(|d| d.get(domain))
            .flatten();
        policies.fold((0, 0), |(s, f), p| (s + p.success, f + p.failure))
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(result: ResultType, mx: &str) -> Detail {
        Detail {
            result_type: result.as_str().into(),
            sending_mta_ip: Some("192.0.2.1".into()),
            receiving_mx_hostname: Some(mx.into()),
            receiving_ip: None,
            failed_session_count: 1,
        }
    }

    #[test]
    fn counts_group_and_stay_bounded() {
        let mut c = Counts::default();
        let lines = || vec!["version: STSv1".to_string(), "mode: enforce".to_string()];
        let add = |c: &mut Counts, period, domain: &str, r, mx: &str| {
            c.add(period, domain, "sts", lines(), vec![], detail(r, mx))
        };
        assert!(add(&mut c, 0, "a.test", ResultType::Success, "mx"));
        assert!(add(&mut c, 0, "a.test", ResultType::Success, "mx"));
        assert!(add(
            &mut c,
            0,
            "a.test",
            ResultType::CertificateExpired,
            "mx1"
        ));
        assert!(add(
            &mut c,
            0,
            "a.test",
            ResultType::CertificateExpired,
            "mx1"
        ));
        // MxNotInPolicy and ValidationFailure are both `validation-failure`: one row.
        assert!(add(&mut c, 0, "a.test", ResultType::MxNotInPolicy, "mx2"));
        assert!(add(
            &mut c,
            0,
            "a.test",
            ResultType::ValidationFailure,
            "mx2"
        ));
        // Another policy (the domain changed it): its own entry.
        assert!(c.add(
            0,
            "a.test",
            "no-policy-found",
            vec![],
            vec![],
            detail(ResultType::StsPolicyFetchError, "")
        ));
        let a = &c.periods[&0]["a.test"];
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].success, a[0].failure), (2, 4));
        let counts: Vec<u64> = a[0]
            .details
            .iter()
            .map(|d| d.failed_session_count)
            .collect();
        assert_eq!(counts, [2, 2]);
        assert_eq!(a[1].policy_type, "no-policy-found");

        // Detail rows are capped per domain; the failures still count in the summary.
        for i in 0..MAX_DETAILS + 5 {
            add(
                &mut c,
                0,
                "b.test",
                ResultType::CertificateExpired,
                &format!("mx{i}"),
            );
        }
        let b = &c.periods[&0]["b.test"][0];
        assert_eq!(b.details.len(), MAX_DETAILS);
        assert_eq!((b.failure, b.details_dropped), (MAX_DETAILS as u64 + 5, 5));

        // Policies per domain are capped.
        for i in 0..MAX_POLICIES + 2 {
            c.add(
                0,
                "c.test",
                "sts",
                vec![i.to_string()],
                vec![],
                detail(ResultType::Success, ""),
            );
        }
        assert_eq!(c.periods[&0]["c.test"].len(), MAX_POLICIES);
        assert!(!c.add(
            0,
            "c.test",
            "sts",
            vec!["new".into()],
            vec![],
            detail(ResultType::Success, "")
        ));

        // Domains per period are capped.
        for i in 0..MAX_DOMAINS {
            add(&mut c, 5, &format!("d{i}.test"), ResultType::Success, "mx");
        }
        assert!(!add(&mut c, 5, "one-more.test", ResultType::Success, "mx"));
        assert!(add(&mut c, 5, "d0.test", ResultType::Success, "mx"));

        // Periods are capped: the oldest goes.
        for p in 10..10 + MAX_PERIODS as u64 {
            add(&mut c, p, "a.test", ResultType::Success, "mx");
        }
        assert_eq!(c.periods.len(), MAX_PERIODS);
        assert!(!c.periods.contains_key(&0));

        // The persisted form reads back the same.
        let json = serde_json::to_vec(&c).unwrap();
        let back: Counts = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.periods, c.periods);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let g = gzip(b"{\"a\":1}").unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&g[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "{\"a\":1}");
    }
}
