//! Key files (the post office secret, a mailman host key, DKIM private keys) must be readable
//! by their owner only, as OpenDKIM's `RequireSafeKeys` and sshd's `StrictModes` demand.
//!
//! [`check`] looks at a key file's mode before it is read: a file that others may read or
//! write, or that its group may read or write when that group is not the one this process runs
//! as, is *unsafe*. By default an unsafe file is used and a WARN line names it and its mode;
//! with `require_safe_keys: true` (each binary's setting) it is refused at start.
//!
//! Group access is allowed for the process's own effective group, so that the Docker setup
//! (the file on the host `chgrp 10025`, mode 0640, bind-mounted for the image's `hedwig`
//! user) is safe: only members of that group can read it.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// What [`check`] found wrong with a key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {path} is readable or writable by {who} (mode {mode:04o}): chmod 0600 it (0640 \
     is fine when its group is the one hedwig runs as), or set require_safe_keys: false"
)]
pub struct UnsafeKeyFile {
    /// `secret file`, `key file`, `DKIM key file`.
    pub what: &'static str,
    pub path: String,
    /// The permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// `others`, `group`, or `group and others`.
    pub who: &'static str,
}

/// Who besides the owner may read or write a file of `mode` and group `gid`, for a process
/// whose effective group is `egid`; `None` when nobody.
pub fn exposed_to(mode: u32, gid: u32, egid: u32) -> Option<&'static str> {
    let others = mode & 0o007 != 0;
    let group = mode & 0o070 != 0 && gid != egid;
    match (group, others) {
        (false, false) => None,
        (true, false) => Some("group"),
        (false, true) => Some("others"),
        (true, true) => Some("group and others"),
    }
}

/// The process's effective group id.
fn effective_gid() -> u32 {
    // SAFETY: getegid(2) takes no arguments, touches no memory and always succeeds.
    unsafe { libc::getegid() }
}

/// Checks the mode of the key file at `path` (`what` names it in messages: `secret file`, …).
///
/// Safe, or the file cannot be stat'ed (the read that follows reports that): `Ok`. Unsafe:
/// a WARN log line naming the file and its mode and `Ok`, or `Err` when `require_safe`.
pub fn check(what: &'static str, path: &Path, require_safe: bool) -> Result<(), UnsafeKeyFile> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.mode() & 0o7777;
    let Some(who) = exposed_to(mode, meta.gid(), effective_gid()) else {
        return Ok(());
    };
    let unsafe_file = UnsafeKeyFile {
        what,
        path: path.display().to_string(),
        mode,
        who,
    };
    if require_safe {
        return Err(unsafe_file);
    }
    tracing::warn!(
        file = %unsafe_file.path,
        mode = %format!("{mode:04o}"),
        "{what} is readable or writable by {who}: chmod 0600 it; require_safe_keys: true refuses such files"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn who_may_read() {
        assert_eq!(exposed_to(0o600, 5, 7), None);
        assert_eq!(exposed_to(0o400, 5, 7), None);
        assert_eq!(exposed_to(0o640, 7, 7), None, "our own group");
        assert_eq!(exposed_to(0o640, 5, 7), Some("group"));
        assert_eq!(exposed_to(0o620, 5, 7), Some("group"), "group-writable");
        assert_eq!(exposed_to(0o604, 5, 7), Some("others"));
        assert_eq!(exposed_to(0o644, 7, 7), Some("others"));
        assert_eq!(exposed_to(0o644, 5, 7), Some("group and others"));
        assert_eq!(exposed_to(0o602, 7, 7), Some("others"), "world-writable");
    }

    #[test]
    fn unsafe_files_warn_or_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check("secret file", &f, true), Ok(()));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check("secret file", &f, false), Ok(()), "warn only");
        let err = check("secret file", &f, true).unwrap_err();
        assert_eq!(err.mode, 0o644);
        let text = err.to_string();
        assert!(text.contains(&f.display().to_string()), "{text}");
        assert!(text.contains("mode 0644"), "{text}");
        assert!(text.contains("others"), "{text}");
        // missing: left to the read that follows
        assert_eq!(check("secret file", &dir.path().join("nope"), true), Ok(()));
    }
}
