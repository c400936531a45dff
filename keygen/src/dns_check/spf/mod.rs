//! SPF (RFC 7208): parsing a `v=spf1` record and evaluating whether it authorizes an IP
//! address, following `include:` and `redirect=` through [`Dns`].
//!
//! The evaluation is `check_host()` of RFC 7208 §4 without macros: a mechanism whose domain
//! holds a macro (`%{i}`) is not evaluated (it does not match, and a note says so); `ptr`
//! is not evaluated either (§5.5: "do not use"). The limits of §4.6.4 apply: at most 10
//! mechanisms or modifiers that cost a DNS lookup, at most 10 MX names per `mx`, at most 2
//! lookups that answer nothing.
//! `include:`/`redirect=` nesting is cut at [`MAX_DEPTH`] so a loop ends.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::lookup::Dns;

/// RFC 7208 §4.6.4: DNS-querying terms per evaluation.
pub const MAX_LOOKUPS: usize = 10;
/// RFC 7208 §4.6.4: MX names looked at per `mx` mechanism.
pub const MAX_MX_NAMES: usize = 10;
/// RFC 7208 §4.6.4: lookups answering nothing (NXDOMAIN or no records) per evaluation.
pub const MAX_VOID_LOOKUPS: usize = 2;
/// How deep `include:` and `redirect=` may nest (the lookup limit already bounds it; this
/// names the loop when there is one).
pub const MAX_DEPTH: usize = 10;

/// The prefix of a directive: what a match means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// `+` (the default)
    Pass,
    /// `-`
    Fail,
    /// `~`
    SoftFail,
    /// `?`
    Neutral,
}

/// A mechanism with its arguments (RFC 7208 §5). Domains are lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(String),
    /// `a[:domain][/v4][//v6]`
    A {
        domain: Option<String>,
        v4: u8,
        v6: u8,
    },
    /// `mx[:domain][/v4][//v6]`
    Mx {
        domain: Option<String>,
        v4: u8,
        v6: u8,
    },
    Ptr(Option<String>),
    Ip4(Ipv4Net),
    Ip6(Ipv6Net),
    Exists(String),
}

/// One directive as parsed, with its text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
    /// The term as written in the record.
    pub term: String,
}

/// A parsed SPF record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfRecord {
    pub directives: Vec<Directive>,
    /// The `redirect=` domain, if any.
    pub redirect: Option<String>,
}

/// Whether a TXT string is an SPF record: `v=spf1` alone or followed by a space (§4.5).
pub fn is_spf(txt: &str) -> bool {
    let t = txt.trim_start();
    t.len() >= 6
        && t.as_bytes()[..6].eq_ignore_ascii_case(b"v=spf1")
        && (t.len() == 6 || t.as_bytes()[6] == b' ')
}

