//! An in-process authoritative DNS server on loopback, answering from an in-memory [`Zone`].
//!
//! The server speaks UDP and TCP on the same `127.0.0.x:port`, encodes and decodes messages
//! with `hickory-proto`, and answers like an authoritative server would: names that exist but
//! lack the asked type answer NOERROR with no records (NODATA), names that do not exist answer
//! NXDOMAIN (both with an SOA in the authority section, TTL 0). Names under a
//! [`Zone::servfail`] domain answer SERVFAIL; names under a [`Zone::timeout`] domain are never
//! answered. [`DnsServer::set_silent`] makes the whole server stop answering (every query
//! times out) until it is switched back, for fault injection. UDP answers larger than the client's EDNS size (512 without EDNS) are sent
//! truncated, so the client retries over TCP. Every record has TTL 0.
//!
//! It does not do recursion, wildcards, DNSSEC, zone transfers or dynamic updates.
//!
//! ```no_run
//! # async fn demo() {
//! use hedwig_testkit::dns::{resolver, DnsServer, Zone};
//!
//! let dns = DnsServer::start(
//!     Zone::new()
//!         .mx("example.test", 10, "mx1.example.test")
//!         .a("mx1.example.test", "127.0.0.2")
//!         .null_mx("nullmx.test")
//!         .servfail("broken.test"),
//! )
//! .await;
//! let resolver = resolver(dns.addr());
//! let mx = resolver.mx_lookup("example.test.").await.unwrap();
//! assert_eq!(mx.answers().len(), 1);
//! // Later: fix the DNS while the server runs.
//! dns.set(Zone::new().a("broken.test", "127.0.0.3"));
//! # }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

pub use hickory_proto::rr::RecordType;

/// How long a TCP client may stay idle between queries before the server closes it.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// At most this many queries are remembered by [`DnsServer::queries`].
const QUERY_LOG_MAX: usize = 10_000;
/// RFC 1035 §2.3.4: UDP messages are limited to 512 octets without EDNS.
const UDP_PLAIN_MAX: usize = 512;
/// RFC 1035 §3.3: a <character-string> is at most 255 octets.
const TXT_CHUNK: usize = 255;

/// The records a [`DnsServer`] answers from. Names are case-insensitive and may be given with
/// or without the trailing dot.
///
/// The builder methods panic on a malformed name or address: they take test literals.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    records: BTreeMap<Name, Vec<RData>>,
    servfail: Vec<Name>,
    timeout: Vec<Name>,
}

