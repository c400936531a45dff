//! F9 (issue 11): a key file readable by group or others is named in a WARN line at start (file
//! and mode), and refused with `require_safe_keys: true`; the real `mailman` binary.
//! Addresses: 127.0.150.2 (nothing listens on port 1 there).

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `mailman` (no subcommand: the service) with only `env` set, for at most `limit`:
/// (exit status if it ended, everything it wrote to stderr until then).
fn run(env: &[(&str, String)], limit: Duration, stop_at: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailman"))
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut text = String::new();
    let mut closed = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if line.contains(stop_at) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                closed = true; // stderr closed: it is exiting
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    // Exiting: give it up to 5 s to be reaped before calling it still running.
    let reap_until = Instant::now() + Duration::from_secs(if closed { 5 } else { 0 });
    while closed && Instant::now() < reap_until && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = match child.try_wait().unwrap() {
        Some(status) => status.code(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    (status, text)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_key_file_readable_by_others_is_named_at_start_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    chmod(&key, 0o604);
    let spool = dir.path().join("spool");
    let env = |strict: bool| {
        vec![
            ("HEDWIG_LISTEN", "127.0.150.2:0".to_string()),
            ("HEDWIG_HTTP_LISTEN", "127.0.150.2:0".to_string()),
            ("HEDWIG_FQDN", "web1.example.org".to_string()),
            ("HEDWIG_KEY_FILE", key.display().to_string()),
            ("HEDWIG_POSTOFFICE", "http://127.0.150.2:1/".to_string()),
            ("HEDWIG_SPOOL_DIR", spool.display().to_string()),
            ("HEDWIG_REQUIRE_SAFE_KEYS", strict.to_string()),
        ]
    };
    let mode_field = "mode=0604";
    let (status, log) = run(&env(false), Duration::from_secs(15), mode_field);
    assert_eq!(status, None, "it should still be running: {log}");
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(mode_field))
        .unwrap_or_else(|| panic!("no WARN line naming the mode: {log}"));
    assert!(warn.contains(&key.display().to_string()), "{warn}");
    let (status, log) = run(&env(true), Duration::from_secs(15), "\u{0}");
    assert!(matches!(status, Some(s) if s != 0), "{status:?}: {log}");
    assert!(log.contains(&key.display().to_string()), "{log}");
    assert!(log.contains("mode 0604"), "{log}");
    chmod(&key, 0o600);
    let (status, log) = run(&env(true), Duration::from_secs(4), "\u{0}");
    assert_eq!(status, None, "{log}");
    assert!(!log.contains("readable or writable"), "{log}");
}
