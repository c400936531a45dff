//! The `keygen` binary as an operator runs it.

use std::process::Command;

fn keygen() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygen"));
    cmd.env_remove("HEDWIG_SECRET")
        .env_remove("HEDWIG_POSTOFFICE_URL");
    cmd
}

#[test]
fn secret_then_host_key() {
    let out = keygen().arg("secret").output().unwrap();
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap();
    assert_eq!(secret.trim().len(), 64);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, &secret).unwrap();
    let out = keygen()
        .args([
            "--secret-file",
            file.to_str().unwrap(),
            "--postoffice",
            "http://po:8025/",
        ])
        .arg("Web1.Example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().find_map(|l| l.strip_prefix("key: ")).unwrap();
    assert!(hedwig_core::key::verify_key(
        secret.trim(),
        "web1.example.com",
        key
    ));

    // the environment variable works the same
    let out = keygen()
        .env("HEDWIG_SECRET", secret.trim())
        .arg("web1.example.com")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains(key));
}

#[test]
fn errors_exit_2_with_a_clear_message() {
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (&["web1.example.com"], None, "no secret"),
        (&["web1.example.com"], Some("short"), "at least 16"),
        (
            &["not a host!"],
            Some("0123456789abcdef0123456789abcdef"),
            "not a valid host name",
        ),
        (&[], None, "give a host name"),
    ];
    for (args, secret, needle) in cases {
        let mut cmd = keygen();
        if let Some(s) = secret {
            cmd.env("HEDWIG_SECRET", s);
        }
        let out = cmd.args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = keygen()
        .args(["--secret-file", "/nonexistent/secret", "h.example"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