impl Zone {
    /// An empty zone: every name answers NXDOMAIN.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an MX record `name MX preference exchange`.
    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        self.record(name, RData::MX(MX::new(preference, fqdn(exchange))))
    }

    /// Adds a null MX (RFC 7505: `MX 0 .`): the domain accepts no mail.
    pub fn null_mx(self, name: &str) -> Self {
        self.record(name, RData::MX(MX::new(0, Name::root())))
    }

    /// Adds an A record.
    pub fn a(self, name: &str, ip: &str) -> Self {
        let ip: Ipv4Addr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IPv4 {ip:?}: {e}"));
        self.record(name, RData::A(A(ip)))
    }

    /// Adds an AAAA record.
    pub fn aaaa(self, name: &str, ip: &str) -> Self {
        let ip: std::net::Ipv6Addr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IPv6 {ip:?}: {e}"));
        self.record(name, RData::AAAA(AAAA(ip)))
    }

    /// Adds a TXT record. Text longer than 255 bytes is split into 255-byte strings, as
    /// DKIM keys are published (RFC 6376 §3.6.2.2); readers concatenate them.
    pub fn txt(self, name: &str, text: &str) -> Self {
        let chunks: Vec<&[u8]> = if text.is_empty() {
            vec![&[][..]]
        } else {
            text.as_bytes().chunks(TXT_CHUNK).collect()
        };
        self.record(name, RData::TXT(TXT::from_bytes(chunks)))
    }

    /// Adds a CNAME record `name CNAME target` (followed within the zone when answering).
    pub fn cname(self, name: &str, target: &str) -> Self {
        self.record(name, RData::CNAME(CNAME(fqdn(target))))
    }

    /// Adds a PTR record for `ip` (v4 or v6) pointing to `target`, under in-addr.arpa/ip6.arpa.
    ///
    /// hickory's resolver answers reverse lookups of 127.0.0.0/8 and ::1 itself (RFC 6761,
    /// `localhost`) without asking any server: test PTR with a documentation address such as
    /// 192.0.2.25 (it is only a name here; no traffic goes there).
    pub fn ptr(mut self, ip: &str, target: &str) -> Self {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("bad IP {ip:?}: {e}"));
        let owner = Name::from(ip).to_lowercase();
        self.records
            .entry(owner)
            .or_default()
            .push(RData::PTR(PTR(fqdn(target))));
        self
    }

    /// Answers SERVFAIL for `domain` and every name under it.
    pub fn servfail(mut self, domain: &str) -> Self {
        self.servfail.push(fqdn(domain));
        self
    }

    /// Never answers queries for `domain` or any name under it (the client times out).
    pub fn timeout(mut self, domain: &str) -> Self {
        self.timeout.push(fqdn(domain));
        self
    }

    /// Reads zone text, one record per line: `name [ttl] [IN] TYPE data`, names absolute
    /// (trailing dot optional), TTLs ignored (every answer has TTL 0), `;` starts a comment.
    /// Types: `A`, `AAAA`, `MX pref exchange`, `TXT "a" "b"` (or unquoted text to the end of the
    /// line; long text is split as in [`Zone::txt`]), `CNAME`, `PTR` (the owner may be an IP
    /// address), and two testkit types without data: `SERVFAIL` and `TIMEOUT`.
    ///
    /// ```
    /// let zone = hedwig_testkit::dns::Zone::parse(
    ///     "example.test. 300 IN MX 10 mx1.example.test.\n\
    ///      mx1.example.test A 127.0.0.2 ; the first MX\n\
    ///      broken.test SERVFAIL",
    /// )
    /// .unwrap();
    /// # let _ = zone;
    /// ```
    pub fn parse(text: &str) -> Result<Self, ZoneError> {
        let mut zone = Zone::new();
        for (index, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let error = |message: String| ZoneError {
                line: index + 1,
                message,
            };
            zone = zone.parse_line(line).map_err(error)?;
        }
        Ok(zone)
    }

    fn parse_line(self, line: &str) -> Result<Self, String> {
        let mut words = line.split_whitespace().peekable();
        let owner = words.next().ok_or("empty line")?.to_string();
        if words.peek().is_some_and(|w| w.parse::<u32>().is_ok()) {
            words.next();
        }
        if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("IN")) {
            words.next();
        }
        let kind = words.next().ok_or("no record type")?.to_ascii_uppercase();
        let data: Vec<&str> = words.collect();
        let name = || try_fqdn(&owner);
        let one = |what: &str| match data.as_slice() {
            [value] => Ok(value.to_string()),
            _ => Err(format!("{kind} takes one {what}")),
        };
        let rdata = match kind.as_str() {
            "SERVFAIL" | "TIMEOUT" if !data.is_empty() => {
                return Err(format!("{kind} takes no data"))
            }
            "SERVFAIL" => {
                let mut zone = self;
                zone.servfail.push(name()?);
                return Ok(zone);
            }
            "TIMEOUT" => {
                let mut zone = self;
                zone.timeout.push(name()?);
                return Ok(zone);
            }
            "A" => RData::A(A(one("IPv4 address")?
                .parse()
                .map_err(|e| format!("bad IPv4 address: {e}"))?)),
            "AAAA" => RData::AAAA(AAAA(
                one("IPv6 address")?
                    .parse()
                    .map_err(|e| format!("bad IPv6 address: {e}"))?,
            )),
            "CNAME" => RData::CNAME(CNAME(try_fqdn(&one("target")?)?)),
            "PTR" => RData::PTR(PTR(try_fqdn(&one("target")?)?)),
            "MX" => match data.as_slice() {
                [preference, exchange] => RData::MX(MX::new(
                    preference
                        .parse()
                        .map_err(|e| format!("bad MX preference: {e}"))?,
                    try_fqdn(exchange)?,
                )),
                _ => return Err("MX takes a preference and an exchange".to_string()),
            },
            "TXT" => {
                let text = match line.find('"') {
                    // "a" "b" -> ab: quoted strings are concatenated, as DKIM readers do.
                    Some(start) => line[start..].split('"').skip(1).step_by(2).collect(),
                    None => data.join(" "),
                };
                return self.txt_checked(&owner, &text);
            }
            other => return Err(format!("unsupported record type {other}")),
        };
        let owner = match owner.parse::<IpAddr>() {
            Ok(ip) if kind == "PTR" => Name::from(ip).to_lowercase(),
            _ => name()?,
        };
        let mut zone = self;
        zone.records.entry(owner).or_default().push(rdata);
        Ok(zone)
    }

    fn txt_checked(self, name: &str, text: &str) -> Result<Self, String> {
        try_fqdn(name)?;
        Ok(self.txt(name, text))
    }

    fn record(mut self, name: &str, rdata: RData) -> Self {
        self.records.entry(fqdn(name)).or_default().push(rdata);
        self
    }

    /// Whether `name` exists: it owns records, or it is an empty non-terminal (a name below
    /// it owns records, e.g. `_domainkey.example.test`), which RFC 8020 says is not NXDOMAIN.
    fn exists(&self, name: &Name) -> bool {
        self.records.contains_key(name) || self.records.keys().any(|owner| name.zone_of(owner))
    }

    /// Builds the answer to one question, or `None` when the server must stay silent.
    fn answer(&self, qname: &Name, qtype: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
        let qname = qname.to_lowercase();
        if self.timeout.iter().any(|d| d.zone_of(&qname)) {
            return None;
        }
        if self.servfail.iter().any(|d| d.zone_of(&qname)) {
            return Some((ResponseCode::ServFail, Vec::new()));
        }
        let mut answers = Vec::new();
        let mut name = qname.clone();
        // Follow CNAMEs inside the zone, a bounded number of times (loops end here).
        for _ in 0..8 {
            let Some(rdatas) = self.records.get(&name) else {
                break;
            };
            let matching: Vec<Record> = rdatas
                .iter()
                .filter(|r| r.record_type() == qtype || qtype == RecordType::ANY)
                .map(|r| Record::from_rdata(name.clone(), 0, r.clone()))
                .collect();
            if !matching.is_empty() {
                answers.extend(matching);
                break;
            }
            match rdatas.iter().find_map(|r| match r {
                RData::CNAME(CNAME(target)) => Some(target.to_lowercase()),
                _ => None,
            }) {
                Some(target) => {
                    let cname = RData::CNAME(CNAME(target.clone()));
                    answers.push(Record::from_rdata(name.clone(), 0, cname));
                    name = target;
                }
                None => break,
            }
        }
        if !answers.is_empty() || self.exists(&qname) {
            Some((ResponseCode::NoError, answers))
        } else {
            Some((ResponseCode::NXDomain, answers))
        }
    }
}

