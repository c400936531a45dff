//! `/api/v1/suppressions` on the ledger API (bearer token, `ledger.api_listen`):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET ?recipient=&scope=&list=&source=&limit=&expired=true` | `{"suppressions": [Suppression...]}`, newest first |
//! | `POST` JSON `{"recipient", "scope", "list_id", "reason", "expires", "permanent"}` | 201 `{"suppression": Suppression}` |
//! | `DELETE ?recipient=&scope=&list=&source=` (at least one) | `{"removed": n}` |
//!
//! `list`: a list id (only that list's entries) or `none` (only entries of a whole scope);
//! without it both.
//!
//! 400 names the bad or unknown parameter (or JSON field).
//!
//! Not here: the queries (`hedwig_ledger::suppress`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hedwig_ledger::suppress::{
    ListMatch, Source, Suppression, SuppressionFilter, GLOBAL, MAX_LIST,
};
use serde_json::{json, Value};

use crate::ledger::api::{ApiError, ApiState};

type Params = Query<Vec<(String, String)>>;

fn bad(name: &str, why: impl Into<String>) -> ApiError {
    ApiError::BadParameter(name.into(), why.into())
}

/// An address: something, an `@`, something; at most 320 characters (RFC 5321 §4.5.3.1).
pub fn check_recipient(value: &str) -> Result<String, String> {
    let v = value.trim();
    match v.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && v.len() <= 320 => {
            Ok(v.to_owned())
        }
        _ => Err("expected an address (local@domain, at most 320 characters)".into()),
    }
}

/// A scope: `*` or a domain name.
pub fn check_scope(value: &str) -> Result<String, String> {
    let v = value.trim().to_lowercase();
    if v == GLOBAL {
        return Ok(v);
    }
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.contains('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(v)
    } else {
        Err("expected a sender domain (example.com) or * for every sender".into())
    }
}

/// A list id (`news.example.com`, or as `List-Id:` writes it, `<news.example.com>`),
/// lowercased.
pub fn check_list_id(value: &str) -> Result<String, String> {
    let v = value.trim();
    let v = v
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(v);
    hedwig_ledger::suppress::list_key(v).ok_or_else(|| {
        "expected a list id as in List-Id: <news.example.com> (RFC 2919), at most 256 characters"
            .into()
    })
}

/// A list filter: a list id, or `none` (entries of a whole scope only).
pub fn check_list(value: &str) -> Result<ListMatch, String> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(ListMatch::Whole);
    }
    check_list_id(value)
        .map(ListMatch::Id)
        .map_err(|e| format!("{e}, or none"))
}

/// The filter of a GET or DELETE; `listing` allows `limit` and `expired`.
fn filter(
    params: &[(String, String)],
    listing: bool,
) -> Result<(SuppressionFilter, bool), ApiError> {
    let mut f = SuppressionFilter::default();
    let mut expired = false;
    let mut seen = std::collections::HashSet::new();
    for (name, value) in params {
        if !seen.insert(name.as_str()) {
            return Err(bad(name, "given twice"));
        }
        match name.as_str() {
            "recipient" => f.recipient = Some(check_recipient(value).map_err(|e| bad(name, e))?),
            "scope" => f.scope = Some(check_scope(value).map_err(|e| bad(name, e))?),
            "list" => f.list = check_list(value).map_err(|e| bad(name, e))?,
            "source" => {
                f.source = Some(
                    Source::parse(value)
                        .ok_or_else(|| bad(name, "one of auto, operator, complaint"))?,
                )
            }
            "limit" if listing => match value.parse::<u32>() {
                Ok(n) if n >= 1 => f.limit = Some(n.min(MAX_LIST)),
                _ => return Err(bad(name, format!("expected 1 to {MAX_LIST}"))),
            },
            "expired" if listing => {
                expired = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(name, "true or false")),
                }
            }
            _ => return Err(bad(name, "unknown parameter")),
        }
    }
    Ok((f, expired))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (filter, expired) = filter(&params, true)?;
    let store = state.store.get().await?;
    let entries = store
        .list_suppressions(&filter, crate::ledger::now_ms(), expired)
        .await?;
    Ok(Json(json!({ "suppressions": entries })).into_response())
}

