//! Delivering one message to the recipients of one domain: route, connect, talk SMTP.
//!
//! The route comes from the config (capture, per-domain transport, relayhost) or from the
//! domain's MX records ([`crate::route`]). Hosts are tried best first; every address of a
//! host is tried before the next host (IPv6 before IPv4). A failed connect moves to the next
//! address; a refusing greeting (4xx/5xx), a connection that breaks before MAIL, or a TLS
//! requirement that cannot be met moves to the next host. Once a transaction has started its
//! result stands for this attempt. When no host takes the mail, the recipients get the most
//! telling error: a temporary one if any occurred (so a DNS or network hiccup on one MX never
//! turns into a bounce), else the last permanent one.
//!
//! MTA-STS ([`crate::mta_sts`]) applies when the mail goes to the recipient domain's own MX
//! hosts: under an `enforce` policy, hosts the policy does not list are skipped and the others
//! are used only over STARTTLS with a certificate valid for the MX name (as `tls: required`,
//! whatever `tls` says for the domain); a failure defers with [`Error::MtaSts`] naming the
//! rule. Under `testing`, the same checks run, a failure is logged, and the mail goes as
//! without a policy (the domain's own `tls` mode); the failure is remembered per MX address
//! for a while ([`crate::mta_sts::TESTING_FAILURE_MEMORY`]), and meanwhile sessions there go
//! straight to that mode and reuse its idle connections.
//!
//! Recipients arrive parsed (they were when the job was decoded) and go out in their wire form
//! (A-label domains unless SMTPUTF8 is needed); outcomes come back keyed by the recipient.
//!
//! Not here: retries and bounces ([`crate::plan`]), DKIM (the caller signs once per message).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hedwig_core::address::Recipient;
use tokio::net::TcpStream;

use crate::config::Config;
use crate::destination::{Busy, Destination, Destinations, PoolKey};
use crate::error::{Error, Phase};
use crate::login::{Login, LoginTls};
use crate::metrics::{Counter, Metrics};
use crate::mta_sts::{Cached, Mode, MtaSts, ResultType};
use crate::plan::Outcome;
use crate::policy::TlsMode;
use crate::pools::{Pool, Pools};
pub use crate::route::Route;
use crate::route::{Dns, MxHost, Nexthop, Routes};
use crate::smtp::session::{RcptResults, Session, Transaction};
use crate::smtp::tls::{server_name, TlsClients};
use crate::tls_rpt::Place;

/// Everything a delivery needs, shared by all tasks.
#[derive(Debug)]
pub struct Deliverer {
    pub config: Arc<Config>,
    /// Parsed once at start from the config.
    pub routes: Routes,
    pub dests: Destinations,
    pub dns: Dns,
    pub tls: TlsClients,
    /// `None` when `mta_sts.enabled` is off.
    pub mta_sts: Option<Arc<MtaSts>>,
    pub metrics: Arc<Metrics>,
    /// The IP pools (source address and EHLO name per sending host), checked.
    pub pools: Pools,
}

/// The text of [`Error::Tls`] when a host must do TLS and offers no STARTTLS
/// ([`crate::mta_sts::classify`] recognises it).
pub const NO_STARTTLS: &str = "does not offer STARTTLS";

/// Why a connection could not be opened, and where to go next.
enum Try {
    /// Try the next address of this host.
    NextAddr(Error),
    /// Try the next host.
    NextHost(Error),
    /// TLS handshake failed in opportunistic mode: try this address again in plaintext.
    Plaintext(Error),
}

impl Deliverer {
    /// The route for recipients at `domain` (A-labels, lowercase).
    pub fn route(&self, domain: &str) -> Route {
        self.routes.route(domain)
    }

