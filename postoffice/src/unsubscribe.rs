//! One-click unsubscribe (RFC 8058, issue 19): `GET` and `POST /unsubscribe/<token>` on the
//! intake listener, for the links workers add to bulk hosts' mail (`unsubscribe:` in the
//! worker config, docs/unsubscribe.md).
//!
//! - `POST` (what a mailbox provider sends for the one-click button, body
//!   `List-Unsubscribe=One-Click`, or the form of the `GET` page): the token is checked
//!   ([`hedwig_core::unsubscribe`], no database) and an `unsubscribed` event for the message
//!   and recipient it names goes into the events tube; the ledger writer records it and puts
//!   the recipient on the sender domain's suppression list for good (for the token's
//!   `List-Id:` alone when it names one). The event id is made of
//!   the queue id and the recipient, so a repeated POST changes nothing. 200 with a short page;
//!   503 when no events tube takes the event (the provider retries).
//! - `GET` (a person following the link in a client without one-click): a page that asks,
//!   with a form that POSTs. A GET never unsubscribes: link scanners follow every link.
//!
//! A malformed or forged token is 400, an expired one 410; neither says more. Bodies past
//! 4 KiB are refused (413). Every page is `no-store` and framed by nobody.
//!
//! Not here: the token format (`hedwig_core::unsubscribe`), the headers (the worker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hedwig_core::unsubscribe::{Unsubscribe, UnsubscribeError, UnsubscribeKey};
use hedwig_queue::event::{Event, Outcome, RecipientEvent, What};
use maud::{html, Markup, DOCTYPE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// Largest POST body read.
const BODY_LIMIT: usize = 4096;

/// The `unsubscribe:` section: the secret the workers' `unsubscribe.secret` holds too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnsubscribeConfig {
    pub secret: Option<String>,
    /// A file holding the secret (wins over `secret`).
    pub secret_file: Option<PathBuf>,
}

impl UnsubscribeConfig {
    /// The key, or the problem naming its key.
    pub fn check(&self, require_safe_keys: bool) -> Result<UnsubscribeKey, String> {
        hedwig_core::config::checked_secret(
            "unsubscribe",
            self.secret.as_deref(),
            self.secret_file.as_deref(),
            require_safe_keys,
        )
        .map(|s| UnsubscribeKey::new(&s))
    }
}

/// The event an unsubscribe records: its id is the same for every use of the token.
pub fn event(what: &Unsubscribe, at_millis: u64) -> Event {
    let digest = Sha256::digest(what.recipient.to_ascii_lowercase().as_bytes());
    let list = if what.list_id.is_empty() {
        String::new()
    } else {
        format!(" of list {}", what.list_id)
    };
    Event {
        id: format!(
            "unsubscribed-{}-{}",
            what.queue_id,
            hex::encode(&digest[..10])
        ),
        at: at_millis,
        queue_id: what.queue_id.clone(),
        what: What::Recipient(RecipientEvent {
            recipient: what.recipient.clone(),
            outcome: Outcome::Unsubscribed,
            mx: None,
            ip: None,
            tls: None,
            code: None,
            dsn: None,
            reply: format!(
                "one-click unsubscribe (RFC 8058): no more mail{list} from {}",
                what.sender_domain
            ),
            attempt: None,
            by: None,
            list_id: (!what.list_id.is_empty()).then(|| what.list_id.clone()),
            source_ip: None,
            pool: None,
            sender_domain: Some(what.sender_domain.clone()),
        }),
    }
}

/// `GET /unsubscribe/{token}`: a page asking to confirm.
pub async fn ask(State(state): State<Arc<AppState>>, Path(token): Path<String>) -> Response {
    let what = match check(&state, &token) {
        Ok(w) => w,
        Err(r) => return r.page(),
    };
    page(
        StatusCode::OK,
        "Unsubscribe",
        html! {
            p { "Stop mail " (of_list(&what)) "from " b { (what.sender_domain) } " to " b { (what.recipient) } "?" }
            form method="post" {
                input type="hidden" name="List-Unsubscribe" value="One-Click";
                button type="submit" { "Unsubscribe" }
            }
        },
    )
}

