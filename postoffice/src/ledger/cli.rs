//! `postoffice trace <queue id | Message-ID | recipient>` and `postoffice stuck`: the ledger
//! in a terminal (or as JSON with `--json`), read from the store the config names.
//!
//! `trace` looks the argument up as a queue id, then as a Message-ID, then (when it has an
//! `@`) as a recipient (the newest 20 messages), and prints each message's timeline.
//!
//! Not here: the queries (`hedwig-ledger`).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use hedwig_ledger::{Filter, Message, Store, StoreError, Timeline};
use hedwig_queue::event::What;

/// Arguments of `postoffice trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// A queue id, a Message-ID (with or without <>), or a recipient address.
    pub what: String,
    /// Print JSON (an array of timelines, as the API's).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `postoffice stuck`.
#[derive(Debug, clap::Args)]
pub struct StuckArgs {
    /// Most messages listed.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print JSON (`{"count": n, "messages": [...]}`).
    #[arg(long)]
    pub json: bool,
}

/// Most messages a recipient or Message-ID trace shows.
const TRACE_LIMIT: u32 = 20;

/// A stored string as terminal text: control characters (C0, DEL, C1) are shown escaped
/// (`\u{1b}`), so a Message-ID, a remote reply or an address that a sender or a remote
/// server chose cannot move the cursor, recolour or retitle the operator's terminal, or
/// forge a line of the timeline (threat model: terminal injection).
pub struct Clean<'a>(pub &'a str);

impl std::fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

fn clean_opt<'a>(value: Option<&'a str>, absent: &'a str) -> Clean<'a> {
    Clean(value.unwrap_or(absent))
}

/// The timelines `what` names (none: nothing found).
pub async fn trace(store: &Store, what: &str) -> Result<Vec<Timeline>, StoreError> {
    let what = what.trim();
    if let Some(t) = store.timeline(what).await? {
        return Ok(vec![t]);
    }
    let mut filters = vec![Filter {
        message_id: Some(what.to_owned()),
        limit: Some(TRACE_LIMIT),
        ..Filter::default()
    }];
    if what.contains('@') && !what.starts_with('<') {
        filters.push(Filter {
            recipient: Some(what.to_owned()),
            limit: Some(TRACE_LIMIT),
            ..Filter::default()
        });
    }
    for filter in filters {
        let page = store.search(&filter).await?;
        if page.messages.is_empty() {
            continue;
        }
        let mut out = Vec::new();
        for m in page.messages {
            if let Some(t) = store.timeline(&m.queue_id).await? {
                out.push(t);
            }
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

/// A time for people: RFC 3339 with milliseconds, UTC.
pub fn when(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn message_line(out: &mut String, m: &Message) {
    let _ = writeln!(
        out,
        "message {}  {}  host {}  queued {}{}",
        Clean(&m.queue_id),
        m.status,
        clean_opt(m.host.as_deref(), "? (queued event not recorded)"),
        when(m.queued_at),
        m.final_at
            .map(|t| format!("  final {}", when(t)))
            .unwrap_or_default()
    );
}

/// The timelines as text.
pub fn render_timelines(timelines: &[Timeline]) -> String {
    let mut out = String::new();
    for (i, t) in timelines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let m = &t.message;
        message_line(&mut out, m);
        let _ = writeln!(
            out,
            "  from <{}>  message-id <{}>  size {}  kind {}{}",
            clean_opt(m.sender.as_deref(), "?"),
            clean_opt(m.message_id.as_deref(), "-"),
            m.size.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            Clean(&m.kind),
            m.bounce_of
                .as_deref()
                .map(|b| format!(" (bounce of {})", Clean(b)))
                .unwrap_or_default()
        );
        if let Some(subject) = &m.subject {
            let _ = writeln!(out, "  subject {subject:?}");
        }
        if m.app.is_some() || m.lane.is_some() {
            let _ = writeln!(
                out,
                "  app {}  lane {}",
                clean_opt(m.app.as_deref(), "-"),
                clean_opt(m.lane.as_deref(), "-")
            );
        }
        if !m.fixups.is_empty() {
            // Added or removed by mailman (issue 19): `date,message-id,from,to`, `bcc`.
            let _ = writeln!(out, "  fix-ups {}", Clean(&m.fixups.join(",")));
        }
        if m.edge_id.is_some() || m.edge_client.is_some() {
            let _ = writeln!(
                out,
                "  edge id {}  client {}  posted from {}",
                clean_opt(m.edge_id.as_deref(), "-"),
                clean_opt(m.edge_client.as_deref(), "-"),
                clean_opt(m.post_client.as_deref(), "-")
            );
        }
        let _ = writeln!(out, "  recipients:");
        for r in &t.recipients {
            let _ = writeln!(
                out,
                "    {}  {}{}  attempts {}{}",
                Clean(&r.recipient),
                Clean(&r.status),
                if r.is_final { " (final)" } else { "" },
                r.attempts,
                r.reply
                    .as_deref()
                    .map(|s| format!("  {s:?}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "  events:");
        for e in &t.events {
            let line = match &e.what {
                What::Queued(q) => format!(
                    "queued for {} recipient(s){}",
                    q.recipients.len(),
                    if q.held { " (held)" } else { "" }
                ),
                What::Recipient(r) => {
                    let mut s = format!("{}  {}", Clean(&r.recipient), r.outcome);
                    if let Some(code) = r.code {
                        let _ = write!(s, "  {code}");
                    }
                    if let Some(dsn) = &r.dsn {
                        let _ = write!(s, " {}", Clean(dsn));
                    }
                    if let Some(mx) = &r.mx {
                        let _ = write!(s, "  via {}", Clean(mx));
                        if let Some(ip) = &r.ip {
                            let _ = write!(s, "[{}]", Clean(ip));
                        }
                        if r.tls == Some(true) {
                            s.push_str(" tls");
                        }
                    }
                    if let Some(n) = r.attempt {
                        let _ = write!(s, "  attempt {n}");
                    }
                    if let Some(by) = &r.by {
                        let _ = write!(s, "  by {}", Clean(by));
                    }
                    if !r.reply.is_empty() {
                        let _ = write!(s, "  {:?}", r.reply);
                    }
                    s
                }
                What::BounceQueued {
                    bounce_queue_id,
                    recipients,
                } => format!(
                    "bounce {} queued for {}",
                    Clean(bounce_queue_id),
                    Clean(&recipients.join(", "))
                ),
            };
            let _ = writeln!(out, "    {}  {line}", when(e.at));
        }
    }
    out
}

/// Stuck messages as text.
pub fn render_stuck(count: u64, messages: &[Message], stuck_after: Duration) -> String {
    let mut out = format!(
        "{count} stuck message(s) (no final outcome for every recipient {} after queueing)\n",
        humantime::format_duration(stuck_after)
    );
    for m in messages {
        message_line(&mut out, m);
    }
    out
}