    /// Delivers `message` (from sending host `host`) to `rcpts` (all at `domain`, parsed),
    /// one outcome per recipient. `mail_from` is the sender as the capture transport writes
    /// it, `wire_from` as MAIL FROM carries it (see `Mailbox::wire`). The IP pool is the one
    /// of `host` and `mail_from` ([`Pools::choose`]).
    pub async fn deliver_domain(
        &self,
        host: &str,
        domain: &str,
        mail_from: &str,
        wire_from: &str,
        rcpts: &[Recipient],
        message: &[u8],
    ) -> Vec<(Recipient, Outcome)> {
        let pool = self.pools.choose(host, mail_from).cloned();
        self.deliver_domain_via(
            pool.as_deref(),
            false,
            host,
            domain,
            mail_from,
            wire_from,
            rcpts,
            message,
        )
        .await
    }

    /// [`Deliverer::deliver_domain`] through `pool` (`None`: no pool: the system picks the
    /// source address, EHLO is `hostname`). `tls_report`: a TLS-RPT report (the job's
    /// `tls_report`), delivered despite TLS failures (RFC 8460 §3): no MTA-STS policy, no
    /// result counted, and STARTTLS opportunistic even where the domain's `tls` says
    /// `required`.
    #[allow(clippy::too_many_arguments)]
    pub async fn deliver_domain_via(
        &self,
        pool: Option<&Pool>,
        tls_report: bool,
        host: &str,
        domain: &str,
        mail_from: &str,
        wire_from: &str,
        rcpts: &[Recipient],
        message: &[u8],
    ) -> Vec<(Recipient, Outcome)> {
        let started = Instant::now();
        // Before any route, relayhost included: a literal outside the allow-list is never
        // connected to (issue 11 F10), and retrying cannot change that.
        if let Err(why) = self.config.address_literals.check(domain) {
            return all(rcpts, &Error::LiteralRefused(why), None);
        }
        let mut outcomes = match self.route(domain) {
            Route::Capture => self.capture(mail_from, rcpts, message),
            Route::Smtp(hop) => {
                self.smtp(domain, hop, wire_from, rcpts, message, pool, tls_report)
                    .await
            }
        };
        self.metrics.latency(started.elapsed());
        for (_, o) in &mut outcomes {
            self.metrics.delivery(o.status, domain, host);
            if let Some(pool) = pool {
                o.pool = Some(pool.name.clone());
                self.metrics.pool_delivery(o.status, &pool.name, o.source);
            }
        }
        outcomes
    }

