//! Capture mode: messages go into a local Maildir instead of out to the Internet (staging,
//! quickstart; like Postal's development mode).
//!
//! Each message is one file, written to `tmp/`, fsynced, then renamed into `new/` (the
//! Maildir delivery protocol, so readers never see a partial file). `Return-Path:` and one
//! `Delivered-To:` per recipient are prepended; the message bytes follow unchanged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hedwig_core::address::Recipient;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `message` for `rcpts` into the Maildir at `dir` (created if missing); returns the
/// path of the new file.
pub fn store(
    dir: &Path,
    mail_from: &str,
    rcpts: &[Recipient],
    message: &[u8],
) -> std::io::Result<PathBuf> {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.M{}P{}Q{}.hedwig",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join("tmp").join(&name);
    let mut file = std::fs::File::create(&tmp)?;
    let mut head = format!("Return-Path: <{}>\r\n", clean(mail_from));
    for rcpt in rcpts {
        head.push_str(&format!("Delivered-To: {}\r\n", clean(rcpt.as_str())));
    }
    file.write_all(head.as_bytes())?;
    file.write_all(message)?;
    file.sync_all()?;
    let new = dir.join("new").join(&name);
    std::fs::rename(&tmp, &new)?;
    Ok(new)
}

/// Addresses go into header lines: no line breaks.
fn clean(s: &str) -> String {
    s.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_into_new_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let rcpts: Vec<Recipient> = vec!["a@x.example".into(), "b\r\nEvil: 1@x".into()];
        let path = store(
            &md,
            "s@y.example",
            &rcpts,
            b"Subject: hi\r\n\r\n\xff body\r\n",
        )
        .unwrap();
        assert!(path.starts_with(md.join("new")));
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        let got = std::fs::read(&path).unwrap();
        let expected: &[u8] = b"Return-Path: <s@y.example>\r\nDelivered-To: a@x.example\r\nDelivered-To: bEvil: 1@x\r\nSubject: hi\r\n\r\n\xff body\r\n";
        assert_eq!(got, expected);
        let second = store(&md, "", &rcpts, b"x").unwrap();
        assert_ne!(second, path);
    }
}