/// Parses an SPF record (§12 grammar); the error says which term is wrong.
pub fn parse(txt: &str) -> Result<SpfRecord, String> {
    if !is_spf(txt) {
        return Err("does not start with v=spf1".into());
    }
    let mut record = SpfRecord {
        directives: Vec::new(),
        redirect: None,
    };
    for term in txt.split_ascii_whitespace().skip(1) {
        let bad = |why: &str| format!("term {term:?}: {why}");
        // A modifier is `name=value` with the `=` before any `:` or `/` (§4.6.1).
        let eq = term.find('=');
        let sep = term.find([':', '/']);
        if let Some(eq) = eq.filter(|&eq| sep.is_none_or(|s| eq < s)) {
            let (name, value) = (&term[..eq], &term[eq + 1..]);
            if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err(bad("not a valid modifier"));
            }
            // exp= and unknown modifiers do not change the result (§6).
            if name.eq_ignore_ascii_case("redirect") {
                if record.redirect.is_some() {
                    return Err(bad("redirect= appears twice"));
                }
                record.redirect = Some(domain_spec(value).map_err(|w| bad(&w))?);
            }
            continue;
        }
        let (qualifier, rest) = match term.as_bytes()[0] {
            b'+' => (Qualifier::Pass, &term[1..]),
            b'-' => (Qualifier::Fail, &term[1..]),
            b'~' => (Qualifier::SoftFail, &term[1..]),
            b'?' => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        let split = rest.find([':', '/']).unwrap_or(rest.len());
        let (name, args) = (rest[..split].to_ascii_lowercase(), &rest[split..]);
        let required = |args: &str| -> Result<String, String> {
            match args.strip_prefix(':') {
                Some(spec) => domain_spec(spec).map_err(|w| bad(&w)),
                None => Err(bad("needs :domain")),
            }
        };
        let mechanism = match name.as_str() {
            "all" if args.is_empty() => Mechanism::All,
            "all" => return Err(bad("all takes no argument")),
            "include" => Mechanism::Include(required(args)?),
            "exists" => Mechanism::Exists(required(args)?),
            "ptr" => Mechanism::Ptr(match args {
                "" => None,
                _ => Some(required(args)?),
            }),
            "a" | "mx" => {
                let (domain, v4, v6) = domain_and_cidr(args).map_err(|w| bad(&w))?;
                if name == "a" {
                    Mechanism::A { domain, v4, v6 }
                } else {
                    Mechanism::Mx { domain, v4, v6 }
                }
            }
            "ip4" => {
                let spec = args
                    .strip_prefix(':')
                    .ok_or_else(|| bad("needs :address"))?;
                let net = match spec.split_once('/') {
                    Some(_) => spec.parse::<Ipv4Net>().ok(),
                    None => spec.parse().ok().and_then(|ip| Ipv4Net::new(ip, 32).ok()),
                };
                Mechanism::Ip4(net.ok_or_else(|| bad("not an IPv4 address or network"))?)
            }
            "ip6" => {
                let spec = args
                    .strip_prefix(':')
                    .ok_or_else(|| bad("needs :address"))?;
                let net = match spec.split_once('/') {
                    Some(_) => spec.parse::<Ipv6Net>().ok(),
                    None => spec.parse().ok().and_then(|ip| Ipv6Net::new(ip, 128).ok()),
                };
                Mechanism::Ip6(net.ok_or_else(|| bad("not an IPv6 address or network"))?)
            }
            _ => return Err(bad("unknown mechanism")),
        };
        record.directives.push(Directive {
            qualifier,
            mechanism,
            term: term.to_string(),
        });
    }
    Ok(record)
}

fn domain_spec(spec: &str) -> Result<String, String> {
    let spec = spec.trim_end_matches('.');
    if spec.is_empty() || spec.contains(['/', ':']) {
        return Err("not a domain".into());
    }
    Ok(spec.to_ascii_lowercase())
}

/// `[:domain][/v4][//v6]` of `a` and `mx`; absent prefixes are /32 and /128.
fn domain_and_cidr(args: &str) -> Result<(Option<String>, u8, u8), String> {
    let (spec, cidr) = match args.find('/') {
        Some(i) => (&args[..i], &args[i..]),
        None => (args, ""),
    };
    let domain = match spec {
        "" => None,
        _ => Some(domain_spec(spec.strip_prefix(':').ok_or("bad argument")?)?),
    };
    let prefix = |s: &str, max: u8| -> Result<u8, String> {
        match s.parse::<u8>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("bad prefix length /{s}")),
        }
    };
    let (v4, v6) = match cidr.strip_prefix('/') {
        None => (32, 128),
        Some(rest) => match rest.strip_prefix('/') {
            Some(v6) => (32, prefix(v6, 128)?),
            None => match rest.split_once("//") {
                Some((v4, v6)) => (prefix(v4, 32)?, prefix(v6, 128)?),
                None => (prefix(rest, 32)?, 128),
            },
        },
    };
    Ok((domain, v4, v6))
}

/// The result of `check_host()` (RFC 7208 §2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    /// No SPF record at the domain.
    None,
    /// The record is broken (receivers treat it like no record or a failure).
    PermError(String),
    /// A DNS lookup failed; try again later.
    TempError(String),
}

impl SpfResult {
    fn of(q: Qualifier) -> Self {
        match q {
            Qualifier::Pass => SpfResult::Pass,
            Qualifier::Fail => SpfResult::Fail,
            Qualifier::SoftFail => SpfResult::SoftFail,
            Qualifier::Neutral => SpfResult::Neutral,
        }
    }

    /// Lowercase name as in `Received-SPF:` (`pass`, `softfail`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::None => "none",
            SpfResult::PermError(_) => "permerror",
            SpfResult::TempError(_) => "temperror",
        }
    }
}

/// What [`check_host`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub result: SpfResult,
    /// The top-level domain's SPF record, when it has exactly one.
    pub record: Option<String>,
    /// The directive that decided, e.g. `include:_spf.example.net at example.com ->
    /// ip4:192.0.2.0/24 at _spf.example.net`.
    pub matched: Option<String>,
    /// Whether the deciding directive was a pass-everything `all` (`+all`, `all`).
    pub pass_all: bool,
    /// Parts of the record this checker did not evaluate (macros, `ptr`).
    pub notes: Vec<String>,
    /// DNS-querying terms used.
    pub lookups: usize,
}

