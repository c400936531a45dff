//! `keygen dkim`: a new DKIM key pair written to disk (mode 0600), with the DNS TXT record
//! to publish and the worker config lines that use the key.
//!
//! Key generation and the record format come from [`hedwig_message::dkim`], the same code
//! the worker signs with, so what is printed is what the worker will sign for. Nothing here
//! talks to DNS; `keygen dns` checks that the record was published.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use hedwig_message::dkim::{self, Algorithm};

use crate::zone::DnsRecord;
use crate::Error;

/// What `keygen dkim` is asked to make.
#[derive(Debug, Clone)]
pub struct DkimRequest {
    /// The signing (`d=`) domain, as the operator typed it.
    pub domain: String,
    /// The selector; `None` picks [`default_selector`] of the current month.
    pub selector: Option<String>,
    pub algorithm: Algorithm,
    /// Directory the private key is written to.
    pub out_dir: PathBuf,
    /// Replace an existing key file.
    pub force: bool,
}

/// A key that was written, and what to publish for it.
#[derive(Debug, Clone)]
pub struct NewDkimKey {
    /// A-labels, lowercase.
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// Absolute path of the private key (mode 0600).
    pub key_file: PathBuf,
    /// The TXT record at `<selector>._domainkey.<domain>`.
    pub record: DnsRecord,
}

impl NewDkimKey {
    /// The text `keygen dkim` prints: the zone-file line, then the worker's `dkim:` YAML.
    pub fn instructions(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# DKIM {} key for {}, selector {}; private key written to {} (mode 0600).",
            self.algorithm,
            self.domain,
            self.selector,
            self.key_file.display()
        );
        let _ = writeln!(out, "#");
        let _ = writeln!(
            out,
            "# 1. Publish this TXT record in the DNS zone of {}:",
            self.domain
        );
        let _ = writeln!(out, "{}", self.record.zone_line);
        let _ = writeln!(out, "#");
        let _ = writeln!(
            out,
            "# 2. Add the key to the worker config (merge into an existing `dkim: keys:` list),"
        );
        let _ = writeln!(
            out,
            "#    then check the record with: keygen dns {} --dkim-config worker.yaml --sending-ip IP --ehlo NAME",
            self.domain
        );
        out.push_str(&self.worker_yaml());
        out
    }

    /// The worker config lines using this key (the `dkim:` section with one key).
    pub fn worker_yaml(&self) -> String {
        format!(
            "dkim:\n  keys:\n    - domain: {}\n      selector: \"{}\"\n      algorithm: {}\n      key_file: \"{}\"\n",
            self.domain,
            self.selector,
            self.algorithm,
            yaml_escape(&self.key_file.display().to_string())
        )
    }
}

/// Escapes a string for a double-quoted YAML scalar.
fn yaml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Generates a key pair for `request`, writes the private key and returns what to publish.
pub fn create_key(request: &DkimRequest, now_unix: u64) -> Result<NewDkimKey, Error> {
    let domain = crate::normalize_domain(&request.domain)?;
    let selector = match &request.selector {
        Some(s) => check_selector(s)?,
        None => default_selector(now_unix),
    };
    let file_name = format!("{domain}.{selector}.{}.pem", request.algorithm);
    let dir = out_dir(&request.out_dir)?;
    let key_file = dir.join(&file_name);
    if !request.force && key_file.exists() {
        return Err(Error::KeyExists(key_file));
    }
    let generated = dkim::generate(request.algorithm)?;
    write_private(&key_file, generated.private_pem.as_bytes(), request.force)?;
    let record = DnsRecord::txt(&format!("{selector}._domainkey.{domain}"), &generated.txt);
    Ok(NewDkimKey {
        domain,
        selector,
        algorithm: request.algorithm,
        key_file,
        record,
    })
}

/// The absolute path of `--out-dir`, created (mode 0700, missing parents too) when it does not
/// exist yet: a folder of private keys is its owner's only.
fn out_dir(dir: &Path) -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(Error::NotADirectory(dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?,
        Err(e) => return Err(io(e)),
    }
    std::fs::canonicalize(dir).map_err(io)
}