    fn capture(
        &self,
        mail_from: &str,
        rcpts: &[Recipient],
        message: &[u8],
    ) -> Vec<(Recipient, Outcome)> {
        let Some(dir) = &self.config.capture_maildir else {
            let e = Error::Local("capture transport without capture_maildir".into());
            return all(rcpts, &e, None);
        };
        let relay = Some(format!("maildir:{}", dir.display()));
        match crate::capture::store(dir, mail_from, rcpts, message) {
            Ok(path) => {
                let reply = crate::smtp::reply::Reply::from_text(&format!(
                    "250 2.0.0 captured as {}",
                    path.file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default()
                ));
                rcpts
                    .iter()
                    .map(|r| (r.clone(), Outcome::delivered(&reply, relay.clone())))
                    .collect()
            }
            Err(e) => all(rcpts, &Error::Local(format!("capture: {e}")), relay),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn smtp(
        &self,
        domain: &str,
        hop: Nexthop,
        mail_from: &str,
        rcpts: &[Recipient],
        message: &[u8],
        pool: Option<&Pool>,
        tls_report: bool,
    ) -> Vec<(Recipient, Outcome)> {
        let limit = self.config.max_message_size.as_usize();
        if limit > 0 && message.len() > limit {
            let e = Error::TooBig {
                size: message.len(),
                limit,
                by: "this relay (max_message_size)".into(),
            };
            return all(rcpts, &e, None);
        }
        // The MTA-STS policy (a TXT lookup, a fetch when its id changed) is looked up while
        // the MX is: a delivery waits for the slower of the two, not for both in turn.
        let hosts = async {
            match hop {
                Nexthop::Direct { host, port } => Ok((
                    vec![MxHost {
                        name: host,
                        preference: 0,
                    }],
                    port,
                )),
                Nexthop::Mx { host, port } => self.dns.mx(&host).await.map(|h| (h, port)),
            }
        };
        let sts = async {
            if tls_report {
                None
            } else {
                self.sts_policy(domain).await
            }
        };
        let (hosts, sts) = tokio::join!(hosts, sts);
        let (hosts, port) = match hosts {
            Ok(found) => found,
            Err(e) => {
                self.metrics.incr(Counter::DnsFailure);
                return all(rcpts, &e, None);
            }
        };
        let login = self.routes.login(domain);
        // A login is only ever sent inside TLS (see `open`); the mode is for the pool key.
        let mode = match login {
            Some(_) => TlsMode::Required,
            None if tls_report => match self.config.tls.mode(domain) {
                TlsMode::None => TlsMode::None,
                _ => TlsMode::Opportunistic,
            },
            None => self.config.tls.mode(domain),
        };
        let tx = Transaction {
            mail_from,
            rcpt_to: rcpts,
            message,
        };
        let limits = self.dests.limits();
        let mut temporary: Option<(Error, Option<String>)> = None;
        let mut permanent: Option<(Error, Option<String>)> = None;
        let mut note = |e: Error, relay: Option<String>| {
            if e.is_permanent() {
                permanent = Some((e, relay));
            } else {
                temporary = Some((e, relay));
            }
        };
        'hosts: for host in &hosts {
            // Under a policy that lists this host: verified TLS (`testing`: tried first).
            let sts_host = match &sts {
                Some(c) if c.policy.allows(&host.name) => Some(c),
                Some(c) => {
                    let e = Error::MtaSts {
                        domain: domain.to_string(),
                        result: ResultType::MxNotInPolicy,
                        detail: format!("{} is not among {}", host.name, c.policy.mx_list()),
                    };
                    self.sts_result(
                        domain,
                        c,
                        ResultType::MxNotInPolicy,
                        Place {
                            mx_host: Some(&host.name),
                            ..Place::default()
                        },
                    );
                    if c.policy.mode == Mode::Enforce {
                        note(e, None);
                        continue;
                    }
                    tracing::warn!(domain, mx = %host.name, "{e}; mode testing: delivering anyway");
                    None
                }
                None => None,
            };
            let mode = if sts_host.is_some() {
                TlsMode::Required
            } else {
                mode
            };
            let dest = self.dests.get(domain, &host.name);
            let throttled = |why, retry_after| Error::Throttled {
                destination: dest.name.clone(),
                why,
                retry_after,
            };
            if let Some(left) = dest.cooling() {
                note(
                    throttled("cooling down after it asked us to slow down", left),
                    None,
                );
                continue;
            }
            if let Err(Busy(wait)) = dest.take_token() {
                if wait > MAX_RATE_WAIT {
                    note(throttled("messages per minute reached", wait), None);
                    continue;
                }
                tokio::time::sleep(wait).await;
            }
            let _slot = match dest.slot(limits.wait).await {
                Ok(slot) => slot,
                Err(Busy(wait)) => {
                    note(throttled("all connection slots busy", wait), None);
                    continue;
                }
            };
            let addrs = match self.dns.addresses(&host.name).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    self.metrics.incr(Counter::DnsFailure);
                    note(e, None);
                    continue;
                }
            };
            let fallback = self.config.tls.mode(domain);
            for ip in addrs {
                let relay = format!("{}[{}]:{}", host.name, ip, port);
                // Verified TLS failed here a short while ago under a `testing` policy: the
                // session goes straight to the domain's own mode, and reuses its idle
                // connections (which are pooled under that mode).
                let known_failure = match (sts_host, &self.mta_sts) {
                    (Some(c), Some(sts))
                        if c.policy.mode == Mode::Testing && fallback != TlsMode::Required =>
                    {
                        sts.testing_failure(&host.name, SocketAddr::new(ip, port))
                    }
                    _ => None,
                };
                let mode = if known_failure.is_some() {
                    fallback
                } else {
                    mode
                };
                if let Some(pool) = pool.filter(|p| !p.reaches(ip)) {
                    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                    note(
                        Error::Local(format!(
                            "IP pool {} has no {family} address to reach {relay} from",
                            pool.name
                        )),
                        None,
                    );
                    continue;
                }
                let key = PoolKey {
                    host: host.name.clone(),
                    addr: SocketAddr::new(ip, port),
                    tls: mode,
                    login: login.as_ref().map(|l| l.transport.clone()),
                    pool: pool.map(|p| p.name.clone()),
                };
                // An open connection to the same place first; a stale one is dropped.
                while let Some(idle) = self.dests.take_idle(&key) {
                    let (tls, source) = (idle.session.tls, idle.source);
                    match self.transact(idle.session, &tx, true).await {
                        Sent::Done(results, session) => {
                            if let Some(session) = session {
                                self.dests.put_idle(
                                    key,
                                    session,
                                    source,
                                    idle.sent + 1,
                                    &dest.limit,
                                );
                            }
                            return self.finish(results, &relay, tls, source, &dest);
                        }
                        Sent::Stale(e) => {
                            tracing::debug!(%relay, "reused connection unusable: {e}")
                        }
                    }
                }
                let mut tls = mode;
                // A `testing` policy's failure falls back to the domain's mode: the session
                // is then pooled as that mode's, never as a verified one.
                let mut pool_key = key.clone();
                loop {
                    let from = pool.and_then(|p| p.source(ip).map(|source| (source, p)));
                    let source = from.map(|(source, _)| source);
                    let opened = self
                        .open(&host.name, ip, port, tls, login.as_deref(), from)
                        .await;
                    match opened {
                        Ok(session) => {
                            let used_tls = session.tls;
                            let place = Place {
                                mx_host: Some(&host.name),
                                receiving_ip: Some(ip),
                                sending_ip: source,
                            };
                            match (sts_host, tls, known_failure) {
                                (Some(c), TlsMode::Required, _) => {
                                    self.sts_result(domain, c, ResultType::Success, place)
                                }
                                // One result per session: this one did not meet the policy
                                // for the reason found when verified TLS was last tried.
                                (Some(c), _, Some(result)) => {
                                    self.sts_result(domain, c, result, place)
                                }
                                _ => {}
                            }
                            match self.transact(session, &tx, false).await {
                                Sent::Done(results, session) => {
                                    if let Some(session) = session {
                                        self.dests.put_idle(
                                            pool_key,
                                            session,
                                            source,
                                            1,
                                            &dest.limit,
                                        );
                                    }
                                    return self.finish(results, &relay, used_tls, source, &dest);
                                }
                                Sent::Stale(e) => {
                                    note(e, Some(relay.clone()));
                                    break;
                                }
                            }
                        }
                        Err(Try::NextAddr(e)) => {
                            note(e, Some(relay.clone()));
                            break;
                        }
                        Err(Try::NextHost(e)) => {
                            // TLS that failed, or a STARTTLS the host refused with a reply
                            // (which a 5xx would otherwise make a bounce): under a policy
                            // these are the policy's failures, deferred (RFC 8461 §5).
                            let tls_failed = matches!(
                                &e,
                                Error::Tls(_)
                                    | Error::Rejected {
                                        phase: Phase::StartTls,
                                        ..
                                    }
                            );
                            if let (Some(c), TlsMode::Required, true) = (sts_host, tls, tls_failed)
                            {
                                let place = Place {
                                    mx_host: Some(&host.name),
                                    receiving_ip: Some(ip),
                                    sending_ip: source,
                                };
                                match self.sts_tls_failed(domain, c, e, fallback, &relay, place) {
                                    (_, Some(e)) => {
                                        note(e, Some(relay.clone()));
                                        continue 'hosts;
                                    }
                                    (result, None) => {
                                        if let Some(sts) = &self.mta_sts {
                                            let addr = SocketAddr::new(ip, port);
                                            sts.note_testing_failure(&host.name, addr, result, c);
                                        }
                                        tls = fallback;
                                        pool_key.tls = fallback;
                                        continue;
                                    }
                                }
                            }
                            if e.is_slow_down() {
                                dest.cool_down(limits.cooldown);
                            }
                            note(e, Some(relay.clone()));
                            continue 'hosts;
                        }
                        Err(Try::Plaintext(e)) => {
                            tracing::info!(%relay, "{e}; retrying without TLS");
                            tls = TlsMode::None;
                        }
                    }
                }
            }
        }
        let (error, relay) = temporary.or(permanent).unwrap_or_else(|| {
            (
                Error::NoMailHost {
                    domain: domain.to_string(),
                    detail: "no mail host to try".into(),
                },
                None,
            )
        });
        all(rcpts, &error, relay)
    }

    /// The MTA-STS policy that applies to mail for `domain`: only on the domain's own MX
    /// route, and not a `none` policy.
    async fn sts_policy(&self, domain: &str) -> Option<Arc<Cached>> {
        let sts = self.mta_sts.as_ref()?;
        if !self.routes.is_recipient_mx(domain) {
            return None;
        }
        sts.policy(domain)
            .await
            .filter(|c| c.policy.mode != Mode::None)
    }

    /// Hands a check's result under `policy` to the MTA-STS hook (metric, TLS-RPT).
    fn sts_result(&self, domain: &str, policy: &Cached, result: ResultType, place: Place<'_>) {
        if let Some(sts) = &self.mta_sts {
            sts.record(domain, Some(policy), result, place);
        }
    }

    /// TLS failed at a host the policy lists (verified TLS was asked): its result type, and
    /// the error to note (`enforce`; under `testing`, the TLS error itself when the domain's
    /// own mode is `required`), or `None` when the mail may go on in the domain's `fallback`
    /// mode (`testing`; the failure is logged).
    fn sts_tls_failed(
        &self,
        domain: &str,
        policy: &Cached,
        e: Error,
        fallback: TlsMode,
        relay: &str,
        place: Place<'_>,
    ) -> (ResultType, Option<Error>) {
        let result = crate::mta_sts::classify(&e);
        self.sts_result(domain, policy, result, place);
        let failed = Error::MtaSts {
            domain: domain.to_string(),
            result,
            detail: e.to_string(),
        };
        if policy.policy.mode == Mode::Enforce {
            return (result, Some(failed));
        }
        tracing::warn!(
            domain,
            relay,
            "{failed}; mode testing: going on as without a policy"
        );
        // The domain's own `tls: required` still stands.
        (result, (fallback == TlsMode::Required).then_some(e))
    }

    /// Connects (`from` an IP pool's address, when given), reads the greeting, says EHLO (the
    /// pool's name, else `hostname`) and does STARTTLS as `mode` asks; with a `login`, TLS as
    /// the login says (`mode` unused) and AUTH.
    async fn open(
        &self,
        host: &str,
        ip: IpAddr,
        port: u16,
        mode: TlsMode,
        login: Option<&Login>,
        from: Option<(IpAddr, &Pool)>,
    ) -> Result<Session<TcpStream>, Try> {
        let timeouts = &self.config.timeouts;
        let addr = SocketAddr::new(ip, port);
        let source = from.map(|(source, _)| source);
        let connect = crate::pools::connect(addr, source);
        let stream = match tokio::time::timeout(timeouts.connect, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Try::NextAddr(Error::Connect {
                    addr: match source {
                        Some(from) => format!("{addr} from {from}"),
                        None => addr.to_string(),
                    },
                    source: e,
                }))
            }
            Err(_) => {
                return Err(Try::NextAddr(Error::Timeout {
                    phase: Phase::Connect,
                    after: timeouts.connect,
                }))
            }
        };
        let _ = stream.set_nodelay(true);
        let name = from.map_or(self.config.ehlo_name(), |(_, pool)| pool.ehlo.as_str());
        if let Some(login) = login {
            return match self.open_login(stream, host, ip, login, name).await {
                Ok(session) => {
                    self.metrics.incr(Counter::TlsUsed);
                    Ok(session)
                }
                Err(Try::NextHost(e @ Error::Auth { .. })) => {
                    self.auth_failed(login, &e);
                    Err(Try::NextHost(e))
                }
                Err(e) => Err(e),
            };
        }
        let mut session = Session::new(stream, timeouts.clone());
        session.greeting().await.map_err(Try::NextHost)?;
        session.ehlo(name).await.map_err(Try::NextHost)?;
        match (mode, session.caps.starttls) {
            (TlsMode::None, _) | (TlsMode::Opportunistic, false) => {}
            (TlsMode::Required, false) => {
                return Err(Try::NextHost(Error::Tls(format!("{host} {NO_STARTTLS}"))))
            }
            (TlsMode::Opportunistic, true) | (TlsMode::Required, true) => {
                let connector = if mode == TlsMode::Required {
                    &self.tls.verified
                } else {
                    &self.tls.opportunistic
                };
                if let Err(e) = session.starttls(connector, server_name(host, ip)).await {
                    return Err(match (mode, &e) {
                        (TlsMode::Opportunistic, Error::Tls(_)) => Try::Plaintext(e),
                        _ => Try::NextHost(e),
                    });
                }
                session.ehlo(name).await.map_err(Try::NextHost)?;
            }
        }
        self.metrics.incr(if session.tls {
            Counter::TlsUsed
        } else {
            Counter::TlsNotUsed
        });
        Ok(session)
    }

    /// TLS (from the first byte, or STARTTLS, always required), EHLO and AUTH for a
    /// transport with a login. The certificate must verify (against the web PKI and
    /// `tls.ca_file`) unless the login says `allow_unverified`; otherwise nothing of the
    /// credentials is sent and the mail is deferred with [`Error::Auth`].
    async fn open_login(
        &self,
        stream: TcpStream,
        host: &str,
        ip: IpAddr,
        login: &Login,
        name: &str,
    ) -> Result<Session<TcpStream>, Try> {
        let timeouts = &self.config.timeouts;
        let connector = if login.allow_unverified {
            &self.tls.opportunistic
        } else {
            &self.tls.verified
        };
        let failed = |detail: String| {
            Try::NextHost(Error::Auth {
                transport: login.transport.clone(),
                detail,
            })
        };
        let not_sent = |e: &Error| failed(format!("{host}: {e}; the login was not sent"));
        let mut session = match login.tls {
            LoginTls::Wrapper => {
                let after = timeouts.connect;
                let tls = match tokio::time::timeout(
                    after,
                    connector.connect(server_name(host, ip), stream),
                )
                .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        return Err(not_sent(&Error::Tls(format!("handshake failed: {e}"))))
                    }
                    Err(_) => {
                        return Err(Try::NextHost(Error::Timeout {
                            phase: Phase::StartTls,
                            after,
                        }))
                    }
                };
                let mut session = Session::new_tls(tls, timeouts.clone());
                session.greeting().await.map_err(Try::NextHost)?;
                session.ehlo(name).await.map_err(Try::NextHost)?;
                session
            }
            LoginTls::Starttls => {
                let mut session = Session::new(stream, timeouts.clone());
                session.greeting().await.map_err(Try::NextHost)?;
                session.ehlo(name).await.map_err(Try::NextHost)?;
                if !session.caps.starttls {
                    return Err(not_sent(&Error::Tls("STARTTLS not offered".into())));
                }
                match session.starttls(connector, server_name(host, ip)).await {
                    Ok(()) => {}
                    Err(e @ Error::Tls(_)) => return Err(not_sent(&e)),
                    Err(e) => return Err(Try::NextHost(e)),
                }
                session.ehlo(name).await.map_err(Try::NextHost)?;
                session
            }
        };
        let Some(mechanism) =
            crate::smtp::auth::Mechanism::choose(session.caps.auth, login.mechanism)
        else {
            let wanted = login.mechanism.map_or("PLAIN or LOGIN", |m| m.as_str());
            return Err(failed(format!("{host} does not offer AUTH {wanted}")));
        };
        match session.auth(mechanism, &login.user, login.password()).await {
            Ok(()) => Ok(session),
            Err(e @ (Error::Rejected { .. } | Error::Protocol { .. })) => Err(failed(format!(
                "{host}: AUTH {} as {}: {e}",
                mechanism.as_str(),
                login.user
            ))),
            // Timeouts and broken connections are the network's, not the login's.
            Err(e) => Err(Try::NextHost(e)),
        }
    }

    /// Counts a failed login, and logs it once per [`crate::login::LOG_INTERVAL`] per
    /// transport (every deferred message would otherwise repeat it).
    fn auth_failed(&self, login: &Login, e: &Error) {
        self.metrics.incr(Counter::AuthFailure);
        if login.should_log(Instant::now()) {
            tracing::error!(
                transport = %login.transport,
                user = %login.user,
                "{e}; mail through it is deferred. Logged once per {:?}; \
                 hedwig_worker_auth_failures_total counts every failure",
                crate::login::LOG_INTERVAL
            );
        }
    }

    /// One transaction; gives the session back when it can carry another message.
    async fn transact(
        &self,
        mut session: Session<TcpStream>,
        tx: &Transaction<'_>,
        reused: bool,
    ) -> Sent {
        match session.send(tx).await {
            Ok(results) => {
                // 421 means the server is closing the connection (RFC 5321 §3.8).
                let closing = results.iter().any(
                    |(_, r)| matches!(r, Err(Error::Rejected { reply, .. }) if reply.code == 421),
                );
                if closing {
                    return Sent::Done(results, None);
                }
                Sent::Done(results, Some(session))
            }
            Err(e) if reused && is_stale(&e) => Sent::Stale(e),
            Err(e) => {
                // Nothing was accepted: the error applies to every recipient.
                let results = tx
                    .rcpt_to
                    .iter()
                    .map(|r| (r.clone(), Err(clone_error(&e))))
                    .collect();
                // The session may be out of step (pipelined replies left unread): drop it.
                drop(session);
                Sent::Done(results, None)
            }
        }
    }

    /// Per-recipient outcomes; a "slow down" answer cools the destination and sets the
    /// retry floor.
    fn finish(
        &self,
        results: RcptResults,
        relay: &str,
        tls: bool,
        source: Option<IpAddr>,
        dest: &Destination,
    ) -> Vec<(Recipient, Outcome)> {
        let cooldown = self.dests.limits().cooldown;
        let slow = results
            .iter()
            .any(|(_, r)| r.as_ref().is_err_and(Error::is_slow_down));
        if slow {
            dest.cool_down(cooldown);
        }
        results
            .into_iter()
            .map(|(rcpt, result)| {
                let mut outcome = match result {
                    Ok(reply) => Outcome::delivered(&reply, Some(relay.to_string())),
                    Err(e) => {
                        let mut o = Outcome::failed(&e, Some(relay.to_string()));
                        if e.is_slow_down() {
                            o.retry_after = Some(cooldown);
                        }
                        o
                    }
                };
                outcome.tls = Some(tls);
                outcome.source = source;
                (rcpt, outcome)
            })
            .collect()
    }
}