/// The line up to a `;` that is not inside double quotes (DKIM TXT data is full of `;`).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A fully qualified, lowercase name from a test literal.
fn fqdn(name: &str) -> Name {
    try_fqdn(name).unwrap_or_else(|e| panic!("{e}"))
}

fn try_fqdn(name: &str) -> Result<Name, String> {
    let absolute = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&absolute)
        .map(|n| n.to_lowercase())
        .map_err(|e| format!("bad DNS name {name:?}: {e}"))
}

/// A line of zone text that [`Zone::parse`] could not read.
#[derive(Debug, thiserror::Error)]
#[error("zone text line {line}: {message}")]
pub struct ZoneError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The SOA sent with negative answers, so resolvers can tell NODATA from a broken server.
fn soa_for(qname: &Name) -> Record {
    let owner = if qname.num_labels() > 2 {
        qname.trim_to(2)
    } else {
        qname.clone()
    };
    let soa = SOA::new(
        fqdn("ns.testkit.invalid"),
        fqdn("hostmaster.testkit.invalid"),
        1,
        3600,
        600,
        86400,
        0,
    );
    Record::from_rdata(owner, 0, RData::SOA(soa))
}

struct Shared {
    zone: RwLock<Zone>,
    queries: Mutex<Vec<(Name, RecordType)>>,
    /// While set, no query is answered.
    silent: AtomicBool,
    /// Queries left unanswered because of `silent`.
    ignored: AtomicU64,
}

