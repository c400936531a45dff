//! Who is at the console: password hashes (argon2, PHC strings), the login rate limit per
//! client address, sessions (random ids, kept in memory with an expiry), the CSRF token of
//! each session, and the [`Operator`] extractor that every page but the login page takes.
//!
//! Sessions live in this process: a restart logs everyone out, and behind a load balancer
//! each post office has its own (point operators at one post office's admin listener).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{Console, ConsoleError};

/// The session cookie's name.
pub const COOKIE: &str = "hedwig_console";

/// Sessions kept at once; past it the oldest goes.
const MAX_SESSIONS: usize = 10_000;

/// Client addresses whose login attempts are counted at once.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// The user name of a login with the admin API token.
pub const TOKEN_USER: &str = "api-token";

/// SHA-256 of `text`.
pub fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Whether two digests are equal, in time that does not depend on where they differ.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A user name: 1 to 64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Why a configured hash is not usable.
pub fn check_hash(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
    match hash.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "algorithm {other}: only argon2 hashes (`postoffice console-hash` makes one)"
        )),
    }
}

/// An argon2id PHC hash of `password` with a random salt (the crate's default parameters).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC hash `phc` (false for a hash that does not parse).
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Who logs in with `name` and `password`: a configured user whose hash matches, else the
/// admin token (as [`TOKEN_USER`]). Runs argon2 for an unknown name too (against a fixed
/// hash), so that the time taken does not tell which names exist.
pub async fn check_login(console: &Console, name: &str, password: &str) -> Option<String> {
    let user = console
        .settings
        .users
        .iter()
        .find(|u| u.name == name)
        .cloned();
    let by_token = same(&console.token, &digest(password));
    let password = password.to_owned();
    let checked = tokio::task::spawn_blocking(move || match user {
        Some(user) => verify_password(&user.password_hash, &password).then_some(user.name),
        None => {
            verify_password(dummy_hash(), &password);
            None
        }
    })
    .await
    .ok()
    .flatten();
    checked.or_else(|| by_token.then(|| TOKEN_USER.to_owned()))
}

/// A hash of a random password nobody knows, verified for unknown names (made once).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// One logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// The CSRF token every POST form of this session carries.
    pub csrf: String,
    pub expires: Instant,
}

