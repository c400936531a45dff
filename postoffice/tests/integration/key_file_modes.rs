//! F9 (issue 11): a secret file readable by group or others is named in a WARN line at start (file
//! and mode), and refused with `require_safe_keys: true`; the real `postoffice` binary.
//! Addresses: 127.0.150.1 (nothing listens on port 1 there).

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `postoffice` (no subcommand: the service) with only `env` set, for at most `limit`:
/// (exit status if it ended, everything it wrote to stderr until then).
fn run(env: &[(&str, String)], limit: Duration, stop_at: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .env_clear()
        .env("RUST_LOG", "info")
        .env("HEDWIG_LEDGER__WRITER", "false")
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
fn a_secret_file_readable_by_others_is_named_at_start_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hedwig_secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    chmod(&secret, 0o644);
    let env = |strict: bool| {
        vec![
            ("HEDWIG_LISTEN", "127.0.150.1:0".to_string()),
            ("HEDWIG_BEANSTALKD", "127.0.150.1:1".to_string()),
            ("HEDWIG_STARTUP_WAIT", "30s".to_string()),
            ("HEDWIG_SECRET_FILE", secret.display().to_string()),
            ("HEDWIG_REQUIRE_SAFE_KEYS", strict.to_string()),
        ]
    };
    let mode_field = "mode=0644";
    // Default: it starts (waits for beanstalkd) and says which file, with its mode.
    let (status, log) = run(&env(false), Duration::from_secs(15), mode_field);
    assert_eq!(status, None, "it should still be running: {log}");
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(mode_field))
        .unwrap_or_else(|| panic!("no WARN line naming the mode: {log}"));
    assert!(warn.contains(&secret.display().to_string()), "{warn}");
    // require_safe_keys: refused at start, the file and mode named.
    let (status, log) = run(&env(true), Duration::from_secs(15), "\u{0}");
    assert!(matches!(status, Some(s) if s != 0), "{status:?}: {log}");
    assert!(log.contains(&secret.display().to_string()), "{log}");
    assert!(log.contains("mode 0644"), "{log}");
    // 0600: no warning, and require_safe_keys lets it start.
    chmod(&secret, 0o600);
    let (status, log) = run(&env(true), Duration::from_secs(4), "\u{0}");
    assert_eq!(status, None, "{log}");
    assert!(!log.contains("readable or writable"), "{log}");
}
