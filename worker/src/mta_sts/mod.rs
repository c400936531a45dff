//! MTA-STS (RFC 8461): which policy is in force for a recipient domain.
//!
//! [`MtaSts::policy`] looks up `_mta-sts.<domain>` TXT through the worker's resolver (the
//! nameservers MX lookups use, answers cached within their TTLs), and when its `id` differs
//! from the cached policy's, fetches `https://mta-sts.<domain>/.well-known/mta-sts.txt`:
//! verified TLS (web PKI roots plus `tls.ca_file`), the host resolved through the same
//! resolver, no redirects, no proxy, at most [`MAX_POLICY_BYTES`], `mta_sts.fetch_timeout`.
//!
//! A policy is kept for its `max_age`, in memory and (with `mta_sts.state_dir`) in one file
//! per domain written atomically, read back at start, so it survives a restart. RFC 8461 §5.1: while the policy
//! host is down or serves garbage, and while the TXT record is missing or DNS fails, the
//! cached policy stays in force; a domain without a cached policy is then treated as having
//! none. One fetch per domain at a time; after a failed fetch the same `id` is not fetched
//! again for `mta_sts.retry_fetch_after`.
//!
//! Layout: [`policy`] parses the TXT record and the policy file (pure); this module caches and
//! fetches. Applying a policy to MX hosts and TLS is [`crate::deliver`]'s.
//!
//! [`MtaSts::record`] is where each check's [`ResultType`] arrives: counted in the metric
//! `hedwig_worker_mta_sts_results_total{result}` and, with `tls_rpt.enabled`, handed to
//! [`crate::tls_rpt`] for the daily TLS-RPT (RFC 8460) reports.

pub mod policy;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use policy::{Mode, Policy, ResultType};

use crate::error::Error;
use crate::route::Dns;

/// RFC 8461 §3.3: senders may limit the size of a policy; 64 KiB is plenty for any real one.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Domains remembered in memory (and in-flight / failure records); beyond this, expired
/// entries are dropped first (bounded memory).
const MAX_DOMAINS: usize = 100_000;

/// How long verified TLS that failed at an MX host (name and address) under a `testing`
/// policy is remembered (at most the policy's remaining life): meanwhile sessions there go
/// straight to the domain's own `tls` mode, and reuse its idle connections, instead of
/// failing a verified handshake first for every message.
pub const TESTING_FAILURE_MEMORY: Duration = Duration::from_secs(300);

/// MX addresses remembered as failing verified TLS; beyond this, expired entries are
/// dropped, and when none is, the new one is not remembered (bounded memory).
const MAX_TESTING_FAILURES: usize = 10_000;

/// The `mta_sts` config section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsConfig {
    /// Honour MTA-STS policies of recipient domains (mail routed by their MX only).
    pub enabled: bool,
    /// A directory for the policy cache (one JSON file per domain), so that policies survive
    /// a restart. Unset: memory only.
    pub state_dir: Option<PathBuf>,
    /// The whole HTTPS fetch of a policy, connect to last byte.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// After a failed fetch, the same policy id is not fetched again for this long (the
    /// cached policy, if any, stays in force meanwhile).
    #[serde(with = "humantime_serde")]
    pub retry_fetch_after: Duration,
    /// Let policy hosts (and TLS-RPT `https:` report addresses) resolve to non-public
    /// addresses: loopback, private (RFC 1918, ULA), link-local, shared (100.64/10) and the
    /// like. Off: a recipient domain's DNS cannot make the worker open HTTPS connections into
    /// the networks it runs in (SSRF). On for an internal mail system, and in tests.
    pub allow_private_addresses: bool,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        MtaStsConfig {
            enabled: true,
            state_dir: None,
            fetch_timeout: Duration::from_secs(10),
            retry_fetch_after: Duration::from_secs(300),
            allow_private_addresses: false,
        }
    }
}

/// A policy in force for a domain.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The `id` of the TXT record it was fetched for.
    pub id: String,
    pub policy: Policy,
    pub fetched: SystemTime,
    /// `fetched` + `max_age`: after this it is no longer used.
    pub expires: SystemTime,
}