/// Longest wait for a per-minute token inside a delivery; longer means defer.
const MAX_RATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Result of one transaction attempt.
enum Sent {
    /// Per-recipient results, and the session if it can be reused.
    Done(RcptResults, Option<Session<TcpStream>>),
    /// A reused connection turned out dead or closing before MAIL was answered: use a new one.
    Stale(Error),
}

/// Whether a reused connection failed in a way that says nothing about the message.
fn is_stale(e: &Error) -> bool {
    match e {
        Error::Closed(Phase::Mail)
        | Error::Io {
            phase: Phase::Mail, ..
        } => true,
        Error::Rejected {
            phase: Phase::Mail,
            reply,
        } => reply.code == 421,
        _ => false,
    }
}

/// The same outcome for every recipient.
fn all(rcpts: &[Recipient], error: &Error, relay: Option<String>) -> Vec<(Recipient, Outcome)> {
    let outcome = Outcome::failed(error, relay);
    rcpts.iter().map(|r| (r.clone(), outcome.clone())).collect()
}

/// `Error` holds `io::Error`s and cannot derive `Clone`; copy it by kind and text.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Rejected { phase, reply } => Error::Rejected {
            phase: *phase,
            reply: reply.clone(),
        },
        Error::Connect { addr, source } => Error::Connect {
            addr: addr.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Io { phase, source } => Error::Io {
            phase: *phase,
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Timeout { phase, after } => Error::Timeout {
            phase: *phase,
            after: *after,
        },
        Error::Closed(p) => Error::Closed(*p),
        Error::Protocol { phase, detail } => Error::Protocol {
            phase: *phase,
            detail: detail.clone(),
        },
        Error::DnsTemporary { name, detail } => Error::DnsTemporary {
            name: name.clone(),
            detail: detail.clone(),
        },
        Error::NoSuchDomain(d) => Error::NoSuchDomain(d.clone()),
        Error::NullMx(d) => Error::NullMx(d.clone()),
        Error::NoMailHost { domain, detail } => Error::NoMailHost {
            domain: domain.clone(),
            detail: detail.clone(),
        },
        Error::Tls(s) => Error::Tls(s.clone()),
        Error::MtaSts {
            domain,
            result,
            detail,
        } => Error::MtaSts {
            domain: domain.clone(),
            result: *result,
            detail: detail.clone(),
        },
        Error::Auth { transport, detail } => Error::Auth {
            transport: transport.clone(),
            detail: detail.clone(),
        },
        Error::NeedsSmtpUtf8(s) => Error::NeedsSmtpUtf8(s.clone()),
        Error::TooBig { size, limit, by } => Error::TooBig {
            size: *size,
            limit: *limit,
            by: by.clone(),
        },
        Error::BadAddress(s) => Error::BadAddress(s.clone()),
        Error::LiteralRefused(s) => Error::LiteralRefused(s.clone()),
        Error::Expired(s) => Error::Expired(s.clone()),
        Error::Loop { hops } => Error::Loop { hops: *hops },
        Error::Local(s) => Error::Local(s.clone()),
        Error::Throttled {
            destination,
            why,
            retry_after,
        } => Error::Throttled {
            destination: destination.clone(),
            why,
            retry_after: *retry_after,
        },
    }
}