/// An operator's entry from a POST body.
pub fn entry(body: &[u8], now: u64) -> Result<Suppression, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad("body", "expected a JSON object"));
    };
    let mut recipient = None;
    let mut scope = GLOBAL.to_owned();
    let mut list_id = None;
    let mut reason = "added by an operator".to_owned();
    let mut expires: Option<Option<std::time::Duration>> = None;
    let mut permanent = false;
    for (name, value) in &fields {
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(name, "expected a string"))
        };
        match name.as_str() {
            "recipient" => {
                recipient = Some(check_recipient(&text(value)?).map_err(|e| bad(name, e))?)
            }
            "scope" => scope = check_scope(&text(value)?).map_err(|e| bad(name, e))?,
            "list_id" if value.is_null() => list_id = None,
            "list_id" => list_id = Some(check_list_id(&text(value)?).map_err(|e| bad(name, e))?),
            "reason" => {
                reason = text(value)?;
                if reason.is_empty() || reason.len() > 500 {
                    return Err(bad(name, "1 to 500 characters"));
                }
            }
            "expires" => {
                expires = Some(super::parse_expiry(&text(value)?).map_err(|e| bad(name, e))?)
            }
            "permanent" => {
                permanent = value
                    .as_bool()
                    .ok_or_else(|| bad(name, "expected true or false"))?
            }
            _ => return Err(bad(name, "unknown field")),
        }
    }
    if permanent && expires.is_some_and(|d| d.is_some()) {
        return Err(bad("permanent", "give either expires or permanent"));
    }
    let expires_at = expires
        .flatten()
        .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    let recipient = recipient.ok_or_else(|| bad("recipient", "required"))?;
    Ok(Suppression {
        scope,
        list_id,
        recipient,
        reason,
        source: Source::Operator,
        reply: None,
        code: None,
        dsn: None,
        queue_id: None,
        created_at: now,
        // An operator's entry without an expiry is permanent.
        expires_at,
    })
}

pub async fn add(State(state): State<Arc<ApiState>>, body: Bytes) -> Result<Response, ApiError> {
    if body.len() > 64 * 1024 {
        return Err(bad("body", "at most 64 KiB"));
    }
    let mut entry = entry(&body, crate::ledger::now_ms())?;
    entry.recipient = hedwig_ledger::suppress::normalize(&entry.recipient);
    let store = state.store.get().await?;
    store.add_suppression(&entry).await?;
    tracing::info!(
        recipient = %entry.recipient, scope = %entry.scope, list_id = entry.list_id.as_deref(),
        "suppression added through the API"
    );
    Ok((StatusCode::CREATED, Json(json!({ "suppression": entry }))).into_response())
}

pub async fn remove(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (filter, _) = filter(&params, false)?;
    if filter.is_empty() {
        return Err(bad("recipient", "give recipient, scope, list or source"));
    }
    let store = state.store.get().await?;
    let removed = store.remove_suppressions(&filter).await?;
    tracing::info!(removed, ?filter, "suppressions removed through the API");
    Ok(Json(json!({ "removed": removed })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(e: ApiError) -> String {
        match e {
            ApiError::BadParameter(name, _) => name,
            other => panic!("{other:?}"),
        }
    }

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_and_bad_parameters() {
        let (f, expired) = filter(
            &params(&[
                ("recipient", "A@X.test"),
                ("scope", "Example.COM"),
                ("source", "auto"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(f.recipient.as_deref(), Some("A@X.test"));
        assert_eq!(f.scope.as_deref(), Some("example.com"));
        assert_eq!(f.source, Some(Source::Auto));
        assert!(!expired);
        for (list, name) in [
            (vec![("recipient", "nobody")], "recipient"),
            (vec![("scope", "no spaces.test x")], "scope"),
            (vec![("source", "robot")], "source"),
            (vec![("list", "two words")], "list"),
            (vec![("list", "")], "list"),
            (vec![("limit", "0")], "limit"),
            (vec![("colour", "red")], "colour"),
        ] {
            assert_eq!(named(filter(&params(&list), true).unwrap_err()), name);
        }
        let list = |v: &str| filter(&params(&[("list", v)]), true).unwrap().0.list;
        assert_eq!(
            list("<News.Example.COM>"),
            ListMatch::Id("news.example.com".into())
        );
        assert_eq!(list("NONE"), ListMatch::Whole);
        // A removal takes no limit.
        assert_eq!(
            named(filter(&params(&[("limit", "5")]), false).unwrap_err()),
            "limit"
        );
    }

    #[test]
    fn entries_from_json() {
        let e = entry(
            br#"{"recipient":"a@x.test","scope":"example.com","expires":"1d"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(e.scope, "example.com");
        assert_eq!(e.expires_at, Some(1000 + 86_400_000));
        assert_eq!(e.source, Source::Operator);
        let e = entry(br#"{"recipient":"a@x.test"}"#, 1).unwrap();
        assert_eq!((e.scope.as_str(), e.expires_at), ("*", None));
        assert_eq!(
            named(entry(br#"{"scope":"*"}"#, 1).unwrap_err()),
            "recipient"
        );
        assert_eq!(
            named(entry(br#"{"recipient":"a@x","expires":"soon"}"#, 1).unwrap_err()),
            "expires"
        );
        assert_eq!(
            named(entry(br#"{"recipient":"a@x","when":1}"#, 1).unwrap_err()),
            "when"
        );
        assert_eq!(named(entry(b"[1]", 1).unwrap_err()), "body");
        let e = entry(
            br#"{"recipient":"a@x.test","scope":"news.test","list_id":"A.News.test"}"#,
            1,
        )
        .unwrap();
        assert_eq!(e.list_id.as_deref(), Some("a.news.test"));
        assert_eq!(
            named(entry(br#"{"recipient":"a@x","list_id":"no list"}"#, 1).unwrap_err()),
            "list_id"
        );
        assert_eq!(
            named(entry(br#"{"recipient":"a@x","expires":"1d","permanent":true}"#, 1).unwrap_err()),
            "permanent"
        );
    }
}
