//! The suppression list in the post office (docs/suppression.md): the `suppression:`
//! settings, the in-memory set intake checks every recipient against, and the task that
//! keeps it fresh from the ledger store.
//!
//! Intake never waits for the store: it reads an in-memory set (one hash lookup per
//! recipient), loaded at start and reloaded every `suppression.refresh` when the list changed
//! (a count and the last write time tell). While the store is down intake goes on with the
//! last set, and says so once in the log. The message's `List-Id:` is read only when a
//! recipient has an entry of one list of the sender's domain, and then once per post
//! ([`MessageList`]).
//!
//! Layout: [`cli`] (`postoffice suppress list|add|remove`), [`api`] (`/api/v1/suppressions`
//! on the ledger API).
//!
//! Not here: which failures add entries and the queries (`hedwig_ledger::suppress`), taking
//! recipients out of a post (`intake`).

pub mod api;
pub mod cli;

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hedwig_ledger::suppress::{Active, Fingerprint, GLOBAL};
use hedwig_ledger::AutoPolicy;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ledger::StoreHandle;

/// The `suppression:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// The ledger writer adds an entry on each hard, address-level failure.
    pub auto: bool,
    /// `sender_domain` (an entry holds for the sender domain whose mail failed) or `global`
    /// (for every sender).
    pub scope: ScopeMode,
    /// How long an automatic entry lasts: a duration (`30d`) or `permanent`.
    pub expiry: Expiry,
    /// Take suppressed recipients out of posts (needs `events` and a ledger store: the
    /// writer, the API or `ledger.url` set).
    pub intake: bool,
    /// How often intake's set is reloaded from the store (when the list changed).
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// Most entries intake keeps in memory (about 100 bytes each); the newest are kept and
    /// the excess is logged.
    pub max_entries: usize,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            auto: true,
            scope: ScopeMode::SenderDomain,
            expiry: Expiry(Some(Duration::from_secs(30 * 86_400))),
            intake: true,
            refresh: Duration::from_secs(5),
            max_entries: 1_000_000,
        }
    }
}

/// `suppression.scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    SenderDomain,
    Global,
}

/// `suppression.expiry`: a duration, or `permanent` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Expiry(pub Option<Duration>);

impl TryFrom<String> for Expiry {
    type Error = String;
    fn try_from(s: String) -> Result<Expiry, String> {
        parse_expiry(&s).map(Expiry)
    }
}

impl From<Expiry> for String {
    fn from(e: Expiry) -> String {
        match e.0 {
            None => "permanent".into(),
            Some(d) => humantime::format_duration(d).to_string(),
        }
    }
}

/// `permanent` or a human duration (`30d`, `12h`).
pub fn parse_expiry(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("permanent") {
        return Ok(None);
    }
    humantime::parse_duration(s)
        .map(Some)
        .map_err(|e| format!("{s:?}: expected a duration (30d) or `permanent`: {e}"))
}

/// The `suppression:` section, checked.
#[derive(Debug, Clone)]
pub struct SuppressionSettings {
    /// What the writer adds.
    pub auto: AutoPolicy,
    /// Whether intake takes suppressed recipients out (the conditions met).
    pub intake: bool,
    pub refresh: Duration,
    pub max_entries: usize,
}