/// The sessions, by the SHA-256 of their id (the id itself is only in the cookie).
pub struct Sessions {
    lifetime: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions {
            lifetime,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `user`: its id (for the cookie).
    pub fn create(&self, user: &str) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            digest(&id),
            Session {
                user: user.to_owned(),
                csrf: random_token(),
                expires: now + self.lifetime,
            },
        );
        id
    }

    /// The live session with cookie value `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = digest(id);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with cookie value `id`.
    pub fn remove(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// Login attempts per client address, in one-minute windows.
pub struct LoginLimiter {
    per_minute: u32,
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(per_minute: u32) -> LoginLimiter {
        LoginLimiter {
            per_minute,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt from `ip`; false when it is over the limit.
    pub fn attempt(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_ADDRESSES {
            map.retain(|_, (start, _)| now.duration_since(*start) < minute);
            if map.len() >= MAX_TRACKED_ADDRESSES {
                // Flooded from very many addresses: refuse the newcomers until windows end.
                return false;
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= minute {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.per_minute
    }
}

/// The client address of a request (the admin listener's accept loop records it; 0.0.0.0
/// when a request comes without one, as in a router test).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// The session cookie's value in a request.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    cookie(&parts.headers, COOKIE)
}

/// The value of the cookie `name` in `headers`.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
}

/// The login form's CSRF cookie: there is no session before the login, so the form's token
/// is also set in this cookie (only sent to `/console/login`, `SameSite=Strict`), and a login
/// is taken only when the two agree (double submit): a page elsewhere cannot log a browser in.
pub const LOGIN_COOKIE: &str = "hedwig_console_login";

/// The `Set-Cookie` value of a login form's token.
pub fn set_login_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{LOGIN_COOKIE}={token}; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}")
}

/// Whether a login form's `csrf` field matches its cookie (compared in constant time).
pub fn login_csrf_ok(headers: &axum::http::HeaderMap, presented: Option<&str>) -> bool {
    match (cookie(headers, LOGIN_COOKIE), presented) {
        (Some(expected), Some(presented)) if !expected.is_empty() => {
            same(&digest(presented), &digest(&expected))
        }
        _ => false,
    }
}

/// The `Set-Cookie` value of a new session (`id`), or of a logout (`None`: expired).
pub fn set_cookie(id: Option<&str>, lifetime: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            lifetime.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// A logged-in operator: every page but the login page takes one. Without a live session a
/// GET is sent to the login page and anything else is refused (403).
pub struct Operator {
    pub user: String,
    pub csrf: String,
    /// The session's cookie value (for logout).
    pub session: String,
}

/// What a request without a session gets.
pub enum NoSession {
    Login,
    Forbidden,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Login => Redirect::to("/console/login").into_response(),
            NoSession::Forbidden => (
                axum::http::StatusCode::FORBIDDEN,
                super::view::bare(
                    "Forbidden",
                    maud::html! { h1 { "403 Forbidden" } p { "Log in first." } },
                ),
            )
                .into_response(),
        }
    }
}

impl FromRequestParts<Arc<Console>> for Operator {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Operator, NoSession> {
        let rejection = if parts.method == Method::GET || parts.method == Method::HEAD {
            NoSession::Login
        } else {
            NoSession::Forbidden
        };
        let id = session_cookie(parts).ok_or(rejection)?;
        let session = console.sessions.get(&id).ok_or(match parts.method {
            Method::GET | Method::HEAD => NoSession::Login,
            _ => NoSession::Forbidden,
        })?;
        Ok(Operator {
            user: session.user,
            csrf: session.csrf,
            session: id,
        })
    }
}

/// A POST form's fields, after its CSRF token was checked against the session's.
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// Parses `body` (`application/x-www-form-urlencoded`, capped by the router) and checks
    /// its `csrf` field; 403 without it or with another session's.
    pub fn checked(operator: &Operator, body: &[u8]) -> Result<Fields, ConsoleError> {
        let fields = Fields::parse(body)?;
        let presented = fields.get("csrf").ok_or(ConsoleError::Csrf)?;
        if !same(&digest(presented), &digest(&operator.csrf)) {
            tracing::warn!(user = %operator.user, "console: a form with a wrong CSRF token refused");
            return Err(ConsoleError::Csrf);
        }
        Ok(fields)
    }

    /// Parses `body` without a CSRF check (the login form: there is no session yet).
    pub fn parse(body: &[u8]) -> Result<Fields, ConsoleError> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
            .map(Fields)
            .map_err(|_| ConsoleError::BadInput("form".into(), "not a form body".into()))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, trimmed, required not empty and at most `max` bytes.
    pub fn required(&self, name: &str, max: usize) -> Result<String, ConsoleError> {
        match self.get(name).map(str::trim) {
            Some(v) if !v.is_empty() && v.len() <= max => Ok(v.to_owned()),
            _ => Err(ConsoleError::BadInput(
                name.into(),
                format!("required, at most {max} bytes"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_others_do_not() {
        let hash = hash_password("s3cret pass").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        check_hash(&hash).unwrap();
        assert!(verify_password(&hash, "s3cret pass"));
        assert!(!verify_password(&hash, "s3cret pas"));
        assert!(!verify_password("garbage", "s3cret pass"));
        assert!(check_hash("garbage").is_err());
        assert!(check_hash(dummy_hash()).is_ok());
        // A scrypt-like PHC string parses but is not argon2.
        assert!(check_hash("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err());
    }

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::new(Duration::from_millis(50));
        let id = s.create("alice");
        let got = s.get(&id).unwrap();
        assert_eq!(got.user, "alice");
        assert_eq!(got.csrf.len(), 64);
        assert!(s.get("not-a-session").is_none());
        let other = s.create("bob");
        s.remove(&other);
        assert!(s.get(&other).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id).is_none(), "expired");
    }

    #[test]
    fn login_attempts_are_limited_per_address() {
        let l = LoginLimiter::new(3);
        let a = IpAddr::from([127, 0, 150, 1]);
        let b = IpAddr::from([127, 0, 150, 2]);
        assert!(l.attempt(a) && l.attempt(a) && l.attempt(a));
        assert!(!l.attempt(a), "the fourth in the minute");
        assert!(l.attempt(b), "another address has its own count");
    }

    #[test]
    fn names_and_cookies() {
        assert!(valid_name("alice") && valid_name("ops@example.com"));
        assert!(!valid_name("") && !valid_name("a b") && !valid_name(&"a".repeat(65)));
        let c = set_cookie(Some("abc"), Duration::from_secs(60), true);
        assert_eq!(
            c,
            "hedwig_console=abc; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!set_cookie(Some("abc"), Duration::from_secs(60), false).contains("Secure"));
    }
}
