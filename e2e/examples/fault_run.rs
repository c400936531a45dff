//! The fault-injection run: N messages through the whole chain while a driver kills and
//! breaks its parts at random (seeded) moments; at the end every message must have arrived,
//! intact, at the right recipient, every duplicate must be explained by a kill in a documented
//! window, and every queue and the spool must be empty. See docs/reliability.md.
//!
//! ```text
//! scripts/fault-run [--messages N] [--seed S] [--faults F] [--concurrency C]
//! ```
//!
//! Real processes: `msmtp` (one process per submission attempt) -> `mailman` -> `postoffice`
//! -> `beanstalkd -b` -> two `worker`s -> a testkit `SmtpReceiver` on `127.0.77.2:25`, whose
//! MX the testkit `DnsServer` serves. mailman, postoffice and the workers are the binaries in
//! `--bin-dir` (default: the directory this example was built into, e.g. `target/debug`).
//!
//! Faults (the kinds are dealt in shuffled rounds, so each kind comes once per round; each is
//! triggered when the count of accepted submissions reaches a seeded milestone between 5 % and
//! 75 % of N; the last 20 % of the messages wait until every fault was injected):
//! SIGKILL + restart of mailman, the postoffice, each worker and beanstalkd; the receiver
//! stopped, answering 451/421 at random, cutting connections mid-DATA; the DNS server silent;
//! the mailman spool filled to its cap (postoffice down until the clients get `452 4.3.1`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Faults, Received, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

const SECRET: &str = "fault-run-secret-0123456789abcdef0123456789abcdef";
const MAILMAN_FQDN: &str = "web1.fault.test";
const SENDER: &str = "app@sender.fault.test";
const SENDER_DOMAIN: &str = "sender.fault.test";
const RCPT_DOMAIN: &str = "rcpt.fault.test";
const CLIENT_HELO: &str = "client.fault.test";
/// `127.0.NET.x`: .1 services, .2 the recipients' MX, .3 the sender's MX, .9 the clients.
const NET: u8 = 77;
const WORKERS: usize = 2;
/// mailman's spool cap and message limit for the run (small, so the spool can be filled).
const SPOOL_MAX: u64 = 128 * 1024;
/// Faults are planned between these shares of the messages (per cent, accepted count)...
const FAULTS_FROM: usize = 5;
const FAULTS_UNTIL: usize = 75;
/// ...and the messages from this share on wait until every fault was injected, so that every
/// fault meets traffic; a spool-full fault may take them early to fill the spool.
const HOLD_FROM: usize = 80;
const MAX_MESSAGE: u64 = 64 * 1024;
/// A worker (or beanstalkd) kill this long around a copy's 250 explains a second copy.
const WORKER_WINDOW_BEFORE: Duration = Duration::from_secs(1);
const WORKER_WINDOW_AFTER: Duration = Duration::from_secs(3);
/// Most attempts one message may take before the run gives up on it.
const MAX_ATTEMPTS: usize = 1000;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, NET, last)
}

struct Options {
    messages: usize,
    seed: u64,
    faults: usize,
    concurrency: usize,
    bin_dir: PathBuf,
    settle: Duration,
    keep: bool,
}

fn usage() -> &'static str {
    "fault_run [--messages N (1000)] [--seed S (random)] [--faults F (10 + N/100)] \
     [--concurrency C (8)] [--bin-dir DIR] [--settle-timeout SECS (300)] [--keep]"
}