impl SuppressionSettings {
    /// Checks the section; `store` says whether this post office has a ledger store to read
    /// (the writer, the API, or `ledger.url` set) and `events` whether it records events.
    pub fn check(
        c: &SuppressionConfig,
        store: bool,
        events: bool,
    ) -> Result<SuppressionSettings, Vec<String>> {
        let mut problems = Vec::new();
        if c.refresh < Duration::from_millis(100) {
            problems.push("suppression.refresh: must be at least 100ms".into());
        }
        if c.max_entries == 0 {
            problems.push("suppression.max_entries: must be at least 1".into());
        }
        if c.expiry.0.is_some_and(|d| d < Duration::from_secs(60)) {
            problems.push("suppression.expiry: must be at least 1m (or `permanent`)".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SuppressionSettings {
            auto: AutoPolicy {
                enabled: c.auto,
                global: c.scope == ScopeMode::Global,
                expiry: c.expiry.0,
            },
            intake: c.intake && store && events,
            refresh: c.refresh,
            max_entries: c.max_entries,
        })
    }
}

/// One entry in intake's copy.
#[derive(Debug)]
struct Entry {
    scope: String,
    /// The list id (lowercase) of a list's entry.
    list_id: Option<String>,
    expires_at: Option<u64>,
}

/// Intake's copy of the list: recipient -> its entries.
#[derive(Debug, Default)]
struct Entries {
    by_recipient: HashMap<String, Vec<Entry>>,
    count: usize,
    fingerprint: Option<Fingerprint>,
}

/// The set intake checks; swapped whole on each reload, read without waiting on the store.
#[derive(Debug, Default)]
pub struct SuppressionSet {
    entries: RwLock<Arc<Entries>>,
}

impl SuppressionSet {
    pub fn new() -> SuppressionSet {
        SuppressionSet::default()
    }

    /// The entry that suppresses `recipient` (normalised: lowercase) for a message from
    /// `sender_domain` with `list` at `now` (ms), as `scope` or `scope, list <id>`: the
    /// sender domain's own or a global one, of the whole scope or of the message's list.
    pub fn suppressed(
        &self,
        sender_domain: Option<&str>,
        recipient: &str,
        list: &MessageList<'_>,
        now: u64,
    ) -> Option<String> {
        self.view().suppressed(sender_domain, recipient, list, now)
    }