impl Shared {
    /// Answers raw query bytes; `None` means "send nothing".
    fn respond(&self, request: &[u8], udp: bool) -> Option<Vec<u8>> {
        if self.silent.load(Ordering::SeqCst) {
            self.ignored.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let request = Message::from_vec(request).ok()?;
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.authoritative = true;
        response.add_queries(request.queries.iter().cloned());
        let client_max = match &request.edns {
            Some(edns) => {
                let mut ours = Edns::new();
                ours.set_max_payload(edns.max_payload().max(UDP_PLAIN_MAX as u16));
                response.set_edns(ours);
                usize::from(edns.max_payload()).max(UDP_PLAIN_MAX)
            }
            None => UDP_PLAIN_MAX,
        };
        match (request.metadata.op_code, request.queries.as_slice()) {
            (OpCode::Query, [query]) => {
                if let Ok(mut log) = self.queries.lock() {
                    if log.len() < QUERY_LOG_MAX {
                        log.push((query.name().to_lowercase(), query.query_type()));
                    }
                }
                let zone = self.zone.read().ok()?;
                let (code, answers) = zone.answer(query.name(), query.query_type())?;
                response.metadata.response_code = code;
                if code != ResponseCode::ServFail && answers.is_empty() {
                    response.add_authority(soa_for(&query.name().to_lowercase()));
                }
                response.add_answers(answers);
            }
            (OpCode::Query, _) => response.metadata.response_code = ResponseCode::FormErr,
            _ => response.metadata.response_code = ResponseCode::NotImp,
        }
        let bytes = response.to_vec().ok()?;
        if udp && bytes.len() > client_max {
            // RFC 1035 §4.2.1: too big for UDP; set TC and let the client retry over TCP.
            let mut truncated = response.truncate();
            truncated.metadata.truncation = true;
            return truncated.to_vec().ok();
        }
        Some(bytes)
    }
}

/// A running DNS server. Dropping it stops both listeners and every open TCP connection.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Starts a server on `127.0.0.1` at a port free for both UDP and TCP.
    ///
    /// # Panics
    /// If no such port can be bound (it should not happen on loopback).
    pub async fn start(zone: Zone) -> Self {
        let mut last_err = None;
        // The UDP port the OS picks may be taken for TCP; try a few.
        for _ in 0..20 {
            match Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), zone.clone()).await {
                Ok(server) => return server,
                Err(e) => last_err = Some(e),
            }
        }
        panic!("cannot start the test DNS server: {last_err:?}");
    }

    /// Starts a server on `addr` (UDP and TCP). Port 0 picks a free port.
    pub async fn start_on(addr: SocketAddr, zone: Zone) -> io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let addr = udp.local_addr()?;
        let tcp = TcpListener::bind(addr).await?;
        let shared = Arc::new(Shared {
            zone: RwLock::new(zone),
            queries: Mutex::new(Vec::new()),
            silent: AtomicBool::new(false),
            ignored: AtomicU64::new(0),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(udp, shared.clone())),
            tokio::spawn(serve_tcp(tcp, shared.clone())),
        ];
        Ok(Self {
            addr,
            shared,
            tasks,
        })
    }

    /// The address both UDP and TCP listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the zone; queries after this call see the new records.
    pub fn set(&self, zone: Zone) {
        match self.shared.zone.write() {
            Ok(mut current) => *current = zone,
            Err(poisoned) => *poisoned.into_inner() = zone,
        }
    }

    /// While `silent`, the server answers nothing at all (UDP and TCP): every client times
    /// out, as when the name server is down or unreachable. Takes effect for the next query.
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    /// How many queries were left unanswered because the server was silent.
    pub fn ignored(&self) -> u64 {
        self.shared.ignored.load(Ordering::Relaxed)
    }

    /// Every question asked so far (lowercase name, type), oldest first, up to 10 000.
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        self.shared
            .queries
            .lock()
            .map(|log| log.iter().map(|(n, t)| (n.to_string(), *t)).collect())
            .unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            // Do not spin if the socket keeps failing.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if let Some(reply) = shared.respond(&buf[..n], true) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in this set, so aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_tcp_connection(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// RFC 1035 §4.2.2: each message is prefixed by its two-byte length.
