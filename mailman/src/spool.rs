//! The local spool: every message is on disk, fsynced, before the client hears `250`.
//!
//! One file per message, `<message id>.msg`, in one directory: a JSON header line
//! ([`SpoolHeader`]), `\n`, then the message bytes (with the `Received:` header). A file is
//! written as `<id>.tmp`, fsynced, renamed to `.msg`, and the directory fsynced.
//!
//! Group commit: sessions write their `.tmp` files concurrently and queue them with the one
//! committer task, which takes every file queued so far as a batch, fsyncs them, renames them
//! and fsyncs the directory once for the whole batch. Under load one batch carries many
//! sessions' messages, so the cost of a disk flush is shared. Leftover `.tmp` files (a crash
//! before the commit; nobody was told `250`) are deleted at start.
//!
//! Recycling: creating and deleting an inode per message costs more kernel time than the
//! fsync on ext4, so a forwarded message's file is renamed to `<id>.free` (small files only, up
//! to [`FREE_POOL`] of them) and a later message is written over it, then renamed to
//! `<id>.msg`. A `.free` file is overwritten with zeros as it is renamed, so no message
//! outlives its delivery in it; `.free` files found at start are zeroed too. Zeroed in place,
//! not truncated: the file keeps its disk blocks, so the next message written over it needs no
//! block allocation and its `fdatasync` no journal commit. (Truncating to 0 instead made each
//! fdatasync about three times as long and cost a third of mailman's throughput.)
//!
//! Modes: the directory (and `rejected/`) is 0700 and every file 0600; a spool directory or
//! file found with wider modes at start is narrowed, with a warning.
//!
//! Messages that the postoffice refused for good after the client was told `250` are moved to
//! `rejected/` for an operator; they do not count towards the cap.
//!
//! Attempts: after a failed post a message gets `<id>.state` beside its `.msg`, a JSON
//! [`AttemptRecord`] (attempts so far, when, and why the last one failed) for `mailman queue`.
//! It is written through `<id>.state.tmp` and a rename, not fsynced (it explains, it does not
//! hold mail); it goes with its message (deleted, or moved to `rejected/` with the refusal).
//! A spool without these files (an older mailman's) lists its messages with no attempts
//! known; a `.state` without its `.msg` is deleted at start.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Why the spool could not take or give a message.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {max} bytes used)")]
    Full { used: u64, max: u64 },
    #[error("spool I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool file {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("the spool committer has stopped")]
    Stopped,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The envelope of a spooled message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolHeader {
    /// Format version.
    pub v: u32,
    /// mailman's message id, sent to the postoffice as `id`.
    pub id: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The client's address.
    pub client: String,
    /// Unix seconds when the message was received.
    pub received_at: u64,
    /// Length of the message bytes after the header line (detects a truncated file).
    pub size: u64,
    /// The app inside the host that sent it (issue 17); absent in files of older mailmen and
    /// for messages from clients known only by their address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<hedwig_core::wire::App>,
    /// The header fix-ups made to the message ([`crate::fixup`], issue 19), posted as
    /// `fixups`; absent in files of older mailmen and when nothing was changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixups: Vec<String>,
}

/// What the spool keeps about a message's failed posts (`<id>.state`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Posts that did not hand the message over.
    pub attempts: u32,
    /// Unix seconds of the last one.
    pub last_attempt_at: u64,
    /// Why the last one failed (or, in `rejected/`, why the post office refused it).
    pub last_error: String,
}

/// Longest `last_error` kept (bytes).
const MAX_ERROR: usize = 1000;

/// Reads `<id>.state` at `path`; `None` when there is none or it cannot be read.
pub fn read_record(path: &Path) -> Option<AttemptRecord> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() > 64 * 1024 {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// A message read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub header: SpoolHeader,
    pub message: Vec<u8>,
}

