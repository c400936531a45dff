//! The frame every console page shares (head, navigation, logout form), the small helpers
//! pages use (times, links, status badges), and the stylesheet.
//!
//! Everything is written through `maud`, which escapes each interpolated value; nothing
//! here writes a value with `PreEscaped`. Links built from data percent-encode it
//! ([`segment`], [`query`]), so a value can never choose a link's scheme.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::auth::Operator;

/// The stylesheet (hand-written, served by the binary).
const CSS: &str = include_str!("style.css");

/// `GET /console/style.css`.
pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// The navigation: path, label.
const NAV: &[(&str, &str)] = &[
    ("/console/", "Overview"),
    ("/console/hosts", "Hosts"),
    ("/console/messages", "Messages"),
    ("/console/failed", "Failed"),
    ("/console/suppressions", "Suppression"),
    ("/console/webhooks", "Webhooks"),
    ("/console/dns", "DNS"),
];

/// A page for a logged-in operator: head, navigation (with `active` marked), `body`.
/// `refresh`: seconds after which the page reloads itself (the overview).
pub fn page(
    operator: &Operator,
    title: &str,
    active: &str,
    refresh: Option<u32>,
    body: Markup,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    @if let Some(seconds) = refresh {
                        meta http-equiv="refresh" content=(seconds);
                    }
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · hedwig console" }
                    link rel="stylesheet" href="/console/style.css";
                }
                body {
                    header.top {
                        span.brand { "hedwig" }
                        nav {
                            @for (path, label) in NAV {
                                @if *path == active {
                                    a.active href=(path) { (label) }
                                } @else {
                                    a href=(path) { (label) }
                                }
                            }
                        }
                        form.logout method="post" action="/console/logout" {
                            (csrf(operator))
                            span.user { (operator.user) }
                            button type="submit" { "Log out" }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page without navigation (login, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · hedwig console" }
                    link rel="stylesheet" href="/console/style.css";
                }
                body.bare { main { (body) } }
            }
        }
        .into_string(),
    )
}

/// The hidden CSRF field every POST form carries.
pub fn csrf(operator: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf); }
}

/// Unix milliseconds as `2026-12-02 09:30:00` (UTC).
pub fn time(ms: u64) -> String {
    let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    t.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Unix milliseconds as `2026-12-02T09:30` (a `datetime-local` input's value).
pub fn time_input(ms: u64) -> String {
    time(ms).replacen(' ', "T", 1)[..16].to_owned()
}

/// A time as typed in a form: Unix milliseconds, RFC 3339, or `YYYY-MM-DD[ T]HH:MM[:SS]`
/// (UTC; a `datetime-local` input's value).
pub fn parse_time(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<u64>() {
        return Some(ms);
    }
    let with_seconds;
    let value = if value.len() == 16 {
        with_seconds = format!("{value}:00");
        &with_seconds
    } else {
        value
    };
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

/// A duration in words (`3h 12m`), to the second.
pub fn ago(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// `text` percent-encoded for one path segment (everything but unreserved characters).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from `pairs` (`a=1&b=x%40y`), empty values left out.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// The link to one message's page.
pub fn message_link(queue_id: &str) -> String {
    format!("/console/messages/{}", segment(queue_id))
}

/// A status or outcome as a coloured badge (the class is chosen from a fixed list).
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "sent" | "complained" | "released" | "requeued" | "done" | "OK" => "badge ok",
        "deferred" | "queued" | "held" | "partial" | "pending" | "warning" => "badge wait",
        "bounced" | "expired" | "failed" | "purged" | "suppressed" | "unsubscribed" | "MISSING"
        | "WRONG" | "ERROR" => "badge bad",
        _ => "badge",
    };
    html! { span class=(class) { (status) } }
}

/// Text cut to `max` characters (with `…`), for table cells.
pub fn cut(text: &str, max: usize) -> String {
    crate::admin::cell(text, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_links() {
        assert_eq!(time(1_796_169_600_123), "2026-12-02 00:00:00");
        assert_eq!(time_input(1_796_169_600_123), "2026-12-02T00:00");
        assert_eq!(parse_time("2026-12-02T00:00"), Some(1_796_169_600_000));
        assert_eq!(parse_time("2026-12-02 00:00:01"), Some(1_796_169_601_000));
        assert_eq!(parse_time("1796169600000"), Some(1_796_169_600_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(segment("01J/x y\"<"), "01J%2Fx%20y%22%3C");
        assert_eq!(
            query([("host", "a b"), ("sender", ""), ("q", "x@y&z")]),
            "host=a+b&q=x%40y%26z"
        );
    }
}