#[derive(Default)]
struct State {
    lookups: usize,
    void_lookups: usize,
    notes: Vec<String>,
    pass_all: bool,
    top_record: Option<String>,
}

impl State {
    fn count(&mut self) -> Result<(), SpfResult> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(SpfResult::PermError(format!(
                "more than {MAX_LOOKUPS} DNS-querying terms (RFC 7208 §4.6.4)"
            )));
        }
        Ok(())
    }

    /// Counts a lookup that answered nothing; past the limit the record is broken.
    fn void(&mut self, empty: bool) -> Result<(), SpfResult> {
        if empty {
            self.void_lookups += 1;
            if self.void_lookups > MAX_VOID_LOOKUPS {
                return Err(SpfResult::PermError(format!(
                    "more than {MAX_VOID_LOOKUPS} lookups answered nothing (RFC 7208 §4.6.4)"
                )));
            }
        }
        Ok(())
    }
}

/// Evaluates whether `domain`'s SPF policy authorizes `ip` to send mail for it.
pub async fn check_host<D: Dns + Sync>(dns: &D, ip: IpAddr, domain: &str) -> Evaluation {
    let mut state = State::default();
    let (result, matched) = eval(dns, ip, domain.to_ascii_lowercase(), 0, &mut state).await;
    Evaluation {
        result,
        record: state.top_record,
        matched,
        pass_all: state.pass_all,
        notes: state.notes,
        lookups: state.lookups,
    }
}

type Evaluated<'a> = Pin<Box<dyn Future<Output = (SpfResult, Option<String>)> + Send + 'a>>;

fn eval<'a, D: Dns + Sync>(
    dns: &'a D,
    ip: IpAddr,
    domain: String,
    depth: usize,
    state: &'a mut State,
) -> Evaluated<'a> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            let why = format!("include/redirect nested deeper than {MAX_DEPTH} at {domain}");
            return (SpfResult::PermError(why), None);
        }
        let txts = match dns.txt(&domain).await {
            Ok(txts) => txts,
            Err(e) => return (SpfResult::TempError(e.to_string()), None),
        };
        let records: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
        let text = match records.as_slice() {
            [] => return (SpfResult::None, None),
            [one] => *one,
            more => {
                let why = format!(
                    "{} SPF records at {domain} (RFC 7208 §4.5 allows one)",
                    more.len()
                );
                return (SpfResult::PermError(why), None);
            }
        };
        if depth == 0 {
            state.top_record = Some(text.clone());
        }
        let record = match parse(text) {
            Ok(record) => record,
            Err(why) => return (SpfResult::PermError(format!("{domain}: {why}")), None),
        };
        for directive in &record.directives {
            let matched = match matches(dns, ip, &domain, directive, depth, state).await {
                Ok(Some(how)) => how,
                Ok(None) => continue,
                Err(result) => return (result, None),
            };
            if directive.qualifier == Qualifier::Pass && directive.mechanism == Mechanism::All {
                state.pass_all = true;
            }
            return (SpfResult::of(directive.qualifier), Some(matched));
        }
        if let Some(target) = record.redirect {
            if let Err(result) = state.count() {
                return (result, None);
            }
            if target.contains('%') {
                state.notes.push(format!(
                    "redirect={target} at {domain}: macros are not evaluated"
                ));
                return (SpfResult::Neutral, None);
            }
            return match eval(dns, ip, target.clone(), depth + 1, state).await {
                (SpfResult::None, _) => {
                    let why = format!("redirect={target} at {domain}: {target} has no SPF record");
                    (SpfResult::PermError(why), None)
                }
                (result, how) => (
                    result,
                    how.map(|h| format!("redirect={target} at {domain} -> {h}")),
                ),
            };
        }
        // §4.7: no match and no redirect.
        (SpfResult::Neutral, None)
    })
}