/// The file form of a cached policy: the policy text as served (parsed again on load).
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    /// Unix seconds.
    fetched_at: u64,
    policy: String,
}

/// The policy cache and its fetcher, shared by all delivery tasks.
pub struct MtaSts {
    config: MtaStsConfig,
    dns: Dns,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Arc<Cached>>>,
    /// One lock per domain whose policy is being fetched.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per domain: the id whose fetch failed, and until when it is not tried again.
    failed: Mutex<HashMap<String, (String, Instant)>>,
    /// Per MX host and address: the result of verified TLS that failed there under a
    /// `testing` policy, and until when it is taken as known ([`TESTING_FAILURE_MEMORY`]).
    testing_failures: Mutex<HashMap<(String, SocketAddr), (ResultType, Instant)>>,
    /// TLS-RPT counters (`tls_rpt.enabled`).
    reports: Option<Arc<crate::tls_rpt::TlsRpt>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtaSts")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resolves the policy host through the worker's resolver (not the system's), so the policy
/// comes from where the TXT and MX records say, and tests can point it at a local server.
/// Unless `allow_private`, only public addresses ([`is_public`]) are returned: a name with
/// none fails to resolve.
pub(crate) struct Resolver {
    pub(crate) dns: Dns,
    pub(crate) allow_private: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.dns.clone();
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let mut addrs = dns.addresses(&host).await.map_err(|e| e.to_string())?;
            if !allow_private {
                addrs.retain(|ip| is_public(*ip));
                if addrs.is_empty() {
                    return Err(format!(
                        "{host} resolves to no public address (mta_sts.allow_private_addresses)"
                    )
                    .into());
                }
            }
            // The connector puts the URL's port in.
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| std::net::SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Whether `ip` is on the public internet: not unspecified, loopback, private (RFC 1918,
/// RFC 4193 ULA), link-local, shared (RFC 6598 100.64/10), benchmarking (198.18/15),
/// documentation, multicast, broadcast or reserved (240/4), nor an IPv4-mapped or NAT64 form
/// of one of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    o[12], o[13], o[14], o[15],
                )));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