struct Commit {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// Files kept for reuse at most.
pub const FREE_POOL: usize = 512;
/// Files larger than this are deleted rather than reused.
const FREE_MAX_LEN: u64 = 256 * 1024;

/// The spool directory and its committer.
pub struct Spool {
    dir: PathBuf,
    max: u64,
    used: Arc<AtomicU64>,
    commits: mpsc::UnboundedSender<Commit>,
    free: std::sync::Mutex<Vec<PathBuf>>,
    /// Ids whose message has a `<id>.state` file (a failed post was recorded): only these
    /// have one to delete with the message. Most messages never have one, and an unlink of a
    /// missing name still costs a locked directory lookup per message.
    states: std::sync::Mutex<HashSet<String>>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, deletes leftover `.tmp` files and starts the
    /// committer. Returns the spool and the headers of the messages already in it, oldest first.
    /// Must be called inside a tokio runtime.
    pub fn open(dir: &Path, max: u64) -> Result<(Spool, Vec<SpoolHeader>), SpoolError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("rejected"))
            .map_err(io_err(dir))?;
        private(dir, 0o700)?;
        private(&dir.join("rejected"), 0o700)?;
        let mut found = Vec::new();
        let mut free = Vec::new();
        let mut states = HashSet::new();
        let mut used = 0u64;
        let mut widened = 0usize;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_file()) && narrow(&path, 0o600)? {
                widened += 1;
            }
            match path.extension().and_then(|e| e.to_str()) {
                Some("free") if free.len() < FREE_POOL => {
                    // Left by an older version (which kept the bytes) or a crash before the
                    // scrub: drop the contents.
                    std::fs::metadata(&path)
                        .and_then(|m| scrub(&path, m.len()))
                        .map_err(io_err(&path))?;
                    free.push(path)
                }
                Some("state") if !path.with_extension("msg").exists() => {
                    let _ = std::fs::remove_file(&path);
                }
                Some("state") => {
                    if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                        states.insert(id.to_owned());
                    }
                }
                Some("free") | Some("tmp") => {
                    tracing::info!(path = %path.display(), "removing an uncommitted spool file");
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                }
                Some("msg") => match read_file(&path) {
                    Ok(spooled) => {
                        used += entry.metadata().map(|m| m.len()).unwrap_or(0);
                        found.push(spooled.header);
                    }
                    Err(err) => {
                        // Never delete what might be someone's mail: set it aside.
                        tracing::error!(%err, "moving a damaged spool file aside");
                        let aside = path.with_extension("damaged");
                        std::fs::rename(&path, &aside).map_err(io_err(&path))?;
                    }
                },
                _ => {}
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("rejected")) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) && narrow(&entry.path(), 0o600)? {
                    widened += 1;
                }
            }
        }
        if widened > 0 {
            tracing::warn!(
                dir = %dir.display(),
                files = widened,
                "spool files were readable by others; narrowed to mode 0600"
            );
        }
        found.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(committer(dir.to_path_buf(), rx));
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                max,
                used: Arc::new(AtomicU64::new(used)),
                commits: tx,
                free: std::sync::Mutex::new(free),
                states: std::sync::Mutex::new(states),
            },
            found,
        ))
    }

    fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    /// Bytes of the spooled messages.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Stores a message durably: when this returns `Ok`, the message survives a crash.
    /// `parts` are written one after the other as the message bytes.
    pub async fn store(&self, header: &SpoolHeader, parts: &[&[u8]]) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(header).map_err(|e| SpoolError::Damaged {
            path: self.path(&header.id, "tmp"),
            why: e.to_string(),
        })?;
        line.push(b'\n');
        let total = line.len() as u64 + parts.iter().map(|p| p.len() as u64).sum::<u64>();
        // Reserve the space first so concurrent sessions cannot overshoot the cap together.
        let before = self.used.fetch_add(total, Ordering::Relaxed);
        if before + total > self.max {
            self.used.fetch_sub(total, Ordering::Relaxed);
            return Err(SpoolError::Full {
                used: before,
                max: self.max,
            });
        }
        let recycled = self.free.lock().ok().and_then(|mut f| f.pop());
        let tmp = recycled.unwrap_or_else(|| self.path(&header.id, "tmp"));
        let result = self
            .write_and_commit(&tmp, &self.path(&header.id, "msg"), line, parts, total)
            .await;
        if result.is_err() {
            self.used.fetch_sub(total, Ordering::Relaxed);
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    async fn write_and_commit(
        &self,
        tmp: &Path,
        dest: &Path,
        line: Vec<u8>,
        parts: &[&[u8]],
        total: u64,
    ) -> Result<(), SpoolError> {
        // Written inline (a page-cache copy); the flush is the committer's. A recycled file is
        // overwritten from the start and cut to the new length.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(tmp)
            .map_err(io_err(tmp))?;
        file.write_all(&line).map_err(io_err(tmp))?;
        for part in parts {
            file.write_all(part).map_err(io_err(tmp))?;
        }
        file.set_len(total).map_err(io_err(tmp))?;
        let (done, wait) = oneshot::channel();
        self.commits
            .send(Commit {
                file,
                tmp: tmp.to_path_buf(),
                dest: dest.to_path_buf(),
                done,
            })
            .map_err(|_| SpoolError::Stopped)?;
        wait.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Reads a spooled message.
    pub fn load(&self, id: &str) -> Result<Spooled, SpoolError> {
        read_file(&self.path(id, "msg"))
    }

    /// Reads a message set aside in `rejected/`.
    pub fn load_rejected(&self, id: &str) -> Result<Spooled, SpoolError> {
        read_file(&self.dir.join("rejected").join(format!("{id}.msg")))
    }

    /// Deletes a message once the postoffice holds it (or refused it while the client waited).
    /// Small files are kept as `.free` for the next message.
    pub fn remove(&self, id: &str) {
        // A poisoned lock: unlink anyway, as if the message had a record.
        if self.states.lock().map_or(true, |mut s| s.remove(id)) {
            let _ = std::fs::remove_file(self.path(id, "state"));
        }
        let path = self.path(id, "msg");
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(err) => {
                tracing::error!(%err, path = %path.display(), "cannot remove spool file");
                return;
            }
        };
        let recycle = len <= FREE_MAX_LEN
            && self
                .free
                .lock()
                .map(|f| f.len() < FREE_POOL)
                .unwrap_or(false);
        let result = if recycle {
            // Named after the message it held: unique, never clashes with a pooled file.
            let free = self.path(id, "free");
            std::fs::rename(&path, &free)
                // The message is delivered: its bytes must not stay in the file.
                .and_then(|_| scrub(&free, len))
                .map(|_| {
                    if let Ok(mut f) = self.free.lock() {
                        f.push(free);
                    }
                })
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => {
                self.used.fetch_sub(len, Ordering::Relaxed);
            }
            Err(err) => tracing::error!(%err, path = %path.display(), "cannot remove spool file"),
        }
    }

    /// Records a failed post of `id` in `<id>.state` (one more attempt, now, `why`). A
    /// failure to write it is logged, never fatal: the message itself is safe.
    pub fn note_attempt(&self, id: &str, why: &str) {
        let path = self.path(id, "state");
        if let Ok(mut states) = self.states.lock() {
            states.insert(id.to_owned());
        }
        let mut record = read_record(&path).unwrap_or_default();
        record.attempts = record.attempts.saturating_add(1);
        record.last_attempt_at = hedwig_core::unix_now();
        let mut why = why.to_owned();
        if why.len() > MAX_ERROR {
            let mut cut = MAX_ERROR;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            why.truncate(cut);
        }
        record.last_error = why;
        let tmp = self.dir.join(format!("{id}.state.tmp"));
        let result = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                file.write_all(&bytes)
            })
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(err) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(%err, path = %path.display(), "cannot record a forwarding attempt");
        }
    }

    /// Moves a message the postoffice refused for good (after the client was told `250`) to
    /// `rejected/` for an operator.
    pub fn set_aside(&self, id: &str) {
        let path = self.path(id, "msg");
        let to = self.dir.join("rejected").join(format!("{id}.msg"));
        if let Ok(mut states) = self.states.lock() {
            states.remove(id);
        }
        let _ = std::fs::rename(
            self.path(id, "state"),
            self.dir.join("rejected").join(format!("{id}.state")),
        );
        match std::fs::metadata(&path).and_then(|m| std::fs::rename(&path, &to).map(|_| m.len())) {
            Ok(len) => {
                self.used.fetch_sub(len, Ordering::Relaxed);
            }
            Err(err) => tracing::error!(%err, path = %path.display(), "cannot move spool file"),
        }
    }
}