/// `POST /unsubscribe/{token}`: records the unsubscribe.
pub async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    if axum::body::to_bytes(request.into_body(), BODY_LIMIT)
        .await
        .is_err()
    {
        state.metrics.unsubscribe("too-large");
        return page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Unsubscribe",
            html! { p { "The request is too large." } },
        );
    }
    let what = match check(&state, &token) {
        Ok(w) => w,
        Err(r) => return r.page(),
    };
    let event = event(&what, hedwig_queue::event::now_millis());
    let recorded = match &state.events {
        Some(events) => {
            let mut ok = false;
            for server in state.queue.addrs() {
                if events.record(server, vec![event.clone()]).await {
                    ok = true;
                    break;
                }
            }
            ok
        }
        None => false,
    };
    if !recorded {
        state.metrics.unsubscribe("unavailable");
        tracing::warn!(
            queue_id = %what.queue_id, recipient = %what.recipient, client = %client,
            "one-click unsubscribe: no events tube took it; the sender is asked to retry"
        );
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unsubscribe",
            html! { p { "This cannot be done right now; please try again later." } },
        );
    }
    state.metrics.unsubscribe("done");
    tracing::info!(
        queue_id = %what.queue_id, recipient = %what.recipient, sender_domain = %what.sender_domain,
        list_id = %what.list_id, client = %client, outcome = "unsubscribed",
        "one-click unsubscribe"
    );
    page(
        StatusCode::OK,
        "Unsubscribed",
        html! { p { b { (what.recipient) } " gets no more mail " (of_list(&what)) "from " b { (what.sender_domain) } "." } },
    )
}

/// "of list <id> " when the token names a list (the suppression then holds for it alone).
fn of_list(what: &Unsubscribe) -> Markup {
    html! {
        @if !what.list_id.is_empty() { "of list " b { (what.list_id) } " " }
    }
}

/// Why a token is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No `unsubscribe:` here: 404.
    Disabled,
    /// 410.
    Expired,
    /// Malformed or forged: 400.
    Invalid,
}

impl Refusal {
    fn page(self) -> Response {
        match self {
            Refusal::Disabled => page(
                StatusCode::NOT_FOUND,
                "Not found",
                html! { p { "One-click unsubscribe is not enabled here." } },
            ),
            Refusal::Expired => page(
                StatusCode::GONE,
                "Unsubscribe",
                html! { p { "This unsubscribe link has expired. Use the link of a newer message." } },
            ),
            Refusal::Invalid => page(
                StatusCode::BAD_REQUEST,
                "Unsubscribe",
                html! { p { "This unsubscribe link is not valid." } },
            ),
        }
    }
}

/// The token's content, or why not (counted).
fn check(state: &AppState, token: &str) -> Result<Unsubscribe, Refusal> {
    let Some(key) = &state.unsubscribe else {
        return Err(Refusal::Disabled);
    };
    key.verify(token, hedwig_core::unix_now())
        .map_err(|e| match e {
            UnsubscribeError::Expired => {
                state.metrics.unsubscribe("expired");
                Refusal::Expired
            }
            _ => {
                state.metrics.unsubscribe("invalid");
                Refusal::Invalid
            }
        })
}

/// A small HTML page (maud escapes every value in `body`).
fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let html = html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                title { (title) }
                meta name="viewport" content="width=device-width";
            }
            body style="font-family:sans-serif;max-width:36em;margin:3em auto" {
                h1 { (title) }
                (body)
            }
        }
    }
    .into_string();
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_id_is_the_same_for_every_use_and_the_reply_names_the_list() {
        let what = Unsubscribe {
            queue_id: "018F2A3B4C5D0123456789AB".into(),
            sender_domain: "news.example.com".into(),
            list_id: "weekly.news.example.com".into(),
            recipient: "Bob@example.org".into(),
            expires: 2_000_000_000,
        };
        let a = event(&what, 1);
        let b = event(&what, 2);
        assert_eq!(a.id, b.id);
        let mut other = what.clone();
        other.recipient = "eve@example.org".into();
        assert_ne!(event(&other, 1).id, a.id);
        let What::Recipient(r) = &a.what else {
            panic!("a recipient event")
        };
        assert_eq!(r.outcome, Outcome::Unsubscribed);
        assert!(r.reply.contains("weekly.news.example.com"), "{}", r.reply);
        assert_eq!(r.list_id.as_deref(), Some("weekly.news.example.com"));
        other.list_id.clear();
        let What::Recipient(r) = event(&other, 1).what else {
            panic!("a recipient event")
        };
        assert_eq!(r.list_id, None);
    }
}
