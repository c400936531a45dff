//! The operator console (issue 15, docs/console.md): server-rendered web pages on the admin
//! listener (`ledger.api_listen`, never the intake port), under `/console/`.
//!
//! Layout: [`auth`] (users and argon2 hashes, sessions, the login rate limit, CSRF tokens),
//! [`view`] (the page frame, escaping helpers, times, the stylesheet), [`pages`] (one module
//! per page: overview, messages, hosts, failed, suppression, webhooks), [`chart`] (server-rendered SVG). Every page is HTML rendered with `maud`, which
//! escapes every interpolated value at compile time: mail data (subjects, addresses, replies,
//! host names) is attacker-controlled and is never written unescaped.
//!
//! Security model: a session cookie (HttpOnly, SameSite=Strict, Path=/console, Secure when
//! `console.behind_tls`), a CSRF token per session in every POST form, `Cache-Control:
//! no-store` and a strict Content-Security-Policy on every answer, request bodies capped at
//! [`MAX_FORM`] bytes. No JavaScript: the overview refreshes itself with a meta refresh.
//!
//! Not here: the queries (`hedwig-ledger`), the queue actions (`crate::admin`).

pub mod auth;
pub mod chart;
pub mod pages;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::admin::Target;
use crate::ledger::StoreHandle;

/// Largest request body (a form) the console reads.
pub const MAX_FORM: usize = 16 * 1024;

/// Requests the console serves at once (its pages share the store's few connections).
const MAX_CONCURRENT: usize = 16;

/// The `console:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console on the admin listener (`ledger.api_listen`, required).
    pub enabled: bool,
    /// Who may log in (besides the admin API token): a name and an argon2 PHC hash each
    /// (`postoffice console-hash` makes one).
    pub users: Vec<ConsoleUser>,
    /// How long a session lasts after login.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// Show message bodies of queued messages (default off: headers only).
    pub show_bodies: bool,
    /// Login attempts accepted per client address and minute; more get 429.
    pub login_attempts_per_minute: u32,
    /// The admin listener is reached through a TLS proxy: the session cookie gets `Secure`.
    pub behind_tls: bool,
    /// The DNS page (`keygen dns`'s checks per sending domain); off when not set.
    pub dns: Option<pages::dns::DnsConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: false,
            users: Vec::new(),
            session_lifetime: Duration::from_secs(8 * 3600),
            show_bodies: false,
            login_attempts_per_minute: 10,
            behind_tls: false,
            dns: None,
        }
    }
}

/// One console user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    pub name: String,
    /// `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
    pub password_hash: String,
}

/// The checked `console:` section.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub users: Vec<ConsoleUser>,
    pub session_lifetime: Duration,
    pub show_bodies: bool,
    pub login_attempts_per_minute: u32,
    /// `Secure` on the session cookie.
    pub secure_cookie: bool,
    /// The DNS page's settings, when set.
    pub dns: Option<pages::dns::DnsConfig>,
}

impl ConsoleSettings {
    /// The section checked; `None` when the console is off. Every problem names its key.
    pub fn check(
        config: &ConsoleConfig,
        api_listen: Option<SocketAddr>,
    ) -> Result<Option<ConsoleSettings>, Vec<String>> {
        if !config.enabled {
            return Ok(None);
        }
        let mut problems = Vec::new();
        if api_listen.is_none() {
            problems.push(
                "console.enabled: needs ledger.api_listen (the console is served on the admin \
                 listener, never the intake port)"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, user) in config.users.iter().enumerate() {
            if !auth::valid_name(&user.name) {
                problems.push(format!(
                    "console.users[{i}].name: 1 to 64 letters, digits, '.', '_', '-' or '@'"
                ));
            } else if !names.insert(user.name.as_str()) {
                problems.push(format!(
                    "console.users[{i}].name: {} is given twice",
                    user.name
                ));
            }
            if let Err(e) = auth::check_hash(&user.password_hash) {
                problems.push(format!("console.users[{i}].password_hash: {e}"));
            }
        }
        if config.session_lifetime < Duration::from_secs(60)
            || config.session_lifetime > Duration::from_secs(30 * 86_400)
        {
            problems.push("console.session_lifetime: from 1m to 30d".into());
        }
        if config.login_attempts_per_minute == 0 {
            problems.push("console.login_attempts_per_minute: must be at least 1".into());
        }
        if let Some(dns) = &config.dns {
            problems.extend(dns.check());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Some(ConsoleSettings {
            users: config.users.clone(),
            session_lifetime: config.session_lifetime,
            show_bodies: config.show_bodies,
            login_attempts_per_minute: config.login_attempts_per_minute,
            secure_cookie: config.behind_tls,
            dns: config.dns.clone(),
        }))
    }
}

/// What the console's handlers share.
pub struct Console {
    pub settings: ConsoleSettings,
    pub store: Arc<StoreHandle>,
    /// The queue: stats, failed records, holds (every configured beanstalkd).
    pub target: Target,
    pub stuck_after: Duration,
    /// Revoked hosts (`revoked`), shown on the hosts page.
    pub revoked: Vec<String>,
    /// The configured webhook endpoints' names (`webhooks:`).
    pub webhooks: Vec<String>,
    /// SHA-256 of the admin API token (also a login).
    token: [u8; 32],
    pub sessions: auth::Sessions,
    pub limiter: auth::LoginLimiter,
    /// The DNS page's last report and when it was made.
    pub dns_report: tokio::sync::Mutex<Option<pages::dns::Cached>>,
}

impl Console {
    pub fn new(
        settings: ConsoleSettings,
        store: Arc<StoreHandle>,
        target: Target,
        stuck_after: Duration,
        revoked: Vec<String>,
        webhooks: Vec<String>,
        token: &str,
    ) -> Console {
        let limiter = auth::LoginLimiter::new(settings.login_attempts_per_minute);
        let sessions = auth::Sessions::new(settings.session_lifetime);
        Console {
            settings,
            store,
            target,
            stuck_after,
            revoked,
            webhooks,
            token: auth::digest(token),
            sessions,
            limiter,
            dns_report: tokio::sync::Mutex::new(None),
        }
    }
}

/// The console's routes (merged into the admin listener's router, outside the API's bearer
/// token check: the console has its own login).
pub fn router(console: Arc<Console>) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(overview::page))
        .route("/console/style.css", get(view::stylesheet))
        .route("/console/login", get(login::page).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/messages", get(messages::list))
        .route("/console/messages/{queue_id}", get(messages::show))
        .route("/console/messages/{queue_id}/queue", get(messages::queued))
        .route("/console/hosts", get(hosts::page))
        .route("/console/hosts/hold", post(hosts::hold))
        .route("/console/hosts/release", post(hosts::release))
        .route("/console/failed", get(failed::page))
        .route("/console/failed/confirm", post(failed::confirm))
        .route("/console/failed/act", post(failed::act))
        .route("/console/suppressions", get(suppressions::page))
        .route("/console/suppressions/add", post(suppressions::add))
        .route("/console/suppressions/remove", post(suppressions::remove))
        .route("/console/webhooks", get(webhooks::page))
        .route("/console/webhooks/retry", post(webhooks::retry))
        .route("/console/dns", get(dns::page).post(dns::recheck))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(middleware::from_fn(security_headers))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .with_state(console)
}