/// Overwrites the file at `path`, `len` bytes long, with zeros, keeping its length and its
/// blocks (see the module docs for why not a truncate).
fn scrub(path: &Path, len: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];
    let mut file = File::options().write(true).open(path)?;
    let mut left = len;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64);
        file.write_all(&ZEROS[..n as usize])?;
        left -= n;
    }
    Ok(())
}

/// Narrows the mode of `path` to `mode` if it allows more; whether it did. A path mailman may
/// not change (owned by another user) is left as it is, with a warning: refusing to start
/// would stop the mail, not protect it.
fn narrow(path: &Path, mode: u32) -> Result<bool, SpoolError> {
    let current = std::fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if current & !mode == 0 {
        return Ok(false);
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode)) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{current:o}"),
                %err,
                "spool path is open to others and cannot be narrowed; fix its owner or mode"
            );
            Ok(false)
        }
        Err(err) => Err(io_err(path)(err)),
    }
}

/// Narrows a spool directory to `mode`, with a warning when it was wider.
fn private(dir: &Path, mode: u32) -> Result<(), SpoolError> {
    let before = std::fs::metadata(dir)
        .map_err(io_err(dir))?
        .permissions()
        .mode()
        & 0o777;
    if narrow(dir, mode)? {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{before:o}"),
            "the spool directory was open to others; narrowed to mode 0700"
        );
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Spooled, SpoolError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let damaged = |why: String| SpoolError::Damaged {
        path: path.to_path_buf(),
        why,
    };
    let nl = memchr::memchr(b'\n', &bytes).ok_or_else(|| damaged("no header line".into()))?;
    let header: SpoolHeader =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| damaged(e.to_string()))?;
    let message = bytes[nl + 1..].to_vec();
    if message.len() as u64 != header.size {
        return Err(damaged(format!(
            "{} message bytes, the header says {}",
            message.len(),
            header.size
        )));
    }
    Ok(Spooled { header, message })
}

