//! `GET/POST /console/login` and `POST /console/logout`.
//!
//! A login is a configured user's name and password (argon2), or any name with the admin
//! API token as the password (the session's user is then `api-token`). Every attempt counts
//! against its client address's limit (`console.login_attempts_per_minute`); attempts are
//! logged, failed ones at warn.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;

use crate::console::auth::{self, Fields, Operator};
use crate::console::{view, Console, ConsoleError};

fn form(error: Option<&str>, csrf: &str) -> Html<String> {
    view::bare(
        "Log in",
        html! {
            div.login {
                h1 { "hedwig console" }
                @if let Some(e) = error { p.error { (e) } }
                form.box method="post" action="/console/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "User" input type="text" name="user" autocomplete="username" autofocus; }
                    label { "Password (or the admin API token)"
                        input type="password" name="password" autocomplete="current-password"; }
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// `GET /console/login`: the form, with a fresh CSRF token in it and in its cookie.
pub async fn page(State(console): State<Arc<Console>>) -> Response {
    let token = auth::random_token();
    let cookie = auth::set_login_cookie(&token, console.settings.secure_cookie);
    ([(header::SET_COOKIE, cookie)], form(None, &token)).into_response()
}

/// `POST /console/login`.
pub async fn submit(
    State(console): State<Arc<Console>>,
    auth::ClientIp(ip): auth::ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    if !console.limiter.attempt(ip) {
        tracing::warn!(client = %ip, "console: login refused: too many attempts from this address");
        return Err(ConsoleError::TooManyAttempts);
    }
    let fields = Fields::parse(&body)?;
    if !auth::login_csrf_ok(&headers, fields.get("csrf")) {
        tracing::warn!(client = %ip, "console: a login form without its CSRF token refused");
        return Err(ConsoleError::Csrf);
    }
    // The same token again for a failed attempt's form (its cookie stays).
    let token = fields.get("csrf").unwrap_or("").to_owned();
    let user = fields.get("user").unwrap_or("").trim();
    let password = fields.get("password").unwrap_or("");
    if user.len() > 64 || password.is_empty() || password.len() > 1024 {
        tracing::warn!(client = %ip, "console: login failed (bad form)");
        return Ok((
            StatusCode::UNAUTHORIZED,
            form(Some("Wrong user or password."), &token),
        )
            .into_response());
    }
    match auth::check_login(&console, user, password).await {
        Some(name) => {
            let id = console.sessions.create(&name);
            tracing::info!(user = %name, client = %ip, "console: logged in");
            let cookie = auth::set_cookie(
                Some(&id),
                console.sessions.lifetime(),
                console.settings.secure_cookie,
            );
            Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console/")).into_response())
        }
        None => {
            tracing::warn!(user = %view::cut(user, 64), client = %ip, "console: login failed");
            Ok((
                StatusCode::UNAUTHORIZED,
                form(Some("Wrong user or password."), &token),
            )
                .into_response())
        }
    }
}

/// `POST /console/logout`.
pub async fn logout(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    Fields::checked(&operator, &body)?;
    console.sessions.remove(&operator.session);
    tracing::info!(user = %operator.user, "console: logged out");
    let cookie = auth::set_cookie(
        None,
        console.sessions.lifetime(),
        console.settings.secure_cookie,
    );
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/console/login"),
    )
        .into_response())
}