/// Headers on every console answer: nothing is cached (pages show mail data), nothing is
/// framed, no referrer leaves, and the page may load nothing but its own stylesheet.
async fn security_headers(request: Request, next: Next) -> Response {
    let css = request.uri().path() == "/console/style.css";
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let cache = if css {
        "private, max-age=300"
    } else {
        "no-store"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Why a console request failed; shown as a small HTML page with its status.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// 400: a form field or search parameter is bad (its name, why).
    #[error("{0}: {1}")]
    BadInput(String, String),
    /// 403: a POST without the session's CSRF token.
    #[error("the form is stale or forged (its CSRF token does not match this session); reload the page and try again")]
    Csrf,
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 429: too many login attempts from this address.
    #[error("too many login attempts from your address; wait a minute")]
    TooManyAttempts,
    /// 503: the ledger store is down.
    #[error("the ledger store is unavailable; try again later")]
    Unavailable,
    /// 500 (logged with its cause, not shown).
    #[error("internal error (see the post office's log)")]
    Internal,
}

impl From<hedwig_ledger::StoreError> for ConsoleError {
    fn from(e: hedwig_ledger::StoreError) -> ConsoleError {
        if e.is_unavailable() {
            ConsoleError::Unavailable
        } else {
            tracing::error!(error = %e, "console: store error");
            ConsoleError::Internal
        }
    }
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadInput(..) => StatusCode::BAD_REQUEST,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = view::bare(
            &status.to_string(),
            maud::html! {
                h1 { (status.as_str()) " " (status.canonical_reason().unwrap_or("")) }
                p.error { (self.to_string()) }
                p { a href="/console/" { "Back to the console" } }
            },
        );
        (status, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_checked_with_named_keys() {
        let api = Some(SocketAddr::from(([127, 0, 150, 1], 8026)));
        assert!(ConsoleSettings::check(&ConsoleConfig::default(), None)
            .unwrap()
            .is_none());
        let on = ConsoleConfig {
            enabled: true,
            ..ConsoleConfig::default()
        };
        let err = ConsoleSettings::check(&on, None).unwrap_err();
        assert!(err[0].starts_with("console.enabled"), "{err:?}");
        let hash = auth::hash_password("correct horse").unwrap();
        let bad = ConsoleConfig {
            users: vec![
                ConsoleUser {
                    name: "alice".into(),
                    password_hash: hash.clone(),
                },
                ConsoleUser {
                    name: "alice".into(),
                    password_hash: hash.clone(),
                },
                ConsoleUser {
                    name: "bob smith".into(),
                    password_hash: "plain-text".into(),
                },
            ],
            session_lifetime: Duration::from_secs(1),
            login_attempts_per_minute: 0,
            ..on.clone()
        };
        let err = ConsoleSettings::check(&bad, api).unwrap_err().join("\n");
        for key in [
            "console.users[1].name",
            "console.users[2].name",
            "console.users[2].password_hash",
            "console.session_lifetime",
            "console.login_attempts_per_minute",
        ] {
            assert!(err.contains(key), "{key} in {err}");
        }
        let good = ConsoleConfig {
            users: vec![ConsoleUser {
                name: "alice".into(),
                password_hash: hash,
            }],
            behind_tls: true,
            ..on
        };
        let s = ConsoleSettings::check(&good, api).unwrap().unwrap();
        assert!(s.secure_cookie);
        assert!(!s.show_bodies, "bodies are off by default");
    }
}