/// Writes `bytes` to `path` with mode 0600, synced. Without `replace`, an existing file is
/// never touched (`create_new`); with it, the key goes to a temporary file in the same
/// directory first and is renamed over the old one, so a crash leaves one whole key.
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let target = if replace {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    } else {
        path.to_path_buf()
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists if !replace => Error::KeyExists(path.to_path_buf()),
            _ => Error::Io {
                path: target.clone(),
                source,
            },
        })?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&target);
        return Err(e);
    }
    if replace {
        if let Err(e) = std::fs::rename(&target, path).map_err(io(path)) {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
    }
    // The new directory entry survives a crash too (best effort: not every fs allows it).
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// `YYYYMM` of the UTC month containing `unix` seconds, e.g. `202611`: selectors named by
/// date make rotation obvious (publish the new one, switch, retire the old one).
pub fn default_selector(unix: u64) -> String {
    let (year, month, _) = civil_from_days((unix / 86_400) as i64);
    format!("{year:04}{month:02}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A selector as DNS will hold it: lowercase labels of letters, digits, `-` and `_`.
pub fn check_selector(selector: &str) -> Result<String, Error> {
    let ok = !selector.is_empty()
        && selector.len() <= 200
        && selector.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(selector.to_ascii_lowercase())
    } else {
        Err(Error::InvalidSelector(selector.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn selectors_default_to_the_month() {
        assert_eq!(default_selector(0), "197001");
        // 2026-11-23T04:43:35Z
        assert_eq!(default_selector(1_795_409_015), "202611");
        // 2024-02-29 (leap day) and 2000-03-01.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(check_selector("Ed2026.a_b-c").unwrap(), "ed2026.a_b-c");
        for bad in ["", ".x", "x.", "a..b", "a b", "a/b", &"x".repeat(64)] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_a_0600_key_matching_the_record_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let request = DkimRequest {
            domain: "Example.COM.".into(),
            selector: Some("s1".into()),
            algorithm: Algorithm::Ed25519,
            out_dir: dir.path().into(),
            force: false,
        };
        let key = create_key(&request, 0).unwrap();
        assert_eq!(key.domain, "example.com");
        assert_eq!(
            key.key_file,
            dir.path()
                .canonicalize()
                .unwrap()
                .join("example.com.s1.ed25519.pem")
        );
        let mode = std::fs::metadata(&key.key_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = std::fs::read(&key.key_file).unwrap();
        let (alg, txt) = dkim::txt_record_for_pem(&pem).unwrap();
        assert_eq!(alg, Algorithm::Ed25519);
        assert_eq!(key.record.value, txt);
        assert_eq!(key.record.name, "s1._domainkey.example.com");

        match create_key(&request, 0) {
            Err(Error::KeyExists(path)) => assert_eq!(path, key.key_file),
            other => panic!("overwrote: {other:?}"),
        }
        assert_eq!(std::fs::read(&key.key_file).unwrap(), pem);

        let forced = create_key(
            &DkimRequest {
                force: true,
                ..request
            },
            0,
        )
        .unwrap();
        let new_pem = std::fs::read(&forced.key_file).unwrap();
        assert_ne!(new_pem, pem);
        let mode = std::fs::metadata(&forced.key_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_input_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let base = DkimRequest {
            domain: "example.com".into(),
            selector: None,
            algorithm: Algorithm::Rsa,
            out_dir: dir.path().into(),
            force: false,
        };
        let bad_domain = DkimRequest {
            domain: "localhost".into(),
            ..base.clone()
        };
        assert!(matches!(
            create_key(&bad_domain, 0),
            Err(Error::InvalidDomain { .. })
        ));
        let bad_selector = DkimRequest {
            selector: Some("a b".into()),
            ..base.clone()
        };
        assert!(matches!(
            create_key(&bad_selector, 0),
            Err(Error::InvalidSelector(_))
        ));
        let no_dir = DkimRequest {
            out_dir: dir.path().join("nope"),
            ..base.clone()
        };
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let not_a_dir = DkimRequest {
            out_dir: file.clone(),
            ..base
        };
        assert!(matches!(
            create_key(&not_a_dir, 0),
            Err(Error::NotADirectory(_))
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // a missing folder is made, owner only
        let key = create_key(&no_dir, 0).unwrap();
        assert!(key
            .key_file
            .starts_with(no_dir.out_dir.canonicalize().unwrap()));
    }
}
