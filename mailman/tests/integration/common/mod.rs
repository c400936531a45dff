//! Test helpers: a small SMTP client, a stand-in postoffice that answers what it is told
//! (for the retry loop's decisions; the end-to-end tests use the real postoffice), and a way
//! to start mailman in-process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use hedwig_core::wire::Submission;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub mod real;
pub mod stack;

pub const STEP: Duration = Duration::from_secs(10);

/// A minimal SMTP client for tests: every read has a timeout.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        Client {
            reader: BufReader::new(s),
        }
    }

    /// Reads one (possibly multi-line) reply; returns "" on EOF.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        for _ in 0..100 {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.reader.read_line(&mut line))
                .await
                .expect("reply timeout")
                .unwrap_or(0);
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
        panic!("endless reply: {all}");
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.expect("write");
    }

    /// Sends a command and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// A whole transaction; returns the reply to the final dot.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> String {
        assert!(self
            .cmd(&format!("MAIL FROM:<{from}>"))
            .await
            .starts_with("250"));
        for r in to {
            let reply = self.cmd(&format!("RCPT TO:<{r}>")).await;
            assert!(reply.starts_with("250"), "{reply}");
        }
        assert!(self.cmd("DATA").await.starts_with("354"));
        self.send(body).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

/// Connects, reads the greeting, says EHLO.
pub async fn hello(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let ehlo = c.cmd("EHLO test.client").await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    c
}

#[derive(Default)]
pub struct StandInState {
    pub status: u16,
    pub delay: Duration,
    pub error: String,
    /// Every post received, in order.
    pub posts: Vec<Submission>,
    /// Posts whose signature (key `testkey`) was missing or wrong.
    pub unsigned: usize,
    /// message id → queue id, for the ones answered 200.
    pub queued: HashMap<String, String>,
    /// Behave as a post office older than the raw form: `POST /raw` is answered 404, as
    /// axum answers a path it has no route for (counted in `raw_refused`, not in `posts`).
    pub no_raw: bool,
    pub raw_refused: usize,
    /// Posts that came in the raw form (of those in `posts`).
    pub raw_posts: usize,
}

/// A stand-in postoffice: answers every post with the configured status.
#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<StandInState>>,
    stop: CancellationToken,
}

impl StandIn {
    pub async fn start(status: u16) -> StandIn {
        Self::start_on("127.0.0.1:0".parse().unwrap(), status).await
    }

    pub async fn start_on(addr: SocketAddr, status: u16) -> StandIn {
        let state = Arc::new(Mutex::new(StandInState {
            status,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/", post(answer))
            .route("/raw", post(answer_raw))
            .route("/check", post(check))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .unwrap();
        });
        StandIn { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn set(&self, status: u16) {
        self.state.lock().unwrap().status = status;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn posts(&self) -> Vec<Submission> {
        self.state.lock().unwrap().posts.clone()
    }

    pub fn queued(&self) -> usize {
        self.state.lock().unwrap().queued.len()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits (bounded) until `n` distinct messages were queued.
    pub async fn wait_queued(&self, n: usize, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < end {
            if self.queued() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.queued() >= n
    }
}

/// Whether the request carries a valid signature by key `testkey` for `endpoint`.
fn signed_by_testkey(headers: &axum::http::HeaderMap, body: &[u8], endpoint: &str) -> bool {
    let signed = hedwig_core::signing::Signed::from_headers(|name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    });
    matches!(signed, Ok(Some(s)) if s.verify("testkey", "POST", endpoint)
        && s.digest == hedwig_core::signing::content_digest(body))
}

async fn answer(
    state: State<Arc<Mutex<StandInState>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    take(state, headers, body, false).await
}

async fn answer_raw(
    state: State<Arc<Mutex<StandInState>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    if state.lock().unwrap().no_raw {
        state.lock().unwrap().raw_refused += 1;
        return (StatusCode::NOT_FOUND, String::new());
    }
    take(state, headers, body, true).await
}

async fn take(
    State(state): State<Arc<Mutex<StandInState>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
    raw: bool,
) -> (StatusCode, String) {
    let delay = state.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let signed = signed_by_testkey(&headers, &body, if raw { "/raw" } else { "/" });
    // Lenient: tests whose mailman has another key are counted as unsigned, not refused.
    let sub = if raw {
        Submission::from_raw_with(&body, false).expect("mailman sends a valid raw body")
    } else {
        Submission::from_json_with(&body, false).expect("mailman sends a valid JSON body")
    };
    let mut st = state.lock().unwrap();
    if !signed {
        st.unsigned += 1;
    }
    if raw {
        st.raw_posts += 1;
    }
    st.posts.push(sub.clone());
    let status = st.status;
    if status == 200 {
        let id = sub.id.clone().expect("mailman sends an id");
        let n = st.queued.len();
        let (qid, dup) = match st.queued.get(&id) {
            Some(q) => (q.clone(), true),
            None => {
                let q = format!("Q{n:04}");
                st.queued.insert(id, q.clone());
                (q, false)
            }
        };
        return (
            StatusCode::OK,
            serde_json::json!({"id": qid, "duplicate": dup}).to_string(),
        );
    }
    let error = if st.error.is_empty() {
        format!("stand-in says {status}")
    } else {
        st.error.clone()
    };
    (
        StatusCode::from_u16(status).unwrap(),
        serde_json::json!({ "error": error }).to_string(),
    )
}

async fn check(State(state): State<Arc<Mutex<StandInState>>>) -> StatusCode {
    match state.lock().unwrap().status {
        401 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::OK,
    }
}

/// A config for tests: loopback, ephemeral ports, the spool in `spool`.
pub fn config(spool: &Path, postoffice: &[String]) -> mailman::Config {
    mailman::Config {
        listen: vec!["127.0.0.1:0".into()],
        http_listen: "127.0.0.1:0".into(),
        fqdn: "mailman.test".into(),
        key: Some("testkey".into()),
        postoffice: postoffice.to_vec(),
        spool_dir: spool.to_path_buf(),
        forward_deadline: Duration::from_secs(3),
        forward_timeout: Duration::from_secs(5),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        shutdown_timeout: Duration::from_secs(3),
        // These tests compare the bytes a client sent with what is posted: no header
        // fix-ups (issue 19). header_fixups.rs tests them, with the defaults.
        add_missing_headers: mailman::fixup::AddMissingHeaders::NONE,
        ..mailman::Config::default()
    }
}

pub struct Mailman {
    pub running: Option<mailman::Running>,
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
}

impl Mailman {
    pub async fn start(config: mailman::Config) -> Mailman {
        hedwig_service::logging::init();
        let settings = config.check().expect("test config is valid");
        let shutdown = CancellationToken::new();
        let running = mailman::start(settings, shutdown.clone())
            .await
            .expect("mailman starts");
        Mailman {
            smtp: running.smtp_addrs[0],
            http: running.http_addr.unwrap(),
            running: Some(running),
            shutdown,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(15), r.wait())
                .await
                .expect("mailman stops in time");
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// `.msg` files in the spool directory.
pub fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .and_then(|x| x.to_str())
                == Some("msg")
        })
        .count()
}

/// Waits (bounded) for the spool to hold `n` messages.
pub async fn wait_spooled(dir: &Path, n: usize, timeout: Duration) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if spooled(dir) == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spooled(dir) == n
}