/// Whether `directive` matches `ip`: `Ok(Some(description))`, `Ok(None)`, or the result
/// that ends the evaluation (an error of a lookup or an include).
async fn matches<D: Dns + Sync>(
    dns: &D,
    ip: IpAddr,
    domain: &str,
    directive: &Directive,
    depth: usize,
    state: &mut State,
) -> Result<Option<String>, SpfResult> {
    let here = format!("{} at {domain}", directive.term);
    let hit = |yes: bool| if yes { Some(here.clone()) } else { None };
    let temp = |e: crate::Error| SpfResult::TempError(e.to_string());
    let unevaluated = |state: &mut State, why: &str| {
        state
            .notes
            .push(format!("{} at {domain}: {why}", directive.term));
    };
    match &directive.mechanism {
        Mechanism::All => Ok(hit(true)),
        Mechanism::Ip4(net) => Ok(hit(IpNet::V4(*net).contains(&ip))),
        Mechanism::Ip6(net) => Ok(hit(IpNet::V6(*net).contains(&ip))),
        Mechanism::A {
            domain: target,
            v4,
            v6,
        } => {
            state.count()?;
            let target = target.as_deref().unwrap_or(domain);
            if target.contains('%') {
                unevaluated(state, "macros are not evaluated");
                return Ok(None);
            }
            let ips = dns.ips(target).await.map_err(temp)?;
            state.void(ips.is_empty())?;
            Ok(hit(ips.iter().any(|&c| in_prefix(c, ip, *v4, *v6))))
        }
        Mechanism::Mx {
            domain: target,
            v4,
            v6,
        } => {
            state.count()?;
            let target = target.as_deref().unwrap_or(domain);
            if target.contains('%') {
                unevaluated(state, "macros are not evaluated");
                return Ok(None);
            }
            let hosts = dns.mx(target).await.map_err(temp)?;
            state.void(hosts.is_empty())?;
            if hosts.len() > MAX_MX_NAMES {
                return Err(SpfResult::PermError(format!(
                    "{here}: {target} has more than {MAX_MX_NAMES} MX records (RFC 7208 §4.6.4)"
                )));
            }
            for (_, host) in hosts.iter().filter(|(_, h)| !h.is_empty()) {
                let ips = dns.ips(host).await.map_err(temp)?;
                state.void(ips.is_empty())?;
                if ips.iter().any(|&c| in_prefix(c, ip, *v4, *v6)) {
                    return Ok(Some(format!("{here} ({host})")));
                }
            }
            Ok(None)
        }
        Mechanism::Include(target) => {
            state.count()?;
            if target.contains('%') {
                unevaluated(state, "macros are not evaluated");
                return Ok(None);
            }
            // §5.2: the include matches only on pass; none and permerror are permerror.
            match eval(dns, ip, target.clone(), depth + 1, state).await {
                (SpfResult::Pass, how) => Ok(Some(match how {
                    Some(how) => format!("{here} -> {how}"),
                    None => here,
                })),
                (SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral, _) => Ok(None),
                (SpfResult::None, _) => Err(SpfResult::PermError(format!(
                    "{here}: {target} has no SPF record"
                ))),
                (error, _) => Err(error),
            }
        }
        Mechanism::Exists(target) => {
            state.count()?;
            if target.contains('%') {
                unevaluated(state, "macros are not evaluated");
                return Ok(None);
            }
            let ips = dns.ips(target).await.map_err(temp)?;
            state.void(ips.is_empty())?;
            Ok(hit(ips.iter().any(|c| c.is_ipv4())))
        }
        Mechanism::Ptr(_) => {
            state.count()?;
            unevaluated(state, "ptr is not evaluated (RFC 7208 §5.5: do not use it)");
            Ok(None)
        }
    }
}

/// Whether `ip` is in `candidate`/prefix of its family.
fn in_prefix(candidate: IpAddr, ip: IpAddr, v4: u8, v6: u8) -> bool {
    let prefix = if candidate.is_ipv4() { v4 } else { v6 };
    IpNet::new(candidate, prefix).is_ok_and(|net| net.contains(&ip))
}

/// The mechanism that authorizes exactly `ip`: `ip4:192.0.2.25` or `ip6:2001:db8::25`.
pub fn ip_term(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip4:{v4}"),
        IpAddr::V6(v6) => format!("ip6:{v6}"),
    }
}

/// A new record authorizing `ip` and soft-failing everyone else.
pub fn new_record(ip: IpAddr) -> String {
    format!("v=spf1 {} ~all", ip_term(ip))
}

/// `record` with `ip` authorized first; a pass-everything `all` becomes `~all`.
pub fn add_ip(record: &str, ip: IpAddr) -> String {
    let mut terms: Vec<String> = record
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect();
    for term in terms.iter_mut().skip(1) {
        if term.eq_ignore_ascii_case("all") || term.eq_ignore_ascii_case("+all") {
            *term = "~all".into();
        }
    }
    terms.insert(1.min(terms.len()), ip_term(ip));
    terms.join(" ")
}

#[cfg(test)]
mod tests;