/// A recipient domain (A-labels, lowercase) and its recipients.
pub type DomainGroup = (String, Vec<Recipient>);

/// Recipients grouped by domain (A-labels, lowercase), in first-seen order, duplicates
/// dropped; those that are not addresses (their parse failed when the job was decoded) come
/// back separately, each failed for good (`bad-address`).
pub fn group_by_domain(rcpts: &[Recipient]) -> (Vec<DomainGroup>, Vec<(Recipient, Outcome)>) {
    let mut groups: Vec<DomainGroup> = Vec::new();
    let mut bad = Vec::new();
    for rcpt in rcpts {
        match rcpt.mailbox() {
            Ok(mailbox) => {
                let domain = mailbox.ascii_domain.to_ascii_lowercase();
                match groups.iter_mut().find(|(d, _)| *d == domain) {
                    Some((_, list)) if list.contains(rcpt) => {}
                    Some((_, list)) => list.push(rcpt.clone()),
                    None => groups.push((domain, vec![rcpt.clone()])),
                }
            }
            Err(e) => bad.push((
                rcpt.clone(),
                Outcome::failed(&Error::BadAddress(e.to_string()), None),
            )),
        }
    }
    (groups, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Status;

    #[test]
    fn grouping_by_domain() {
        let rcpts: Vec<Recipient> = [
            "a@X.example",
            "b@x.example",
            "a@X.example",
            "c@y.example",
            "bad",
        ]
        .into_iter()
        .map(Recipient::from)
        .collect();
        let (groups, bad) = group_by_domain(&rcpts);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "x.example");
        assert_eq!(groups[0].1, ["a@X.example", "b@x.example"]);
        assert_eq!(groups[1].0, "y.example");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "bad");
        assert_eq!(bad[0].1.status, Status::Bounced);
        assert_eq!(bad[0].1.reason, "bad-address");
    }
}