    /// The list as it is now, for several lookups (one post's recipients) under one lock.
    pub fn view(&self) -> SuppressionView {
        SuppressionView(self.snapshot())
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.snapshot().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Arc<Entries> {
        match self.entries.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        self.snapshot().fingerprint
    }

    fn replace(&self, rows: Vec<Active>, fingerprint: Fingerprint) {
        let count = rows.len();
        let mut by_recipient: HashMap<String, Vec<Entry>> = HashMap::with_capacity(count);
        for row in rows {
            by_recipient.entry(row.recipient).or_default().push(Entry {
                scope: row.scope,
                list_id: row.list_id,
                expires_at: row.expires_at,
            });
        }
        let next = Arc::new(Entries {
            by_recipient,
            count,
            fingerprint: Some(fingerprint),
        });
        match self.entries.write() {
            Ok(mut e) => *e = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

/// A snapshot of the list ([`SuppressionSet::view`]).
pub struct SuppressionView(Arc<Entries>);

impl SuppressionView {
    /// Whether the list is empty (then no recipient needs looking up).
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// As [`SuppressionSet::suppressed`].
    pub fn suppressed(
        &self,
        sender_domain: Option<&str>,
        recipient: &str,
        list: &MessageList<'_>,
        now: u64,
    ) -> Option<String> {
        let entries = self.0.by_recipient.get(recipient)?;
        let holds = |e: &&Entry| {
            e.expires_at.is_none_or(|at| at > now)
                && (e.scope == GLOBAL || Some(e.scope.as_str()) == sender_domain)
        };
        // The whole scope's entry first: it needs no look at the message.
        if let Some(e) = entries.iter().filter(holds).find(|e| e.list_id.is_none()) {
            return Some(e.scope.clone());
        }
        let mut lists = entries.iter().filter(holds).filter(|e| e.list_id.is_some());
        let first = lists.next()?;
        let id = list.id()?;
        std::iter::once(first)
            .chain(lists)
            .find(|e| e.list_id.as_deref() == Some(id))
            .map(|e| format!("{}, list {id}", e.scope))
    }
}

/// The `List-Id:` of the message a post carries, read from its header block the first time
/// an entry of a list asks for it, then kept (one read per post at most).
pub struct MessageList<'a> {
    message: &'a [u8],
    id: OnceCell<Option<String>>,
}

impl<'a> MessageList<'a> {
    /// The list of `message` (raw bytes, header block first), read when asked.
    pub fn of(message: &'a [u8]) -> MessageList<'a> {
        MessageList {
            message,
            id: OnceCell::new(),
        }
    }

    /// A list id known already (`None`: the message has none).
    pub fn known(id: Option<&str>) -> MessageList<'static> {
        MessageList {
            message: &[],
            id: OnceCell::from(id.and_then(hedwig_ledger::suppress::list_key)),
        }
    }

    /// The list id (lowercase), when the message has a readable `List-Id:`.
    pub fn id(&self) -> Option<&str> {
        self.id
            .get_or_init(|| {
                hedwig_core::list_id::of(self.message)
                    .and_then(|id| hedwig_ledger::suppress::list_key(&id))
            })
            .as_deref()
    }
}

/// Why a reload failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReloadError(#[from] hedwig_ledger::StoreError);

/// Reloads `set` from the store when the list changed since the last load. Returns whether
/// it was reloaded.
pub async fn reload(
    handle: &StoreHandle,
    set: &SuppressionSet,
    max_entries: usize,
    truncated_logged: &mut bool,
) -> Result<bool, ReloadError> {
    let store = handle.get().await?;
    let fingerprint = store.suppression_fingerprint().await?;
    if set.fingerprint() == Some(fingerprint) {
        return Ok(false);
    }
    let (rows, more) = store
        .active_suppressions(crate::ledger::now_ms(), max_entries)
        .await?;
    if more && !*truncated_logged {
        tracing::warn!(
            max_entries,
            "suppression list: more active entries than suppression.max_entries; intake keeps the newest"
        );
    }
    *truncated_logged = more;
    set.replace(rows, fingerprint);
    Ok(true)
}

/// Keeps `set` fresh until `shutdown`: a reload every `refresh`; a store that fails is
/// logged once (intake goes on with the last set) and once again when it is back.
pub async fn run_refresh(
    handle: Arc<StoreHandle>,
    set: Arc<SuppressionSet>,
    settings: SuppressionSettings,
    entries: prometheus_client::metrics::gauge::Gauge,
    shutdown: CancellationToken,
) {
    let mut down = false;
    let mut truncated = false;
    loop {
        let result = reload(&handle, &set, settings.max_entries, &mut truncated).await;
        entries.set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        match result {
            Ok(reloaded) => {
                if down {
                    tracing::info!(
                        entries = set.len(),
                        "suppression list: store available again"
                    );
                    down = false;
                } else if reloaded {
                    tracing::debug!(entries = set.len(), "suppression list reloaded");
                }
            }
            Err(e) => {
                if !down {
                    tracing::warn!(error = %e, entries = set.len(), "suppression list: cannot read the store; intake goes on with the last list");
                    down = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.refresh) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_values() {
        assert_eq!(parse_expiry("permanent"), Ok(None));
        assert_eq!(
            parse_expiry("30d"),
            Ok(Some(Duration::from_secs(30 * 86_400)))
        );
        assert!(parse_expiry("soon").is_err());
        let c: SuppressionConfig =
            serde_json::from_str(r#"{"scope":"global","expiry":"permanent"}"#).unwrap();
        assert_eq!(c.scope, ScopeMode::Global);
        assert_eq!(c.expiry, Expiry(None));
        assert!(serde_json::from_str::<SuppressionConfig>(r#"{"scope":"host"}"#).is_err());
        assert!(serde_json::from_str::<SuppressionConfig>(r#"{"expiry":"soon"}"#).is_err());
    }

    #[test]
    fn settings_are_checked_and_intake_needs_a_store_and_events() {
        let c = SuppressionConfig::default();
        let s = SuppressionSettings::check(&c, true, true).unwrap();
        assert!(s.intake && s.auto.enabled && !s.auto.global);
        assert_eq!(s.auto.expiry, Some(Duration::from_secs(30 * 86_400)));
        assert!(!SuppressionSettings::check(&c, false, true).unwrap().intake);
        assert!(!SuppressionSettings::check(&c, true, false).unwrap().intake);
        let bad = SuppressionConfig {
            refresh: Duration::ZERO,
            max_entries: 0,
            expiry: Expiry(Some(Duration::from_secs(1))),
            ..c
        };
        let problems = SuppressionSettings::check(&bad, true, true).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("suppression.refresh"));
        assert!(problems[1].starts_with("suppression.max_entries"));
        assert!(problems[2].starts_with("suppression.expiry"));
    }

    #[test]
    fn lookups_by_scope_and_expiry() {
        let none = MessageList::known(None);
        let set = SuppressionSet::new();
        assert_eq!(set.suppressed(Some("a.test"), "x@y.test", &none, 0), None);
        set.replace(
            vec![
                active("a.test", None, "x@y.test", None),
                active("*", None, "g@y.test", Some(1_000)),
            ],
            Fingerprint {
                count: 2,
                last_write: 1,
            },
        );
        assert_eq!(
            set.suppressed(Some("a.test"), "x@y.test", &none, 5),
            Some("a.test".into())
        );
        assert_eq!(set.suppressed(Some("b.test"), "x@y.test", &none, 5), None);
        assert_eq!(set.suppressed(None, "x@y.test", &none, 5), None);
        assert_eq!(
            set.suppressed(Some("b.test"), "g@y.test", &none, 999),
            Some("*".into())
        );
        assert_eq!(
            set.suppressed(Some("b.test"), "g@y.test", &none, 1_000),
            None,
            "expired"
        );
        assert_eq!(set.len(), 2);
    }

    fn active(scope: &str, list: Option<&str>, recipient: &str, expires: Option<u64>) -> Active {
        Active {
            scope: scope.into(),
            list_id: list.map(str::to_owned),
            recipient: recipient.into(),
            expires_at: expires,
        }
    }

    #[test]
    fn a_list_entry_holds_for_its_list_alone() {
        let set = SuppressionSet::new();
        set.replace(
            vec![
                active("news.test", Some("a.news.test"), "x@y.test", None),
                active("news.test", Some("c.news.test"), "x@y.test", Some(10)),
                active("*", Some("g.lists.test"), "x@y.test", None),
                active("news.test", Some("a.news.test"), "z@y.test", None),
            ],
            Fingerprint {
                count: 4,
                last_write: 1,
            },
        );
        let of = |m: &'static [u8]| MessageList::of(m);
        let list_a = b"From: n@news.test\r\nList-Id: \"A (weekly)\" <A.News.TEST>\r\n\r\nhi";
        assert_eq!(
            set.suppressed(Some("news.test"), "x@y.test", &of(list_a), 5),
            Some("news.test, list a.news.test".into())
        );
        // Another list of the domain, a message without one, another domain's list A.
        let list_b = b"List-Id: <b.news.test>\r\n\r\nhi";
        assert_eq!(
            set.suppressed(Some("news.test"), "x@y.test", &of(list_b), 5),
            None
        );
        let no_list = b"Subject: reset your password\r\n\r\nList-Id: <a.news.test>";
        assert_eq!(
            set.suppressed(Some("news.test"), "x@y.test", &of(no_list), 5),
            None
        );
        assert_eq!(
            set.suppressed(Some("other.test"), "x@y.test", &of(list_a), 5),
            None
        );
        // An expired list entry; a global one holds for that list from every domain.
        let list_c = b"List-Id: <c.news.test>\r\n\r\n";
        assert_eq!(
            set.suppressed(Some("news.test"), "x@y.test", &of(list_c), 10),
            None
        );
        let global = b"List-Id: <G.lists.test>\r\n\r\n";
        assert_eq!(
            set.suppressed(Some("any.test"), "x@y.test", &of(global), 10),
            Some("*, list g.lists.test".into())
        );
        // The message is read only when an entry of a list of its domain needs it.
        let unread = of(list_a);
        assert_eq!(
            set.suppressed(Some("other.test"), "z@y.test", &unread, 5),
            None
        );
        assert_eq!(
            set.suppressed(Some("news.test"), "nobody@y.test", &unread, 5),
            None
        );
        assert!(unread.id.get().is_none());
    }
}
