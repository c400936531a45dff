//! What `mailman queue` shows: the messages still in the spool (not yet handed to the post
//! office) and those set aside in `rejected/`, each with its age, recipients, attempts and
//! why the last attempt failed, read from the spool directory (mailman need not run).
//!
//! Only each file's header line is read, at most [`MAX_HEADER`] bytes, never the message.
//!
//! Not here: the spool's format and writes ([`crate::spool`]).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::spool::{read_record, AttemptRecord, SpoolHeader};

/// Longest header line read (a header with 1,000 long recipients fits).
pub const MAX_HEADER: u64 = 1024 * 1024;

/// One message in the spool.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// mailman's message id.
    pub id: String,
    /// `waiting` (to be posted) or `rejected` (refused for good, kept for an operator).
    pub state: &'static str,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub client: String,
    pub received_at: u64,
    pub age_seconds: u64,
    pub size: u64,
    /// Failed posts recorded (0: none yet, or spooled by an older mailman).
    pub attempts: u32,
    pub last_attempt_at: Option<u64>,
    pub last_error: Option<String>,
}

/// Every `.msg` in `dir` and `dir/rejected`, oldest first; unreadable files are listed in
/// the second value with why.
pub fn list(dir: &Path, now: u64) -> std::io::Result<(Vec<Entry>, Vec<String>)> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (sub, state) in [
        (dir.to_path_buf(), "waiting"),
        (dir.join("rejected"), "rejected"),
    ] {
        let listing = match std::fs::read_dir(&sub) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && state == "rejected" => continue,
            Err(e) => return Err(e),
        };
        for item in listing {
            let path: PathBuf = item?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("msg") {
                continue;
            }
            match header(&path) {
                Ok(h) => {
                    let record = read_record(&path.with_extension("state"));
                    entries.push(entry(h, state, record, now));
                }
                Err(why) => problems.push(format!("{}: {why}", path.display())),
            }
        }
    }
    entries.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
    Ok((entries, problems))
}

fn entry(h: SpoolHeader, state: &'static str, record: Option<AttemptRecord>, now: u64) -> Entry {
    let record = record.unwrap_or_default();
    let tried = record.attempts > 0;
    Entry {
        id: h.id,
        state,
        mail_from: h.mail_from,
        rcpt_to: h.rcpt_to,
        client: h.client,
        age_seconds: now.saturating_sub(h.received_at),
        received_at: h.received_at,
        size: h.size,
        attempts: record.attempts,
        last_attempt_at: tried.then_some(record.last_attempt_at),
        last_error: tried.then_some(record.last_error),
    }
}

/// The header line of a spool file.
fn header(path: &Path) -> Result<SpoolHeader, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    std::io::BufReader::new(file.take(MAX_HEADER))
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if line.last() != Some(&b'\n') {
        return Err("no header line".into());
    }
    serde_json::from_slice(&line).map_err(|e| format!("header: {e}"))
}

/// Characters a terminal would act on, escaped (senders and clients chose these).
fn clean(text: &str) -> String {
    text.chars().flat_map(char::escape_default).collect()
}

/// An age as `3h12m` (seconds under a minute).
fn age(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs))
        .to_string()
        .replace(' ', "")
}

/// The listing for a shell: one block per message.
pub fn render(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "the spool is empty: every message was handed to the post office\n".into();
    }
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!(
            "{}  {}  age {}  {} bytes  from <{}>  to {}\n",
            clean(&e.id),
            e.state,
            age(e.age_seconds),
            e.size,
            clean(&e.mail_from),
            clean(&e.rcpt_to.join(", ")),
        ));
        match (&e.last_error, e.attempts) {
            (Some(why), n) => out.push_str(&format!("    attempts {n}; last: {}\n", clean(why))),
            (None, _) => out.push_str("    no failed attempt recorded (being posted now, or spooled by an older mailman)\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_waiting_and_rejected_with_their_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = crate::spool::Spool::open(dir.path(), 1 << 20).unwrap();
        let header = |id: &str, at: u64| SpoolHeader {
            v: 1,
            id: id.into(),
            mail_from: "a@x.test".into(),
            rcpt_to: vec!["b@y.test".into()],
            client: "127.0.0.1".into(),
            received_at: at,
            size: 5,
            app: None,
            fixups: Vec::new(),
        };
        spool.store(&header("m2", 200), &[b"hello"]).await.unwrap();
        spool.store(&header("m1", 100), &[b"hello"]).await.unwrap();
        spool.store(&header("m3", 300), &[b"hello"]).await.unwrap();
        spool.note_attempt("m1", "postoffice unreachable: refused");
        spool.note_attempt("m1", "postoffice unavailable (503): queue down\u{1b}[2J");
        spool.note_attempt("m3", "refused by the post office: 403 no");
        spool.set_aside("m3");
        let (entries, problems) = list(dir.path(), 1000).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let ids: Vec<_> = entries.iter().map(|e| (e.id.as_str(), e.state)).collect();
        assert_eq!(
            ids,
            [("m1", "waiting"), ("m2", "waiting"), ("m3", "rejected")]
        );
        assert_eq!(entries[0].attempts, 2);
        assert_eq!(entries[0].age_seconds, 900);
        assert!(entries[0].last_error.as_deref().unwrap().contains("503"));
        assert_eq!(entries[1].attempts, 0);
        assert_eq!(entries[2].attempts, 1);
        let text = render(&entries);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            text.contains("attempts 2; last: postoffice unavailable (503)"),
            "{text}"
        );
        assert!(text.contains("age 15m"), "{text}");
        // Handed over: the message and its record are gone.
        spool.remove("m1");
        assert!(!dir.path().join("m1.state").exists());
        let (entries, _) = list(dir.path(), 1000).unwrap();
        assert_eq!(entries.len(), 2);
        // A record whose message is gone is deleted at the next start.
        std::fs::write(dir.path().join("gone.state"), b"{}").unwrap();
        drop(spool);
        let _ = crate::spool::Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!dir.path().join("gone.state").exists());
    }
}