async fn serve_tcp_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut message)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = shared.respond(&message, false) else {
            continue;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = reply_len.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// What a hickory [`Resolver`] needs to ask only `addr` (UDP, then TCP on truncation): no
/// cache, no hosts file, no search domains, one attempt with a 2 s timeout. Adjust the
/// returned options (e.g. a shorter `timeout`) before building.
pub fn resolver_config(addr: SocketAddr) -> (ResolverConfig, ResolverOpts) {
    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
    for connection in &mut server.connections {
        connection.port = addr.port();
    }
    let config = ResolverConfig::from_name_servers(vec![server]);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    opts.ndots = 0;
    (config, opts)
}

/// A tokio hickory [`Resolver`] built from [`resolver_config`].
///
/// # Panics
/// If hickory refuses the configuration (it does not for a plain UDP/TCP server).
pub fn resolver(addr: SocketAddr) -> Resolver<TokioRuntimeProvider> {
    resolver_with_timeout(addr, Duration::from_secs(2))
}

/// Like [`resolver`], with the given per-query timeout.
pub fn resolver_with_timeout(
    addr: SocketAddr,
    timeout: Duration,
) -> Resolver<TokioRuntimeProvider> {
    let (config, mut opts) = resolver_config(addr);
    opts.timeout = timeout;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .expect("a resolver for a loopback name server")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        Zone::new()
            .a("Mail.Example.test", "127.0.0.2")
            .txt("sel._domainkey.example.test", "v=DKIM1")
            .cname("alias.example.test", "mail.example.test")
            .servfail("broken.test")
            .timeout("slow.test")
    }

    #[test]
    fn names_are_case_insensitive_and_nodata_differs_from_nxdomain() {
        let z = zone();
        let (code, answers) = z.answer(&fqdn("MAIL.example.TEST"), RecordType::A).unwrap();
        assert_eq!((code, answers.len()), (ResponseCode::NoError, 1));
        let (code, answers) = z
            .answer(&fqdn("mail.example.test"), RecordType::MX)
            .unwrap();
        assert_eq!((code, answers.len()), (ResponseCode::NoError, 0));
        // An empty non-terminal exists.
        let (code, _) = z
            .answer(&fqdn("_domainkey.example.test"), RecordType::TXT)
            .unwrap();
        assert_eq!(code, ResponseCode::NoError);
        let (code, _) = z.answer(&fqdn("nope.example.test"), RecordType::A).unwrap();
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[test]
    fn cname_is_followed_and_special_domains_apply_below() {
        let z = zone();
        let (_, answers) = z
            .answer(&fqdn("alias.example.test"), RecordType::A)
            .unwrap();
        let types: Vec<_> = answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(types, [RecordType::CNAME, RecordType::A]);
        let (code, _) = z.answer(&fqdn("a.b.broken.test"), RecordType::A).unwrap();
        assert_eq!(code, ResponseCode::ServFail);
        assert!(z.answer(&fqdn("x.slow.test"), RecordType::MX).is_none());
        assert!(z.answer(&fqdn("notslow.test"), RecordType::MX).is_some());
    }

    #[test]
    fn zone_text_gives_the_same_answers_as_the_builder() {
        let z = Zone::parse(
            "; a comment\n\
             example.test. 300 IN MX 10 mx1.example.test.\n\
             MX1.example.test A 127.0.0.2 ; trailing comment\n\
             v6.example.test AAAA ::1\n\
             sel._domainkey.example.test TXT \"v=DKIM1; \" \"k=rsa\"\n\
             192.0.2.25 PTR mx1.example.test\n\
             broken.test SERVFAIL\n\
             slow.test TIMEOUT\n",
        )
        .unwrap();
        let (_, mx) = z.answer(&fqdn("example.test"), RecordType::MX).unwrap();
        assert!(matches!(&mx[0].data, RData::MX(m) if m.preference == 10));
        let (_, a) = z.answer(&fqdn("mx1.example.test"), RecordType::A).unwrap();
        assert_eq!(a.len(), 1);
        let (_, txt) = z
            .answer(&fqdn("sel._domainkey.example.test"), RecordType::TXT)
            .unwrap();
        let RData::TXT(txt) = &txt[0].data else {
            panic!("not TXT")
        };
        assert_eq!(&*txt.txt_data[0], b"v=DKIM1; k=rsa");
        let ptr_owner = Name::from("192.0.2.25".parse::<IpAddr>().unwrap());
        assert_eq!(z.answer(&ptr_owner, RecordType::PTR).unwrap().1.len(), 1);
        assert!(z.answer(&fqdn("broken.test"), RecordType::A).unwrap().0 == ResponseCode::ServFail);
        assert!(z.answer(&fqdn("slow.test"), RecordType::A).is_none());
    }

    #[test]
    fn zone_text_errors_name_the_line() {
        let err = Zone::parse("a.test A 127.0.0.1\nb.test MX ten mx.test").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("MX preference"), "{err}");
        assert!(Zone::parse("a.test WKS 1").is_err());
        assert!(Zone::parse("a.test A 1.2.3").is_err());
    }

    #[test]
    fn long_txt_is_split_at_255_bytes() {
        let text = "k".repeat(600);
        let z = Zone::new().txt("t.test", &text);
        let (_, answers) = z.answer(&fqdn("t.test"), RecordType::TXT).unwrap();
        let RData::TXT(txt) = &answers[0].data else {
            panic!("not TXT")
        };
        let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lens, [255, 255, 90]);
    }
}
