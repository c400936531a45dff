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

#[test]
fn key_only_prints_just_the_key() {
    let secret = "0123456789abcdef0123456789abcdef";
    let out = keygen()
        .env("HEDWIG_SECRET", secret)
        .args(["--key-only", "Web1.Example.org"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!(
            "{}\n",
            hedwig_core::key::derive_key(secret, "web1.example.org")
        )
    );
    // without a secret: exit 2 and a clear message, nothing on stdout for $(...)
    let out = keygen()
        .args(["--key-only", "web1.example.org"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no secret"));
    // --key-only needs a host name
    let out = keygen().args(["--key-only"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Every `keygen …` command that deploy/mailman/docker-compose.yml tells the operator to run
/// (the host key for HEDWIG_KEY) prints exactly the key: one line, 64 hex digits, which the
/// post office accepts for that host. The secret file the command names is replaced by a
/// temporary one.
#[test]
fn the_mailman_compose_file_documents_a_command_that_prints_the_key() {
    let compose_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/mailman/docker-compose.yml"
    );
    let text = std::fs::read_to_string(compose_file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "fedcba9876543210fedcba9876543210";
    let secret_file = dir.path().join("hedwig_secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let mut commands = 0;
    for line in text.lines() {
        // the instructions are the comments
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let Some((_, rest)) = comment.split_once("keygen ") else {
            continue;
        };
        // up to the end of a $(...) or `...`, else of the line
        let args = rest.split([')', '`']).next().unwrap_or_default().trim();
        if args.contains('<') {
            continue; // prose naming a placeholder, not a command
        }
        let mut argv: Vec<String> = args.split_whitespace().map(str::to_string).collect();
        for i in 0..argv.len() {
            if argv[i] == "--secret-file" && i + 1 < argv.len() {
                argv[i + 1] = secret_file.to_str().unwrap().to_string();
            }
        }
        let fqdn = argv.last().cloned().unwrap_or_default();
        // HEDWIG_SECRET as well, so that a command without --secret-file is judged by its
        // output rather than by "no secret".
        let out = keygen()
            .env("HEDWIG_SECRET", secret)
            .args(&argv)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`keygen {args}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout,
            format!("{}\n", hedwig_core::key::derive_key(secret, &fqdn)),
            "`keygen {args}` (in {compose_file}) must print the key alone, for HEDWIG_KEY"
        );
        commands += 1;
    }
    assert!(commands > 0, "no keygen command in {compose_file}");
}