impl MtaSts {
    /// The cache and an HTTPS client trusting the web PKI and `ca_file`.
    pub fn new(config: &MtaStsConfig, dns: Dns, ca_file: Option<&Path>) -> Result<MtaSts, String> {
        let tls = crate::smtp::tls::verified_config(ca_file)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(Resolver {
                dns: dns.clone(),
                allow_private: config.allow_private_addresses,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .timeout(config.fetch_timeout)
            .user_agent(concat!("hedwig-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("mta_sts: cannot build the HTTPS client: {e}"))?;
        let mut cache = HashMap::new();
        if let Some(dir) = &config.state_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("mta_sts.state_dir {}: {e}", dir.display()))?;
            cache = load_all(dir);
            tracing::info!(
                dir = %dir.display(),
                policies = cache.len(),
                "mta-sts: cached policies loaded"
            );
        }
        Ok(MtaSts {
            config: config.clone(),
            dns,
            http,
            cache: Mutex::new(cache),
            fetching: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            testing_failures: Mutex::new(HashMap::new()),
            reports: None,
            metrics: None,
        })
    }

    /// Results also go to `reports` (TLS-RPT) and the `mta_sts_results` metric.
    pub fn with_reports(
        mut self,
        reports: Option<Arc<crate::tls_rpt::TlsRpt>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> MtaSts {
        self.reports = reports;
        self.metrics = Some(metrics);
        self
    }

    /// The policy in force for `domain` (lowercase A-labels), if any (mode `none`
    /// included: it says the domain withdrew its policy).
    pub async fn policy(&self, domain: &str) -> Option<Arc<Cached>> {
        let cached = self.cached(domain);
        let id = match self.dns.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => policy::parse_txt(records.iter().map(String::as_str)),
            Err(e) => {
                // §5.1: a DNS failure keeps the cached policy (if any) in force.
                tracing::debug!(domain, "mta-sts: TXT lookup failed: {e}");
                None
            }
        };
        let Some(id) = id else {
            return cached;
        };
        if cached.as_ref().is_some_and(|c| c.id == id) {
            return cached;
        }
        self.refresh(domain, &id).await.or(cached)
    }

    /// Where the outcome of each check against a policy arrives (`policy`: the one in force,
    /// if any; `place`: where the session was): logged, counted in the metric, and handed to
    /// TLS-RPT when it is enabled.
    pub fn record(
        &self,
        domain: &str,
        policy: Option<&Cached>,
        result: ResultType,
        place: crate::tls_rpt::Place<'_>,
    ) {
        tracing::debug!(domain, result = result.as_str(), "mta-sts result");
        if let Some(m) = &self.metrics {
            m.mta_sts_result(result.as_str());
        }
        if let Some(r) = &self.reports {
            r.record(domain, policy, result, place);
        }
    }

    /// Verified TLS failed at `host` (`addr`) under `policy` (mode `testing`) with `result`:
    /// remembered for [`TESTING_FAILURE_MEMORY`], at most the policy's remaining life.
    pub fn note_testing_failure(
        &self,
        host: &str,
        addr: SocketAddr,
        result: ResultType,
        policy: &Cached,
    ) {
        let left = policy
            .expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let now = Instant::now();
        let mut failures = lock(&self.testing_failures);
        if failures.len() >= MAX_TESTING_FAILURES {
            failures.retain(|_, (_, until)| *until > now);
            if failures.len() >= MAX_TESTING_FAILURES {
                return;
            }
        }
        failures.insert(
            (host.to_string(), addr),
            (result, now + left.min(TESTING_FAILURE_MEMORY)),
        );
    }

    /// The result of verified TLS that failed at `host` (`addr`) under a `testing` policy a
    /// short while ago ([`MtaSts::note_testing_failure`]), if it is still taken as known.
    pub fn testing_failure(&self, host: &str, addr: SocketAddr) -> Option<ResultType> {
        let mut failures = lock(&self.testing_failures);
        let key = (host.to_string(), addr);
        match failures.get(&key) {
            Some((result, until)) if Instant::now() < *until => Some(*result),
            Some(_) => {
                failures.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Fetches the policy for TXT `id` unless the same id failed a short while ago; the new
    /// policy, or `None` (then the caller keeps the cached one). One fetch per domain at a
    /// time: a task that finds one running waits for it only when no policy is cached.
    async fn refresh(&self, domain: &str, id: &str) -> Option<Arc<Cached>> {
        let gate = {
            let mut fetching = lock(&self.fetching);
            if fetching.len() >= MAX_DOMAINS {
                fetching.retain(|_, g| Arc::strong_count(g) > 1);
            }
            fetching.entry(domain.to_string()).or_default().clone()
        };
        let _turn = match gate.try_lock() {
            Ok(turn) => turn,
            // Another task is fetching: with a policy in force, deliver under it rather than
            // wait; without one, wait for the fetch (so a first policy is not missed).
            Err(_) if self.cached(domain).is_some() => return None,
            Err(_) => gate.lock().await,
        };
        // Another task may have fetched it while this one waited.
        if let Some(c) = self.cached(domain).filter(|c| c.id == id) {
            return Some(c);
        }
        if let Some((failed_id, until)) = lock(&self.failed).get(domain) {
            if failed_id == id && Instant::now() < *until {
                return None;
            }
        }
        match self.fetch(domain).await {
            Ok((policy, text)) => {
                lock(&self.failed).remove(domain);
                let fetched = SystemTime::now();
                let cached = Arc::new(Cached {
                    id: id.to_string(),
                    expires: fetched + policy.max_age,
                    policy,
                    fetched,
                });
                tracing::info!(
                    domain,
                    id,
                    mode = cached.policy.mode.as_str(),
                    mx = %cached.policy.mx_list(),
                    max_age = cached.policy.max_age.as_secs(),
                    "mta-sts: policy fetched"
                );
                self.remember(domain, cached.clone());
                self.persist(domain, &cached, &text).await;
                Some(cached)
            }
            Err((result, detail)) => {
                let cached = self.cached(domain);
                self.record(
                    domain,
                    cached.as_deref(),
                    result,
                    crate::tls_rpt::Place::default(),
                );
                tracing::warn!(
                    domain,
                    id,
                    result = result.as_str(),
                    "mta-sts: {detail}; the cached policy (if any) stays in force, next try \
                     in {:?}",
                    self.config.retry_fetch_after
                );
                let mut failed = lock(&self.failed);
                if failed.len() >= MAX_DOMAINS {
                    let now = Instant::now();
                    failed.retain(|_, (_, until)| *until > now);
                }
                failed.insert(
                    domain.to_string(),
                    (
                        id.to_string(),
                        Instant::now() + self.config.retry_fetch_after,
                    ),
                );
                None
            }
        }
    }

    /// GET the policy file; its parsed policy and text, or why not.
    async fn fetch(&self, domain: &str) -> Result<(Policy, String), (ResultType, String)> {
        let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
        let fetch_error = |detail: String| (ResultType::StsPolicyFetchError, detail);
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| (classify_fetch(&e), format!("{url}: {}", error_chain(&e))))?;
        // §3.3: only a 200 counts; a redirect is not followed.
        if response.status() != reqwest::StatusCode::OK {
            return Err(fetch_error(format!("{url}: HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fetch_error(format!("{url}: {}", error_chain(&e))))?
        {
            if body.len() + chunk.len() > MAX_POLICY_BYTES {
                return Err(fetch_error(format!(
                    "{url}: larger than {MAX_POLICY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let policy = policy::parse_policy(&body)
            .map_err(|e| (ResultType::StsPolicyInvalid, format!("{url}: {e}")))?;
        Ok((policy, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The unexpired policy of `domain` (the state directory was read at start, so this
    /// never touches the disk).
    fn cached(&self, domain: &str) -> Option<Arc<Cached>> {
        lock(&self.cache)
            .get(domain)
            .filter(|c| c.expires > SystemTime::now())
            .cloned()
    }

    fn remember(&self, domain: &str, cached: Arc<Cached>) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_DOMAINS && !cache.contains_key(domain) {
            let now = SystemTime::now();
            cache.retain(|_, c| c.expires > now);
            // Still full (policies live up to a year): the one that expires first goes, so
            // the cache never holds more than MAX_DOMAINS.
            if cache.len() >= MAX_DOMAINS {
                if let Some(first) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.expires)
                    .map(|(d, _)| d.clone())
                {
                    cache.remove(&first);
                }
            }
        }
        cache.insert(domain.to_string(), cached);
    }

    fn file(&self, domain: &str) -> Option<PathBuf> {
        let dir = self.config.state_dir.as_ref()?;
        safe_name(domain).then(|| dir.join(format!("{domain}.json")))
    }

    /// Writes the policy file: a temporary file, fsync, rename (never a torn file).
    async fn persist(&self, domain: &str, cached: &Cached, text: &str) {
        let Some(path) = self.file(domain) else {
            return;
        };
        let stored = Stored {
            id: cached.id.clone(),
            fetched_at: cached
                .fetched
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            policy: text.to_string(),
        };
        let written = tokio::task::spawn_blocking(move || write_atomic(&path, &stored)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(domain, "mta-sts: cannot write the cache file: {e}"),
            Err(e) => tracing::warn!(domain, "mta-sts: cache writer failed: {e}"),
        }
    }
}

/// Recipient domains are checked addresses' A-labels; still, never a path separator.
fn safe_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

/// The unexpired policies in `dir` (`<domain>.json`), at most [`MAX_DOMAINS`]; expired
/// files are removed, unreadable ones logged and left alone.
fn load_all(dir: &Path) -> HashMap<String, Arc<Cached>> {
    let mut cache = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return cache;
    };
    let now = SystemTime::now();
    for entry in entries.flatten().take(MAX_DOMAINS) {
        let path = entry.path();
        let Some(domain) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|d| safe_name(d))
        else {
            continue;
        };
        match load(&path) {
            Ok(c) if c.expires > now => {
                cache.insert(domain.to_string(), Arc::new(c));
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "mta-sts: unreadable cache file: {e}")
            }
        }
    }
    cache
}

fn load(path: &Path) -> Result<Cached, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let policy = policy::parse_policy(stored.policy.as_bytes()).map_err(|e| e.to_string())?;
    let fetched = UNIX_EPOCH + Duration::from_secs(stored.fetched_at);
    Ok(Cached {
        id: stored.id,
        expires: fetched + policy.max_age,
        policy,
        fetched,
    })
}

fn write_atomic(path: &Path, stored: &Stored) -> std::io::Result<()> {
    let json = serde_json::to_vec(stored).map_err(std::io::Error::other)?;
    write_file(path, &json)
}

/// Writes `bytes` to `path` through a temporary file of this process's own
/// (`<path>.<pid>.<n>.tmp`, so two workers sharing a `state_dir` never write into one): write,
/// fsync, rename (never a torn file; the last rename wins).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}.{n}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // The rename itself durable (best effort: not every filesystem allows it).
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// An error and its sources on one line (reqwest's own text hides the TLS cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
        depth += 1;
        if depth > 8 {
            break;
        }
    }
    text
}

/// The RFC 8460 result type of a failed policy fetch: `sts-webpki-invalid` when the policy
/// host's certificate failed verification (a rustls `InvalidCertificate` somewhere in the
/// chain; an `io::Error`'s `source()` skips its inner error, so that is looked into: reqwest
/// hands on an `io::Error` inside an `io::Error`),
/// else `sts-policy-fetch-error`.
fn classify_fetch(e: &(dyn std::error::Error + 'static)) -> ResultType {
    let mut next = Some(e);
    for _ in 0..12 {
        let Some(e) = next else {
            break;
        };
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return ResultType::StsWebpkiInvalid;
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    ResultType::StsPolicyFetchError
}

/// The RFC 8460 result type of a failed TLS step at an MX host under a policy.
pub fn classify(e: &Error) -> ResultType {
    let text = match e {
        Error::Tls(text) => text,
        // STARTTLS refused with a reply (454, 5xx): no TLS to be had at this host.
        Error::Rejected {
            phase: crate::error::Phase::StartTls,
            ..
        } => return ResultType::StarttlsNotSupported,
        _ => return ResultType::ValidationFailure,
    };
    if text.contains(crate::deliver::NO_STARTTLS) {
        return ResultType::StarttlsNotSupported;
    }
    // rustls' CertificateError, as the handshake error prints it.
    let lower = text.to_ascii_lowercase();
    if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        ResultType::CertificateHostMismatch
    } else if lower.contains("expired") {
        ResultType::CertificateExpired
    } else if lower.contains("unknownissuer") || lower.contains("badsignature") {
        ResultType::CertificateNotTrusted
    } else {
        ResultType::ValidationFailure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        let public = |s: &str| is_public(s.parse().unwrap());
        for ip in [
            "8.8.8.8",
            "192.0.3.1",
            "100.63.0.1",
            "2a00:1450::1",
            "64:ff9b::808:808",
        ] {
            assert!(public(ip), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.17.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!public(ip), "{ip}");
        }
    }

    #[test]
    fn tls_failures_are_classified() {
        // A STARTTLS refused with a 5xx is the policy's failure (deferred), not a bounce.
        let refused = Error::Rejected {
            phase: crate::error::Phase::StartTls,
            reply: crate::smtp::reply::Reply::from_text("554 5.7.3 TLS not available"),
        };
        assert_eq!(classify(&refused), ResultType::StarttlsNotSupported);
        let tls = |s: &str| Error::Tls(s.into());
        assert_eq!(
            classify(&tls("mx.example does not offer STARTTLS")),
            ResultType::StarttlsNotSupported
        );
        assert_eq!(
            classify(&tls(
                "handshake failed: invalid peer certificate: certificate not valid for name \
                 \"mx.example\"; certificate is only valid for 127.0.0.1"
            )),
            ResultType::CertificateHostMismatch
        );
        assert_eq!(
            classify(&tls(
                "handshake failed: invalid peer certificate: UnknownIssuer"
            )),
            ResultType::CertificateNotTrusted
        );
        assert_eq!(
            classify(&tls(
                "handshake failed: invalid peer certificate: certificate expired: ..."
            )),
            ResultType::CertificateExpired
        );
        assert_eq!(
            classify(&tls("handshake failed: received fatal alert")),
            ResultType::ValidationFailure
        );
    }

    #[test]
    fn fetch_failures_are_classified() {
        // As reqwest hands them on: the rustls error inside an io::Error inside its own.
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let bad_cert = Outer(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        )));
        assert_eq!(classify_fetch(&bad_cert), ResultType::StsWebpkiInvalid);
        assert_eq!(
            classify_fetch(&rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            ResultType::StsWebpkiInvalid
        );
        let refused = Outer(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(classify_fetch(&refused), ResultType::StsPolicyFetchError);
        let alert = Outer(std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        )));
        assert_eq!(classify_fetch(&alert), ResultType::StsPolicyFetchError);
        assert_eq!(ResultType::StsWebpkiInvalid.as_str(), "sts-webpki-invalid");
    }

    #[tokio::test]
    async fn testing_failures_are_remembered_within_the_policy_life() {
        let ns = ["127.0.0.1:53".parse().unwrap()];
        let dns = Dns::new(&ns, Duration::from_secs(1), false).unwrap();
        let sts = MtaSts::new(&MtaStsConfig::default(), dns, None).unwrap();
        let text = "version: STSv1\nmode: testing\nmx: mx.a.test\nmax_age: 86400\n";
        let cached = |expires| Cached {
            id: "1".into(),
            policy: policy::parse_policy(text.as_bytes()).unwrap(),
            fetched: SystemTime::now(),
            expires,
        };
        let live = cached(SystemTime::now() + Duration::from_secs(3600));
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.1:25".parse().unwrap(),
            "192.0.2.2:25".parse().unwrap(),
        );
        let mismatch = ResultType::CertificateHostMismatch;
        sts.note_testing_failure("mx.a.test", a, mismatch, &live);
        assert_eq!(sts.testing_failure("mx.a.test", a), Some(mismatch));
        assert_eq!(sts.testing_failure("mx.a.test", b), None, "per address");
        assert_eq!(sts.testing_failure("mx.b.test", a), None, "per host name");
        // A policy at the end of its life: not remembered beyond it.
        let ending = cached(SystemTime::now());
        sts.note_testing_failure("mx.a.test", b, mismatch, &ending);
        assert_eq!(sts.testing_failure("mx.a.test", b), None);
    }

    #[test]
    fn cache_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let stored = Stored {
            id: "abc".into(),
            fetched_at: 1_700_000_000,
            policy: "version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 60\n".into(),
        };
        let path = dir.path().join("a.test.json");
        write_atomic(&path, &stored).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["a.test.json"], "no temporary file left");
        let back = load(&path).unwrap();
        assert_eq!(back.id, "abc");
        assert_eq!(back.policy.max_age, Duration::from_secs(60));
        // Fetched long ago with a max_age of 60 s: expired, so not loaded and removed.
        std::fs::write(dir.path().join("junk.test.json"), b"{").unwrap();
        let fresh = Stored {
            fetched_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            ..stored
        };
        write_atomic(&dir.path().join("b.test.json"), &fresh).unwrap();
        let all = load_all(dir.path());
        assert_eq!(all.keys().collect::<Vec<_>>(), ["b.test"]);
        assert!(!path.exists(), "the expired file is removed");
        assert!(
            dir.path().join("junk.test.json").exists(),
            "unreadable: left alone"
        );
    }
}