fn options() -> anyhow::Result<Options> {
    let default_bins = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("where is target/<profile>?")?;
    let mut o = Options {
        messages: 1000,
        seed: SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 % 1_000_000_007,
        faults: 0,
        concurrency: 8,
        bin_dir: default_bins,
        settle: Duration::from_secs(300),
        keep: false,
    };
    let mut faults = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--messages" => o.messages = value()?.parse()?,
            "--seed" => o.seed = value()?.parse()?,
            "--faults" => faults = Some(value()?.parse()?),
            "--concurrency" => o.concurrency = value()?.parse()?,
            "--bin-dir" => o.bin_dir = value()?.into(),
            "--settle-timeout" => o.settle = Duration::from_secs(value()?.parse()?),
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    o.faults = faults.unwrap_or(10 + o.messages / 100);
    if o.messages == 0 || o.concurrency == 0 {
        bail!("--messages and --concurrency must be at least 1");
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// One of our binaries, run as a child process with its log appended to a file.
struct Proc {
    name: String,
    program: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    ready: Ready,
}

enum Ready {
    /// Accepts TCP connections here.
    Tcp(SocketAddr),
    /// Answers 200 here.
    Http(String),
    /// Running is enough.
    Started,
}

impl Proc {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the process and waits (up to 30 s) until it is ready.
    async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited at start ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            let up = match &self.ready {
                Ready::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                Ready::Http(url) => http
                    .get(url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                Ready::Started => true,
            };
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after 30 s; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, like a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, if the process ended by itself.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

struct Msg {
    id: String,
    rcpt: String,
    /// What msmtp reads (LF line ends, as an application writes it).
    input: Vec<u8>,
    /// SHA-256 of the body as it must arrive (CRLF line ends).
    body_hash: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Message `n` of the run with `seed`: a unique id, its own recipient, a random body with
/// dot-leading lines, a lone "." line and empty lines (SMTP transparency), 0.1-6 KB.
fn make_message(seed: u64, n: usize) -> Msg {
    let mut rng = StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let id = format!("F{seed}-{n:06}");
    let rcpt = format!("u{n}@{RCPT_DOMAIN}");
    let mut lines: Vec<String> = Vec::new();
    for _ in 0..rng.gen_range(2..60) {
        let len = rng.gen_range(0..120);
        let mut line: String = (0..len)
            .map(|_| rng.gen_range(b' '..=b'~') as char)
            .collect();
        match rng.gen_range(0..10) {
            0 => line.insert(0, '.'),
            1 => line = ".".into(),
            _ => {}
        }
        lines.push(line.trim_end().to_string());
    }
    let body_crlf: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    let body_lf: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let body_hash = sha256_hex(body_crlf.as_bytes());
    let headers = format!(
        "From: <{SENDER}>\nTo: <{rcpt}>\nSubject: fault run {id}\nDate: {}\n\
         Message-ID: <{id}@{SENDER_DOMAIN}>\nX-Fault-Id: {id}\nX-Body-Hash: {body_hash}\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n",
        httpdate::fmt_http_date(SystemTime::now()).replace(" GMT", " +0000"),
    );
    let mut input = headers.into_bytes();
    input.extend_from_slice(body_lf.as_bytes());
    Msg {
        id,
        rcpt,
        input,
        body_hash,
    }
}

// ---------------------------------------------------------------------------------------------
// The sender: msmtp per attempt, retrying temporary failures like an MTA's user would.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Outcome {
    Sent,
    /// `452 4.3.1`: mailman's spool is full.
    SpoolFull,
    /// Another 4xx.
    Tempfail,
    /// No connection, or it broke.
    Unavailable,
    /// msmtp did not finish in time.
    Timeout,
    /// A 5xx: must not happen; the run fails.
    Permanent,
}

struct Attempt {
    start: SystemTime,
    end: SystemTime,
    outcome: Outcome,
}

#[derive(Default)]
struct SendStats {
    accepted: AtomicUsize,
    spool_full: AtomicU64,
    outcomes: Mutex<BTreeMap<Outcome, u64>>,
    attempts: Mutex<HashMap<usize, Vec<Attempt>>>,
    failed: Mutex<Vec<String>>,
    done: AtomicBool,
    /// Every planned fault was injected: the held-back messages may go.
    faults_done: AtomicBool,
    /// A spool-full fault is filling the spool: the held-back messages may go.
    filling: AtomicBool,
}

fn classify(code: Option<i32>, stderr: &str) -> Outcome {
    if code == Some(0) {
        return Outcome::Sent;
    }
    // msmtp: "server message: 452 4.3.1 ..." and EX_TEMPFAIL (75) for 4xx.
    if stderr.contains("452 4.3.1") {
        return Outcome::SpoolFull;
    }
    let server_said = |class: char| {
        stderr
            .split("server message: ")
            .skip(1)
            .any(|rest| rest.starts_with(class))
    };
    if server_said('5') {
        Outcome::Permanent
    } else if server_said('4') {
        Outcome::Tempfail
    } else {
        Outcome::Unavailable
    }
}

async fn msmtp_once(mailman: SocketAddr, msg: &Msg) -> (Outcome, String) {
    let args = [
        "--file=/dev/null".to_string(),
        format!("--host={}", mailman.ip()),
        format!("--port={}", mailman.port()),
        format!("--source-ip={}", ip(9)),
        format!("--domain={CLIENT_HELO}"),
        format!("--from={SENDER}"),
        "--auth=off".into(),
        "--tls=off".into(),
        "--timeout=20".into(),
        msg.rcpt.clone(),
    ];
    let child = tokio::process::Command::new("/usr/bin/msmtp")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (Outcome::Permanent, format!("cannot run msmtp: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means msmtp already gave up; its exit status tells why.
        let _ = stdin.write_all(&msg.input).await;
    }
    match tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            (classify(out.status.code(), &stderr), stderr)
        }
        Ok(Err(e)) => (Outcome::Unavailable, e.to_string()),
        Err(_) => (Outcome::Timeout, "msmtp took over 30 s".into()),
    }
}

async fn send_all(
    mailman: SocketAddr,
    messages: Arc<Vec<Msg>>,
    concurrency: usize,
    stats: Arc<SendStats>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let hold_from = messages.len() * HOLD_FROM / 100;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, messages, stats) = (next.clone(), messages.clone(), stats.clone());
        tasks.spawn(async move {
            let mut jitter = StdRng::from_entropy();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(msg) = messages.get(n) else { return };
                while n >= hold_from
                    && !stats.faults_done.load(Ordering::SeqCst)
                    && !stats.filling.load(Ordering::SeqCst)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut backoff = Duration::from_millis(50);
                for attempt in 0.. {
                    let start = SystemTime::now();
                    let (outcome, stderr) = msmtp_once(mailman, msg).await;
                    let end = SystemTime::now();
                    *stats.outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                    stats
                        .attempts
                        .lock()
                        .unwrap()
                        .entry(n)
                        .or_default()
                        .push(Attempt {
                            start,
                            end,
                            outcome,
                        });
                    match outcome {
                        Outcome::Sent => {
                            stats.accepted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Outcome::Permanent => {
                            stats.failed.lock().unwrap().push(format!(
                                "{}: permanent failure: {}",
                                msg.id,
                                stderr.trim()
                            ));
                            break;
                        }
                        Outcome::SpoolFull => {
                            stats.spool_full.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                    if attempt + 1 >= MAX_ATTEMPTS {
                        stats.failed.lock().unwrap().push(format!(
                            "{}: gave up after {MAX_ATTEMPTS} attempts; last: {}",
                            msg.id,
                            stderr.trim()
                        ));
                        break;
                    }
                    let pause = backoff.mul_f64(jitter.gen_range(0.5..1.5));
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    stats.done.store(true, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------------
// Faults

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    KillMailman,
    KillPostoffice,
    KillWorker(usize),
    KillBeanstalkd,
    SmtpStopped,
    SmtpTempfail,
    SmtpDropMidData,
    DnsTimeout,
    SpoolFull,
}

impl Kind {
    fn all() -> Vec<Kind> {
        let mut kinds = vec![
            Kind::KillMailman,
            Kind::KillPostoffice,
            Kind::KillBeanstalkd,
        ];
        kinds.extend((0..WORKERS).map(Kind::KillWorker));
        kinds.extend([
            Kind::SmtpStopped,
            Kind::SmtpTempfail,
            Kind::SmtpDropMidData,
            Kind::DnsTimeout,
            Kind::SpoolFull,
        ]);
        kinds
    }

    fn name(self) -> String {
        match self {
            Kind::KillMailman => "SIGKILL mailman".into(),
            Kind::KillPostoffice => "SIGKILL postoffice".into(),
            Kind::KillWorker(i) => format!("SIGKILL worker{i}"),
            Kind::KillBeanstalkd => "SIGKILL beanstalkd".into(),
            Kind::SmtpStopped => "receiver stopped".into(),
            Kind::SmtpTempfail => "receiver 451/421 at random".into(),
            Kind::SmtpDropMidData => "receiver drops mid-DATA".into(),
            Kind::DnsTimeout => "DNS times out".into(),
            Kind::SpoolFull => "mailman spool filled to its cap".into(),
        }
    }
}

/// One planned fault: when (accepted submissions), what, and its seeded parameters.
#[derive(Clone, Debug)]
struct Planned {
    at_accepted: usize,
    kind: Kind,
    /// How long the fault lasts (timed faults) or the pause before a restart (kills).
    duration: Duration,
}

fn plan(seed: u64, messages: usize, faults: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds = Vec::new();
    while kinds.len() < faults {
        let mut round = Kind::all();
        round.shuffle(&mut rng);
        kinds.extend(round);
    }
    kinds.truncate(faults);
    let low = messages * FAULTS_FROM / 100;
    let high = (messages * FAULTS_UNTIL / 100).max(low + 1);
    let mut at: Vec<usize> = (0..faults).map(|_| rng.gen_range(low..high)).collect();
    at.sort_unstable();
    kinds
        .into_iter()
        .zip(at)
        .map(|(kind, at_accepted)| {
            let duration = match kind {
                Kind::KillMailman
                | Kind::KillPostoffice
                | Kind::KillWorker(_)
                | Kind::KillBeanstalkd => Duration::from_millis(rng.gen_range(0..1000)),
                Kind::SmtpStopped | Kind::DnsTimeout => {
                    Duration::from_millis(rng.gen_range(1000..4000))
                }
                Kind::SmtpTempfail | Kind::SmtpDropMidData => {
                    Duration::from_millis(rng.gen_range(2000..5000))
                }
                Kind::SpoolFull => Duration::from_millis(rng.gen_range(500..2000)),
            };
            Planned {
                at_accepted,
                kind,
                duration,
            }
        })
        .collect()
}

/// A fault as it happened.
#[derive(Clone, Debug)]
struct Injected {
    kind: Kind,
    start: SystemTime,
    end: SystemTime,
    note: String,
}

struct Stack {
    beanstalkd: Beanstalkd,
    dns: DnsServer,
    rcpt_mx: SmtpReceiver,
    sender_mx: SmtpReceiver,
    mailman: Proc,
    postoffice: Proc,
    workers: Vec<Proc>,
    spool: PathBuf,
    /// Processes that ended by themselves and were restarted: (name, status).
    unexpected_exits: Vec<(String, String)>,
}

impl Stack {
    fn procs(&mut self) -> impl Iterator<Item = &mut Proc> {
        [&mut self.mailman, &mut self.postoffice]
            .into_iter()
            .chain(self.workers.iter_mut())
    }

    /// Restarts any process that ended by itself (a supervisor's job); each is reported.
    async fn supervise(&mut self) -> anyhow::Result<()> {
        let mut restart = Vec::new();
        for (i, p) in self.procs().enumerate() {
            if let Some(status) = p.exited() {
                restart.push((i, p.name.clone(), status.to_string()));
            }
        }
        for (i, name, status) in restart {
            eprintln!("!! {name} exited by itself ({status}); restarting");
            self.unexpected_exits.push((name, status));
            if let Some(p) = self.procs().nth(i) {
                p.start().await?;
            }
        }
        Ok(())
    }

    async fn inject(&mut self, fault: &Planned, stats: &SendStats) -> anyhow::Result<Injected> {
        let start = SystemTime::now();
        let mut note = String::new();
        let pause = fault.duration;
        match fault.kind {
            Kind::KillMailman => {
                self.mailman.kill();
                tokio::time::sleep(pause).await;
                self.mailman.start().await?;
            }
            Kind::KillPostoffice => {
                self.postoffice.kill();
                tokio::time::sleep(pause).await;
                self.postoffice.start().await?;
            }
            Kind::KillWorker(i) => {
                self.workers[i].kill();
                tokio::time::sleep(pause).await;
                self.workers[i].start().await?;
            }
            Kind::KillBeanstalkd => {
                self.beanstalkd.stop();
                tokio::time::sleep(pause).await;
                self.beanstalkd.restart();
            }
            Kind::SmtpStopped => {
                self.rcpt_mx.pause().await;
                tokio::time::sleep(pause).await;
                self.rcpt_mx.resume().await?;
            }
            Kind::SmtpTempfail => {
                self.rcpt_mx.set_faults(Faults {
                    tempfail_per_mille: 300,
                    ..Faults::default()
                });
                tokio::time::sleep(pause).await;
                self.rcpt_mx.set_faults(Faults::default());
            }
            Kind::SmtpDropMidData => {
                self.rcpt_mx.set_faults(Faults {
                    drop_in_data_per_mille: 300,
                    ..Faults::default()
                });
                tokio::time::sleep(pause).await;
                self.rcpt_mx.set_faults(Faults::default());
            }
            Kind::DnsTimeout => {
                self.dns.set_silent(true);
                tokio::time::sleep(pause).await;
                self.dns.set_silent(false);
            }
            Kind::SpoolFull => {
                // With the postoffice gone, mailman keeps every message in its spool until
                // the cap; then the clients get 452 4.3.1 and must retry.
                let before = stats.spool_full.load(Ordering::SeqCst);
                stats.filling.store(true, Ordering::SeqCst);
                self.postoffice.kill();
                let deadline = Instant::now() + Duration::from_secs(30);
                while stats.spool_full.load(Ordering::SeqCst) == before
                    && Instant::now() < deadline
                    && !stats.done.load(Ordering::SeqCst)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                stats.filling.store(false, Ordering::SeqCst);
                let reached = stats.spool_full.load(Ordering::SeqCst) > before;
                let _ = write!(
                    note,
                    "{} KB spooled, cap {}",
                    spool_bytes(&self.spool) / 1024,
                    match (reached, stats.done.load(Ordering::SeqCst)) {
                        (true, _) => "reached",
                        (false, true) => "NOT reached: every message was already submitted",
                        (false, false) => "NOT reached within 30 s",
                    }
                );
                tokio::time::sleep(pause).await;
                self.postoffice.start().await?;
            }
        }
        Ok(Injected {
            kind: fault.kind,
            start,
            end: SystemTime::now(),
            note,
        })
    }

    /// Jobs in every tube, in any state (hedwig-holds is reported apart: it keeps the hold
    /// list as one buried job by design).
    async fn queued(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut client = beanstalk::Client::connect(self.beanstalkd.url()).await?;
        let mut out = BTreeMap::new();
        for tube in client.list_tubes().await? {
            let s = client.stats_tube(&tube).await?;
            let n = [
                "current-jobs-ready",
                "current-jobs-delayed",
                "current-jobs-reserved",
                "current-jobs-buried",
            ]
            .iter()
            .map(|k| s.get_u64(k).unwrap_or(0))
            .sum();
            out.insert(tube, n);
        }
        Ok(out)
    }
}

/// Messages in mailman's spool: `.msg`, `.tmp`, `.damaged` files and `rejected/`.
fn spool_files(spool: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in [spool.to_path_buf(), spool.join("rejected")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
            if path.is_file() && matches!(ext, "msg" | "tmp" | "damaged") {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

fn spool_bytes(spool: &Path) -> u64 {
    std::fs::read_dir(spool)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "msg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Checking what arrived

/// A header's value in `data` (first occurrence, unfolded enough for our one-line headers).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// How many different `X-Fault-Id`s arrived.
fn distinct_ids(received: &[Received]) -> usize {
    received
        .iter()
        .filter_map(|r| {
            let text = String::from_utf8_lossy(&r.data);
            header(&text, "X-Fault-Id").map(str::to_string)
        })
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// mailman's message id from its `Received:` field (`... id <ID>;`), the first one.
fn mailman_id(head: &str) -> Option<String> {
    let start = head.find("Received:")?;
    let field = &head[start..];
    let at = field.find(" id ")? + 4;
    let id: String = field[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The milliseconds encoded at the start of a hedwig queue/message id.
fn id_time(id: &str) -> Option<SystemTime> {
    let millis = u64::from_str_radix(id.get(..12)?, 16).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(millis))
}

struct Copy {
    at: SystemTime,
    mailman_id: Option<String>,
}

fn within(t: SystemTime, from: SystemTime, to: SystemTime) -> bool {
    t >= from && t <= to
}

/// Why the `i`-th copy (by arrival) of message `n` exists, or `None` if no injected fault
/// explains it.
fn explain(copies: &[Copy], i: usize, attempts: &[Attempt], faults: &[Injected]) -> Option<String> {
    let this = &copies[i];
    let earlier = &copies[..i];
    let kills = |pred: &dyn Fn(Kind) -> bool, from: SystemTime, to: SystemTime| {
        faults
            .iter()
            .filter(|f| pred(f.kind) && within(f.start, from, to))
            .map(|f| f.kind.name())
            .next()
    };
    let same_submission = earlier
        .iter()
        .filter(|c| c.mailman_id.is_some() && c.mailman_id == this.mailman_id)
        .collect::<Vec<_>>();
    if let Some(first) = same_submission.first() {
        // One mailman submission delivered twice. Either a worker (or beanstalkd) died
        // between the remote 250 and the job's delete...
        for c in &same_submission {
            let from = c.at.checked_sub(WORKER_WINDOW_BEFORE).unwrap_or(c.at);
            let to = c.at + WORKER_WINDOW_AFTER;
            if let Some(k) = kills(
                &|k| matches!(k, Kind::KillWorker(_) | Kind::KillBeanstalkd),
                from,
                to,
            ) {
                return Some(format!("{k} between the remote 250 and the delete"));
            }
        }
        // ...or one died between putting a retry of the job (a deferral) and deleting the job
        // it replaces: the reserved job came back and two jobs of the message went on, each
        // delivering it once. The kill then fell between the queueing and the earlier copy.
        let queued = first
            .mailman_id
            .as_deref()
            .and_then(id_time)
            .unwrap_or(first.at);
        if let Some(k) = kills(
            &|k| matches!(k, Kind::KillWorker(_) | Kind::KillBeanstalkd),
            queued,
            first.at,
        ) {
            return Some(format!(
                "{k} between a retry's put and the delete of the job it replaced"
            ));
        }
        // ...or the postoffice that queued it died before mailman removed its spool file,
        // and mailman's retry (same id) reached a new postoffice without the id memory.
        if let Some(k) = kills(
            &|k| matches!(k, Kind::KillPostoffice | Kind::SpoolFull),
            queued,
            this.at,
        ) {
            return Some(format!(
                "{k} between its 200 and mailman's spool removal (duplicate-id memory lost)"
            ));
        }
        return None;
    }
    // A second submission by the client: an attempt that failed although mailman had
    // spooled the message: mailman was killed after its fsync and before the client read 250.
    for a in attempts.iter().filter(|a| a.outcome != Outcome::Sent) {
        let to = a.end + Duration::from_millis(500);
        if let Some(k) = kills(&|k| k == Kind::KillMailman, a.start, to) {
            return Some(format!(
                "{k} after spooling, before the client read 250 (the client sent it again)"
            ));
        }
    }
    None
}

struct Verdict {
    delivered: usize,
    lost: Vec<String>,
    corrupted: Vec<String>,
    wrong_rcpt: Vec<String>,
    unknown: Vec<String>,
    duplicates: BTreeMap<String, usize>,
    unexplained: Vec<String>,
    copies: usize,
}

fn check(
    messages: &[Msg],
    received: &[Received],
    attempts: &HashMap<usize, Vec<Attempt>>,
    faults: &[Injected],
) -> Verdict {
    let index: HashMap<&str, usize> = messages
        .iter()
        .enumerate()
        .map(|(n, m)| (m.id.as_str(), n))
        .collect();
    let mut v = Verdict {
        delivered: 0,
        lost: Vec::new(),
        corrupted: Vec::new(),
        wrong_rcpt: Vec::new(),
        unknown: Vec::new(),
        duplicates: BTreeMap::new(),
        unexplained: Vec::new(),
        copies: received.len(),
    };
    let mut copies: HashMap<usize, Vec<Copy>> = HashMap::new();
    for r in received {
        let text = String::from_utf8_lossy(&r.data);
        let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = r
            .data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| &r.data[p + 4..])
            .unwrap_or(&[]);
        let Some(n) = header(head, "X-Fault-Id").and_then(|id| index.get(id).copied()) else {
            v.unknown.push(format!(
                "to {:?}, {} bytes, no known X-Fault-Id",
                r.rcpt_to,
                r.data.len()
            ));
            continue;
        };
        let m = &messages[n];
        let hash = sha256_hex(body);
        if hash != m.body_hash || header(head, "X-Body-Hash") != Some(m.body_hash.as_str()) {
            v.corrupted.push(format!(
                "{}: body hash {hash}, expected {}",
                m.id, m.body_hash
            ));
        }
        if r.rcpt_to != [m.rcpt.clone()] || r.mail_from != SENDER {
            v.wrong_rcpt.push(format!(
                "{}: MAIL FROM <{}> RCPT TO {:?}, expected <{SENDER}> [{}]",
                m.id, r.mail_from, r.rcpt_to, m.rcpt
            ));
        }
        copies.entry(n).or_default().push(Copy {
            at: r.at,
            mailman_id: mailman_id(head),
        });
    }
    let none = Vec::new();
    for (n, m) in messages.iter().enumerate() {
        let Some(cs) = copies.get_mut(&n) else {
            v.lost.push(m.id.clone());
            continue;
        };
        v.delivered += 1;
        cs.sort_by_key(|c| c.at);
        for i in 1..cs.len() {
            let attempts = attempts.get(&n).unwrap_or(&none);
            match explain(cs, i, attempts, faults) {
                Some(cause) => *v.duplicates.entry(cause).or_default() += 1,
                None => v.unexplained.push(format!(
                    "{}: copy {} at {:?} (mailman ids {:?}), {} submission attempt(s)",
                    m.id,
                    i + 1,
                    cs[i].at,
                    cs.iter().map(|c| c.mailman_id.clone()).collect::<Vec<_>>(),
                    attempts.len()
                )),
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// The run

/// The post office's data directory: its ledger (SQLite) lives there.
fn ledger_dir(work: &Path) -> PathBuf {
    work.join("postoffice-data")
}

fn ledger_url(work: &Path) -> String {
    format!("sqlite://{}", ledger_dir(work).join("ledger.db").display())
}

/// What the delivery ledger says about the run (issue 13): every delivered copy is a `sent`
/// recipient of a message the ledger knows by mailman's id, and every message it knows
/// reached a final outcome. Read after the queues (the events tube among them) are empty.
struct LedgerVerdict {
    messages: usize,
    events: u64,
    unsent_copies: Vec<String>,
    not_final: Vec<String>,
}

async fn check_ledger(url: &str, received: &[Received]) -> anyhow::Result<LedgerVerdict> {
    let store = hedwig_ledger::Store::open(url).await?;
    let mut by_edge: HashMap<String, Vec<hedwig_ledger::Message>> = HashMap::new();
    let mut messages = 0;
    let mut not_final = Vec::new();
    let mut filter = hedwig_ledger::Filter {
        limit: Some(hedwig_ledger::model::MAX_LIMIT),
        ..Default::default()
    };
    loop {
        let page = store.search(&filter).await?;
        for m in page.messages {
            messages += 1;
            if m.final_at.is_none() {
                not_final.push(format!(
                    "{} ({}, {})",
                    m.queue_id,
                    m.kind,
                    m.status.as_str()
                ));
            }
            if let Some(edge) = m.edge_id.clone() {
                by_edge.entry(edge).or_default().push(m);
            }
        }
        match page.next {
            Some(next) => filter.cursor = Some(next),
            None => break,
        }
    }
    let mut unsent_copies = Vec::new();
    for r in received {
        let text = String::from_utf8_lossy(&r.data);
        let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let Some(edge) = mailman_id(head) else {
            unsent_copies.push(format!("a copy to {:?} without mailman's id", r.rcpt_to));
            continue;
        };
        let sent = match by_edge.get(&edge) {
            Some(ms) => {
                let mut any = false;
                for m in ms {
                    let timeline = store.timeline(&m.queue_id).await?;
                    any |= timeline.is_some_and(|t| {
                        t.recipients
                            .iter()
                            .any(|rc| r.rcpt_to.contains(&rc.recipient) && rc.status == "sent")
                    });
                }
                any
            }
            None => false,
        };
        if !sent {
            unsent_copies.push(format!("mailman id {edge} to {:?}", r.rcpt_to));
        }
    }
    unsent_copies.sort();
    unsent_copies.dedup();
    let events = store.event_count().await?;
    store.close().await;
    Ok(LedgerVerdict {
        messages,
        events,
        unsent_copies,
        not_final,
    })
}

fn write_configs(
    work: &Path,
    spool: &Path,
    mailman: SocketAddr,
    postoffice: SocketAddr,
    beanstalkd: &str,
    dns: SocketAddr,
) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let key = hedwig_core::key::derive_key(SECRET, MAILMAN_FQDN);
    let m = work.join("mailman.yaml");
    std::fs::write(
        &m,
        format!(
            "listen: [\"{mailman}\"]\nhttp_listen: \"\"\nfqdn: {MAILMAN_FQDN}\nkey: {key}\n\
             postoffice: [\"http://{postoffice}/\"]\nspool_dir: {}\nspool_max: {SPOOL_MAX}\n\
             max_message_size: {MAX_MESSAGE}\nforward_deadline: 2s\nforward_timeout: 5s\n\
             retry_min: 100ms\nretry_max: 1s\nshutdown_timeout: 1s\n",
            spool.display()
        ),
    )?;
    let p = work.join("postoffice.yaml");
    std::fs::write(
        &p,
        format!(
            "listen: \"{postoffice}\"\nbeanstalkd: \"{beanstalkd}\"\nsecret: {SECRET}\n\
             max_message_size: {MAX_MESSAGE}\njob_ttr: 60s\nstartup_wait: 30s\n\
             shutdown_timeout: 1s\ndefault_policy: {{rate_per_minute: 0}}\n\
             data_dir: {}\nledger: {{writer: true, check_interval: 1s}}\n",
            ledger_dir(work).display()
        ),
    )?;
    let w = work.join("worker.yaml");
    std::fs::write(
        &w,
        format!(
            "beanstalkd: \"{beanstalkd}\"\nconcurrency: 4\nhostname: relay.fault.test\n\
             nameservers: [\"{dns}\"]\nipv6: false\nhttp_listen: \"\"\njob_ttr: 60s\n\
             shutdown_grace: 1s\n\
             timeouts: {{connect: 2s, greeting: 5s, helo: 5s, mail: 5s, rcpt: 5s, \
             data_init: 5s, data_block: 5s, data_done: 5s}}\n\
             retry: {{first: 500ms, max_delay: 2s, max_lifetime: 1h}}\n\
             limits: {{cooldown: 1s, wait: 5s}}\n"
        ),
    )?;
    Ok((m, p, w))
}

fn free_port(ip: Ipv4Addr) -> u16 {
    hedwig_testkit::net::free_port(ip)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fault run: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let o = options()?;
    let began = Instant::now();
    println!(
        "fault run: seed {} ({} messages, {} faults, {} concurrent clients); \
         repeat with --seed {} --messages {} --faults {}",
        o.seed, o.messages, o.faults, o.concurrency, o.seed, o.messages, o.faults
    );
    for bin in ["mailman", "postoffice", "worker"] {
        if !o.bin_dir.join(bin).is_file() {
            bail!(
                "{} missing: cargo build first",
                o.bin_dir.join(bin).display()
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("hedwig-fault-run.")
        .tempdir()?;
    let spool = work.path().join("spool");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    println!("work dir (logs, spool): {}", work.path().display());

    // The receiving side: DNS and two MX on port 25.
    let zone = Zone::new()
        .mx(RCPT_DOMAIN, 10, &format!("mx.{RCPT_DOMAIN}"))
        .a(&format!("mx.{RCPT_DOMAIN}"), &ip(2).to_string())
        .mx(SENDER_DOMAIN, 10, &format!("mx.{SENDER_DOMAIN}"))
        .a(&format!("mx.{SENDER_DOMAIN}"), &ip(3).to_string());
    let dns = DnsServer::start(zone).await;
    let remember = o.messages * 2 + 1000;
    let rcpt_mx = SmtpReceiver::start(
        SocketAddr::from((ip(2), 25)),
        Behaviour::new()
            .hostname("mx.rcpt.fault.test")
            .remember(remember),
    )
    .await
    .context("SMTP receiver on 127.0.77.2:25 (run as root)")?;
    let sender_mx = SmtpReceiver::start(
        SocketAddr::from((ip(3), 25)),
        Behaviour::new().hostname("mx.sender.fault.test"),
    )
    .await
    .context("SMTP receiver on 127.0.77.3:25")?;
    let beanstalkd = Beanstalkd::start();

    let mailman_addr = SocketAddr::from((ip(1), free_port(ip(1))));
    let postoffice_addr = SocketAddr::from((ip(1), free_port(ip(1))));
    let (mc, pc, wc) = write_configs(
        work.path(),
        &spool,
        mailman_addr,
        postoffice_addr,
        &beanstalkd.url(),
        dns.addr(),
    )?;
    let proc_ = |name: &str, bin: &str, config: &Path, ready: Ready| Proc {
        name: name.into(),
        program: o.bin_dir.join(bin),
        config: config.to_path_buf(),
        log: logs.join(format!("{name}.log")),
        child: None,
        ready,
    };
    let mut stack = Stack {
        beanstalkd,
        dns,
        rcpt_mx,
        sender_mx,
        mailman: proc_("mailman", "mailman", &mc, Ready::Tcp(mailman_addr)),
        postoffice: proc_(
            "postoffice",
            "postoffice",
            &pc,
            Ready::Http(format!("http://{postoffice_addr}/health")),
        ),
        workers: (0..WORKERS)
            .map(|i| proc_(&format!("worker{i}"), "worker", &wc, Ready::Started))
            .collect(),
        spool: spool.clone(),
        unexpected_exits: Vec::new(),
    };
    stack.postoffice.start().await?;
    for w in &mut stack.workers {
        w.start().await?;
    }
    stack.mailman.start().await?;

    let messages: Arc<Vec<Msg>> =
        Arc::new((0..o.messages).map(|n| make_message(o.seed, n)).collect());
    let planned = plan(o.seed, o.messages, o.faults);
    let stats = Arc::new(SendStats::default());
    stats
        .faults_done
        .store(planned.is_empty(), Ordering::SeqCst);
    let sender = tokio::spawn(send_all(
        mailman_addr,
        messages.clone(),
        o.concurrency,
        stats.clone(),
    ));

    // The driver: each planned fault when its milestone is reached; between faults, restart
    // whatever died by itself.
    let mut injected: Vec<Injected> = Vec::new();
    let mut next = 0;
    let mut last_report = Instant::now();
    while !stats.done.load(Ordering::SeqCst) || next < planned.len() {
        stack.supervise().await?;
        let accepted = stats.accepted.load(Ordering::SeqCst);
        let sending_over = stats.done.load(Ordering::SeqCst);
        if let Some(fault) = planned.get(next) {
            if accepted >= fault.at_accepted || sending_over {
                let f = stack.inject(fault, &stats).await?;
                println!(
                    "[{:>6.1}s] fault {:>3}/{}: {} ({} ms{}{})",
                    began.elapsed().as_secs_f64(),
                    next + 1,
                    planned.len(),
                    f.kind.name(),
                    f.end
                        .duration_since(f.start)
                        .unwrap_or_default()
                        .as_millis(),
                    if f.note.is_empty() { "" } else { "; " },
                    f.note
                );
                injected.push(f);
                next += 1;
                if next == planned.len() {
                    stats.faults_done.store(true, Ordering::SeqCst);
                }
                continue;
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "[{:>6.1}s] accepted {accepted}/{}, delivered copies {}",
                began.elapsed().as_secs_f64(),
                o.messages,
                stack.rcpt_mx.received().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.await?;
    let send_elapsed = began.elapsed();
    println!(
        "[{:>6.1}s] all {} submissions done; waiting for the queues to drain",
        send_elapsed.as_secs_f64(),
        stats.accepted.load(Ordering::SeqCst)
    );

    // Settle: every message arrived, spool and queues empty, then a quiet period in which
    // nothing more may arrive.
    let settle_deadline = Instant::now() + o.settle;
    let mut settled = false;
    while Instant::now() < settle_deadline {
        stack.supervise().await?;
        let queued = stack.queued().await.unwrap_or_default();
        let busy: u64 = queued
            .iter()
            .filter(|(t, _)| t.as_str() != hedwig_queue::tubes::TUBE_HOLDS)
            .map(|(_, n)| n)
            .sum();
        let quiet = busy == 0 && spool_files(&spool).is_empty();
        // Counting the distinct ids walks every copy: only worth it once the queues look empty.
        let ids = if quiet || last_report.elapsed() > Duration::from_secs(10) {
            distinct_ids(&stack.rcpt_mx.received())
        } else {
            0
        };
        if quiet && ids >= o.messages {
            settled = true;
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "[{:>6.1}s] draining: {} of {} ids arrived, queued {queued:?}, {} in spool",
                began.elapsed().as_secs_f64(),
                ids,
                o.messages,
                spool_files(&spool).len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before_quiet = stack.rcpt_mx.received().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = stack.rcpt_mx.received();
    let late = received.len() - before_quiet;
    let queued = stack.queued().await?;
    let spool_left = spool_files(&spool);
    let bounces = stack.sender_mx.received().len();
    let elapsed = began.elapsed();

    let attempts = std::mem::take(&mut *stats.attempts.lock().unwrap());
    let verdict = check(&messages, &received, &attempts, &injected);
    let ledger = check_ledger(&ledger_url(work.path()), &received).await;
    let failed_submissions = stats.failed.lock().unwrap().clone();
    let rcpt_faults = stack.rcpt_mx.fault_counts();

    // Summary.
    let mut by_kind: BTreeMap<Kind, (usize, String)> = BTreeMap::new();
    for f in &injected {
        let e = by_kind.entry(f.kind).or_default();
        e.0 += 1;
        if !f.note.is_empty() {
            e.1 = f.note.clone();
        }
    }
    let outcomes = stats.outcomes.lock().unwrap().clone();
    let retried: u64 = outcomes
        .iter()
        .filter(|(k, _)| **k != Outcome::Sent)
        .map(|(_, n)| n)
        .sum();
    println!("\n== fault run summary (seed {}) ==", o.seed);
    println!("messages:            {}", o.messages);
    println!(
        "accepted by mailman: {} (failed submissions: {})",
        stats.accepted.load(Ordering::SeqCst),
        failed_submissions.len()
    );
    println!("faults injected:     {}", injected.len());
    for (kind, (n, note)) in &by_kind {
        println!(
            "  {:<34} {n}{}",
            kind.name(),
            if note.is_empty() {
                String::new()
            } else {
                format!("  (last: {note})")
            }
        );
    }
    println!(
        "  receiver fault hits: {} tempfails (451/421), {} cut mid-DATA, {} sessions closed by stop; DNS queries unanswered: {}",
        rcpt_faults.tempfails,
        rcpt_faults.drops_in_data,
        rcpt_faults.closed_by_pause,
        stack.dns.ignored()
    );
    println!("client attempts that failed and were retried: {retried}");
    for (k, n) in &outcomes {
        if *k != Outcome::Sent {
            println!("  {k:?}: {n}");
        }
    }
    println!(
        "delivered:           {} of {} ({} copies)",
        verdict.delivered, o.messages, verdict.copies
    );
    let dup_total: usize = verdict.duplicates.values().sum();
    println!(
        "duplicates:          {} explained, {} unexplained",
        dup_total,
        verdict.unexplained.len()
    );
    for (cause, n) in &verdict.duplicates {
        println!("  {n} x {cause}");
    }
    println!("lost:                {}", verdict.lost.len());
    println!("corrupted:           {}", verdict.corrupted.len());
    println!("wrong recipient:     {}", verdict.wrong_rcpt.len());
    println!("unknown messages:    {}", verdict.unknown.len());
    println!("bounces:             {bounces}");
    println!("left in queues:      {queued:?}");
    match &ledger {
        Ok(l) => println!(
            "ledger:              {} messages, {} events; {} delivered copies without a sent \
             recipient, {} messages without a final outcome",
            l.messages,
            l.events,
            l.unsent_copies.len(),
            l.not_final.len()
        ),
        Err(e) => println!("ledger:              cannot be read: {e:#}"),
    }
    println!("left in spool:       {}", spool_left.len());
    println!("arrived after drain: {late}");
    println!(
        "processes that died by themselves: {:?}",
        stack.unexpected_exits
    );
    println!(
        "elapsed:             {:.1}s (sending {:.1}s)",
        elapsed.as_secs_f64(),
        send_elapsed.as_secs_f64()
    );

    let mut problems = Vec::new();
    let mut list = |what: &str, items: &[String]| {
        if !items.is_empty() {
            problems.push(format!(
                "{what} ({}): {}",
                items.len(),
                items
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    };
    list("lost", &verdict.lost);
    list("corrupted", &verdict.corrupted);
    list("wrong recipient", &verdict.wrong_rcpt);
    list("unknown", &verdict.unknown);
    list("unexplained duplicates", &verdict.unexplained);
    list("failed submissions", &failed_submissions);
    list("left in spool", &spool_left);
    // The ledger's view: every delivered copy has a `sent` event, every message a final
    // outcome (an event whose put failed while beanstalkd restarted waits in the emitter's
    // backlog and is put after it, issue 13).
    match &ledger {
        Ok(l) => {
            list("delivered but not sent in the ledger", &l.unsent_copies);
            list("without a final outcome in the ledger", &l.not_final);
        }
        Err(e) => list("the ledger cannot be read", &[format!("{e:#}")]),
    }
    let left: Vec<String> = queued
        .iter()
        .filter(|(t, n)| t.as_str() != hedwig_queue::tubes::TUBE_HOLDS && **n > 0)
        .map(|(t, n)| format!("{t}: {n}"))
        .collect();
    list("left in queues", &left);
    if !settled {
        problems.push(format!("not settled within {:?}", o.settle));
    }
    if bounces > 0 {
        problems.push(format!("{bounces} bounce(s) reached the sender's MX"));
    }
    if late > 0 {
        problems.push(format!("{late} copies arrived after the queues were empty"));
    }
    let kinds_missing: Vec<String> = Kind::all()
        .into_iter()
        .filter(|k| !by_kind.contains_key(k))
        .map(Kind::name)
        .collect();
    if o.faults >= Kind::all().len() && !kinds_missing.is_empty() {
        problems.push(format!("fault kinds never injected: {kinds_missing:?}"));
    }
    let spool_faults: Vec<&Injected> = injected
        .iter()
        .filter(|f| f.kind == Kind::SpoolFull)
        .collect();
    if !spool_faults.is_empty() && spool_faults.iter().all(|f| f.note.contains("NOT reached")) {
        problems.push("no spool-full fault reached the cap".into());
    }

    let keep = o.keep || !problems.is_empty();
    if keep {
        let kept = work.keep();
        println!("logs kept in {}", kept.display());
    }
    if problems.is_empty() {
        println!("RESULT: PASS (lost = 0)");
        Ok(true)
    } else {
        println!("RESULT: FAIL");
        for p in &problems {
            println!("  - {p}");
        }
        Ok(false)
    }
}

/// The checker itself: it must fail on a loss, a corruption, a wrong recipient and a
/// duplicate without a matching fault (`cargo test -p hedwig-e2e --example fault_run`).
#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + ms)
    }

    /// A received copy of `m` with mailman id made at `id_ms`, received at `at_ms`.
    fn copy_of(m: &Msg, id_ms: u64, at_ms: u64) -> Received {
        let millis = 1_800_000_000_000 + id_ms;
        let data = String::from_utf8(m.input.clone())
            .unwrap()
            .replace('\n', "\r\n");
        let data = format!(
            "Received: from client.fault.test ([127.0.77.9])\r\n\tby {MAILMAN_FQDN} with ESMTP \
             id {millis:012X}00000000ABCD;\r\n\tMon, 1 Jan 2027 00:00:00 +0000\r\n{data}"
        );
        Received {
            mail_from: SENDER.into(),
            mail_params: String::new(),
            rcpt_to: vec![m.rcpt.clone()],
            data: data.into_bytes(),
            tls: false,
            helo: "relay.fault.test".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            at: t(at_ms),
        }
    }

    fn fault(kind: Kind, start_ms: u64) -> Injected {
        Injected {
            kind,
            start: t(start_ms),
            end: t(start_ms + 500),
            note: String::new(),
        }
    }

    fn messages() -> Vec<Msg> {
        (0..3).map(|n| make_message(5, n)).collect()
    }

    #[test]
    fn messages_are_reproducible_and_hash_their_crlf_body() {
        let (a, b) = (make_message(9, 1), make_message(9, 1));
        assert_eq!(a.input, b.input);
        assert_ne!(a.input, make_message(10, 1).input);
        let text = String::from_utf8(a.input.clone()).unwrap();
        let body = text.split_once("\n\n").unwrap().1.replace('\n', "\r\n");
        assert_eq!(sha256_hex(body.as_bytes()), a.body_hash);
    }

    #[test]
    fn plan_is_seeded_and_deals_every_kind_per_round() {
        let p = plan(3, 1000, 20);
        let q = plan(3, 1000, 20);
        assert_eq!(format!("{p:?}"), format!("{q:?}"));
        assert_ne!(format!("{p:?}"), format!("{:?}", plan(4, 1000, 20)));
        // 20 faults = two rounds of the 10 kinds.
        for kind in Kind::all() {
            assert_eq!(p.iter().filter(|f| f.kind == kind).count(), 2, "{kind:?}");
        }
        assert!(p.windows(2).all(|w| w[0].at_accepted <= w[1].at_accepted));
        assert!(p.iter().all(|f| (50..750).contains(&f.at_accepted)));
    }

    #[test]
    fn all_delivered_once_passes() {
        let ms = messages();
        let got: Vec<Received> = ms.iter().map(|m| copy_of(m, 0, 10)).collect();
        let v = check(&ms, &got, &HashMap::new(), &[]);
        assert_eq!(v.delivered, 3);
        assert!(v.lost.is_empty() && v.corrupted.is_empty() && v.wrong_rcpt.is_empty());
        assert!(v.unknown.is_empty() && v.unexplained.is_empty() && v.duplicates.is_empty());
    }

    #[test]
    fn loss_corruption_wrong_recipient_and_strangers_are_found() {
        let ms = messages();
        let mut corrupted = copy_of(&ms[0], 0, 10);
        let last = corrupted.data.len() - 3;
        corrupted.data[last] ^= 1;
        let mut misrouted = copy_of(&ms[1], 0, 10);
        misrouted.rcpt_to = vec![ms[2].rcpt.clone()];
        let mut stranger = copy_of(&ms[1], 0, 10);
        stranger.data = b"Subject: who?\r\n\r\nx\r\n".to_vec();
        let v = check(&ms, &[corrupted, misrouted, stranger], &HashMap::new(), &[]);
        assert_eq!(v.lost, [ms[2].id.clone()]);
        assert_eq!(v.corrupted.len(), 1);
        assert_eq!(v.wrong_rcpt.len(), 1);
        assert_eq!(v.unknown.len(), 1);
    }

    #[test]
    fn duplicate_without_a_fault_in_its_window_is_unexplained() {
        let ms = messages();
        let got = vec![copy_of(&ms[0], 0, 1_000), copy_of(&ms[0], 0, 20_000)];
        // A worker kill long after the first copy, a postoffice kill before the submission.
        let mut before_submission = fault(Kind::KillPostoffice, 0);
        before_submission.start = t(0).checked_sub(Duration::from_secs(1)).unwrap();
        for faults in [
            // A worker kill long after the first copy's 250.
            fault(Kind::KillWorker(0), 10_000),
            // A postoffice kill before mailman took the message.
            before_submission,
            // A mailman kill explains a second client submission, not a second delivery of
            // one submission.
            fault(Kind::KillMailman, 15_000),
        ] {
            let v = check(&ms[..1], &got, &HashMap::new(), &[faults]);
            assert_eq!(v.unexplained.len(), 1, "{:?}", v.duplicates);
        }
        assert_eq!(
            check(&ms[..1], &got, &HashMap::new(), &[])
                .unexplained
                .len(),
            1
        );
    }

    #[test]
    fn each_window_explains_its_duplicates() {
        let ms = messages();
        // 1: worker killed right after the first copy's 250.
        let got = vec![copy_of(&ms[0], 0, 1_000), copy_of(&ms[0], 0, 5_000)];
        let v = check(
            &ms[..1],
            &got,
            &HashMap::new(),
            &[fault(Kind::KillWorker(1), 1_200)],
        );
        assert!(v.unexplained.is_empty());
        assert!(v.duplicates.keys().next().unwrap().contains("worker1"));
        // 1b: worker killed while the message was being retried, before the first copy.
        let late = vec![copy_of(&ms[0], 0, 5_000), copy_of(&ms[0], 0, 9_000)];
        let v = check(
            &ms[..1],
            &late,
            &HashMap::new(),
            &[fault(Kind::KillWorker(0), 400)],
        );
        assert!(v.unexplained.is_empty());
        assert!(v.duplicates.keys().next().unwrap().contains("retry"));
        // 2: postoffice killed after the submission, before the second copy.
        let v = check(
            &ms[..1],
            &got,
            &HashMap::new(),
            &[fault(Kind::KillPostoffice, 500)],
        );
        assert!(v.unexplained.is_empty());
        assert!(v.duplicates.keys().next().unwrap().contains("200"));
        // 3: two submissions (two mailman ids); a failed attempt overlapping a mailman kill.
        let got = vec![copy_of(&ms[0], 0, 1_000), copy_of(&ms[0], 2_000, 3_000)];
        let attempts = HashMap::from([(
            0,
            vec![
                Attempt {
                    start: t(0),
                    end: t(300),
                    outcome: Outcome::Unavailable,
                },
                Attempt {
                    start: t(2_000),
                    end: t(2_100),
                    outcome: Outcome::Sent,
                },
            ],
        )]);
        let v = check(&ms[..1], &got, &attempts, &[fault(Kind::KillMailman, 200)]);
        assert!(v.unexplained.is_empty(), "{:?}", v.unexplained);
        assert!(v.duplicates.keys().next().unwrap().contains("client"));
        // ...but not when the kill came after that attempt.
        let v = check(
            &ms[..1],
            &got,
            &attempts,
            &[fault(Kind::KillMailman, 5_000)],
        );
        assert_eq!(v.unexplained.len(), 1);
    }

    #[test]
    fn msmtp_errors_are_classified() {
        assert_eq!(classify(Some(0), ""), Outcome::Sent);
        assert_eq!(
            classify(Some(75), "msmtp: server message: 452 4.3.1 spool full"),
            Outcome::SpoolFull
        );
        assert_eq!(
            classify(Some(75), "msmtp: server message: 421 4.3.2 bye"),
            Outcome::Tempfail
        );
        assert_eq!(
            classify(Some(69), "msmtp: server message: 554 5.7.1 no"),
            Outcome::Permanent
        );
        assert_eq!(
            classify(
                Some(69),
                "msmtp: cannot connect to 127.0.77.1, port 1: Connection refused"
            ),
            Outcome::Unavailable
        );
    }
}