/// Takes every queued file as one batch: fsync the files concurrently (the filesystem journal
/// then commits them together), rename each, and fsync the directory once for the batch.
async fn committer(dir: PathBuf, mut rx: mpsc::UnboundedReceiver<Commit>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut syncs = tokio::task::JoinSet::new();
        for commit in batch.drain(..) {
            syncs.spawn_blocking(move || {
                let result = commit
                    .file
                    .sync_data()
                    .and_then(|_| std::fs::rename(&commit.tmp, &commit.dest))
                    .map_err(io_err(&commit.tmp));
                (commit.done, result)
            });
        }
        let mut renamed = Vec::new();
        while let Some(joined) = syncs.join_next().await {
            match joined {
                Ok((done, Ok(()))) => renamed.push(done),
                Ok((done, Err(err))) => {
                    let _ = done.send(Err(err));
                }
                // The sender was dropped with the task: that session sees `Stopped`.
                Err(err) => tracing::error!(%err, "spool fsync task failed"),
            }
        }
        if renamed.is_empty() {
            continue;
        }
        // One directory fsync makes every rename of the batch durable.
        let d = dir.clone();
        let dir_sync =
            tokio::task::spawn_blocking(move || File::open(&d).and_then(|f| f.sync_all()))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        for done in renamed {
            let _ = done.send(match &dir_sync {
                Ok(()) => Ok(()),
                Err(e) => Err(SpoolError::Io {
                    path: dir.clone(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: &str, size: usize, at: u64) -> SpoolHeader {
        SpoolHeader {
            v: 1,
            id: id.into(),
            mail_from: "a@b.test".into(),
            rcpt_to: vec!["c@d.test".into()],
            client: "127.0.0.1".into(),
            received_at: at,
            size: size as u64,
            app: None,
            fixups: Vec::new(),
        }
    }

    /// A spool file of a mailman from before the app identity (no `app` in its header) is
    /// read as a message without one; a header with one keeps it through the file.
    #[test]
    fn files_without_the_app_field_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("OLD.msg");
        std::fs::write(
            &old,
            b"{\"v\":1,\"id\":\"OLD\",\"mail_from\":\"a@b.test\",\"rcpt_to\":[\"c@d.test\"],\
\"client\":\"127.0.0.1\",\"received_at\":5,\"size\":3}\nabc",
        )
        .unwrap();
        let back = read_file(&old).unwrap();
        assert_eq!(back.header.app, None);
        assert_eq!(back.header.rcpt_to, ["c@d.test"]);
        assert_eq!(back.message, b"abc");
        let app = hedwig_core::wire::App {
            name: "billing".into(),
            source: hedwig_core::wire::AppSource::Login,
            image: None,
            compose_project: None,
            compose_service: None,
            lane: Some("transactional".into()),
        };
        let with = SpoolHeader {
            app: Some(app.clone()),
            ..header("NEW", 3, 6)
        };
        let mut bytes = serde_json::to_vec(&with).unwrap();
        bytes.extend_from_slice(b"\nabc");
        let new = dir.path().join("NEW.msg");
        std::fs::write(&new, bytes).unwrap();
        assert_eq!(read_file(&new).unwrap().header.app, Some(app));
        // and a header without one is written as older mailmen wrote it
        let line = serde_json::to_string(&header("X", 1, 1)).unwrap();
        assert!(!line.contains("app"), "{line}");
    }

    /// A spool file of a mailman from before the fix-ups were recorded (issue 19: no
    /// `fixups` in its header) reads as a message with none; a header with some keeps them,
    /// and one without is written as older mailmen wrote it.
    #[test]
    fn files_without_the_fixups_field_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("OLD.msg");
        std::fs::write(
            &old,
            b"{\"v\":1,\"id\":\"OLD\",\"mail_from\":\"a@b.test\",\"rcpt_to\":[\"c@d.test\"],\
\"client\":\"127.0.0.1\",\"received_at\":5,\"size\":3}\nabc",
        )
        .unwrap();
        let back = read_file(&old).unwrap();
        assert!(back.header.fixups.is_empty());
        assert_eq!(back.message, b"abc");
        let with = SpoolHeader {
            fixups: vec!["date".into(), "message-id".into(), "bcc".into()],
            ..header("NEW", 3, 6)
        };
        let mut bytes = serde_json::to_vec(&with).unwrap();
        bytes.extend_from_slice(b"\nabc");
        let new = dir.path().join("NEW.msg");
        std::fs::write(&new, bytes).unwrap();
        assert_eq!(read_file(&new).unwrap().header, with);
        let line = serde_json::to_string(&header("X", 1, 1)).unwrap();
        assert!(!line.contains("fixups"), "{line}");
    }

    #[tokio::test]
    async fn a_failed_posts_record_goes_with_its_message_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = |id: &str| dir.path().join(format!("{id}.state"));
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        for id in ["A", "B", "C"] {
            spool.store(&header(id, 1, 1), &[b"x"]).await.unwrap();
        }
        spool.note_attempt("A", "503 from the post office");
        spool.note_attempt("B", "connection refused");
        assert!(state("A").exists() && state("B").exists());
        spool.remove("A");
        assert!(!state("A").exists(), "removed with its message");
        // C never had a record: its removal touches no .state name.
        spool.remove("C");
        drop(spool);
        // After a restart the record found on disk still goes with its message.
        let (spool, found) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(read_record(&state("B")).unwrap().attempts, 1);
        spool.remove("B");
        assert!(!state("B").exists());
    }

    #[tokio::test]
    async fn store_load_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, found) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(found.is_empty());
        let msg = b"Received: x\r\n\r\nbody \xe9\r\n";
        spool
            .store(&header("B", msg.len(), 2), &[&msg[..13], &msg[13..]])
            .await
            .unwrap();
        spool.store(&header("A", 3, 1), &[b"abc"]).await.unwrap();
        assert!(spool.used() > 0);
        let back = spool.load("B").unwrap();
        assert_eq!(back.message, msg);
        assert_eq!(back.header.id, "B");
        // leftovers: a tmp file is removed, a damaged file set aside
        std::fs::write(dir.path().join("C.tmp"), b"partial").unwrap();
        std::fs::write(dir.path().join("D.msg"), b"{\"v\":1}\nx").unwrap();
        drop(spool);
        let (spool, found) = Spool::open(dir.path(), 1 << 20).unwrap();
        let ids: Vec<_> = found.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, vec!["A", "B"], "oldest first");
        assert!(!dir.path().join("C.tmp").exists());
        assert!(dir.path().join("D.damaged").exists());
        let used = spool.used();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("rejected")), 0o700);
        assert_eq!(mode(&dir.path().join("A.msg")), 0o600);
        spool.remove("A");
        assert!(spool.used() < used);
        // A's file is kept for reuse, zeroed, and a message written over it reads back exactly
        let a_free = std::fs::read(dir.path().join("A.free")).unwrap();
        assert!(
            !a_free.is_empty() && a_free.iter().all(|&b| b == 0),
            "{a_free:?}"
        );
        spool.store(&header("E", 1, 3), &[b"e"]).await.unwrap();
        assert!(!dir.path().join("A.free").exists());
        assert_eq!(spool.load("E").unwrap().message, b"e");
        spool.remove("E");
        spool.set_aside("B");
        assert_eq!(spool.used(), 0);
        assert!(dir.path().join("rejected/B.msg").exists());
        assert!(spool.load("A").is_err());
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn wide_modes_and_old_free_contents_are_fixed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir_all(spool_dir.join("rejected")).unwrap();
        for d in [&spool_dir, &spool_dir.join("rejected")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let old = spool_dir.join("OLD.free");
        std::fs::write(&old, b"an old delivered message").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let kept = spool_dir.join("rejected/R.msg");
        std::fs::write(&kept, b"x").unwrap();
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o664)).unwrap();
        let (_spool, _) = Spool::open(&spool_dir, 1 << 20).unwrap();
        assert_eq!(mode(&spool_dir), 0o700);
        assert_eq!(mode(&spool_dir.join("rejected")), 0o700);
        assert_eq!(mode(&old), 0o600);
        assert_eq!(mode(&kept), 0o600);
        let zeroed = std::fs::read(&old).unwrap();
        assert_eq!(zeroed.len(), b"an old delivered message".len());
        assert!(zeroed.iter().all(|&b| b == 0), "{zeroed:?}");
        // a new spool is created private
        let fresh = dir.path().join("fresh/spool");
        let (spool, _) = Spool::open(&fresh, 1 << 20).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        spool.store(&header("N", 1, 1), &[b"n"]).await.unwrap();
        assert_eq!(mode(&fresh.join("N.msg")), 0o600);
    }

    #[tokio::test]
    async fn cap_is_enforced_and_concurrent_stores_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 20_000).unwrap();
        let spool = Arc::new(spool);
        let body = vec![b'x'; 1000];
        let mut tasks = Vec::new();
        for i in 0..40 {
            let spool = spool.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                spool
                    .store(&header(&format!("M{i:02}"), body.len(), 1), &[&body])
                    .await
            }));
        }
        let mut ok = 0;
        let mut full = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(SpoolError::Full { .. }) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // each file is ~1,130 bytes: 17 fit in 20,000
        assert_eq!(ok + full, 40);
        assert!((15..=18).contains(&ok), "{ok}");
        assert!(spool.used() <= 20_000);
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .and_then(|x| x.to_str())
                    == Some("msg")
            })
            .count();
        assert_eq!(files, ok);
    }
}
