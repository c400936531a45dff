//! `keygen dkim` as an operator runs it: the key file, the printed record and config lines,
//! and that the worker's key loader accepts what was printed.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use keygen::dns_check::settings;

fn keygen_dkim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keygen"))
        .arg("dkim")
        .args(args)
        .env_remove("HEDWIG_DKIM")
        .output()
        .unwrap()
}

#[test]
fn printed_config_loads_and_matches_the_printed_record() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    for alg in ["rsa", "ed25519"] {
        let out = keygen_dkim(&[
            "Example.COM",
            "--selector",
            "sel",
            "--algorithm",
            alg,
            "--out-dir",
            out_dir,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();

        let file = dir
            .path()
            .canonicalize()
            .unwrap()
            .join(format!("example.com.sel.{alg}.pem"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // The zone line: name, then ≤255-byte quoted strings.
        let line = text
            .lines()
            .find(|l| l.starts_with("sel._domainkey.example.com. 3600 IN TXT "))
            .unwrap();
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert!(strings.iter().all(|s| s.len() <= 255));
        let value = strings.concat();

        // The YAML part is a worker config the worker's key loader accepts.
        let yaml: String = text
            .lines()
            .skip_while(|l| *l != "dkim:")
            .map(|l| format!("{l}\n"))
            .collect();
        let config = dir.path().join(format!("worker-{alg}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let keys =
            settings::load_keys(&settings::load_worker_config(&config).unwrap().dkim).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_file, file);
        assert_eq!(keys[0].dns_name(), "sel._domainkey.example.com");
        assert_eq!(keys[0].txt, value);
        assert_eq!(keys[0].algorithm.to_string(), alg);
    }
}

#[test]
fn existing_keys_are_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let args = [
        "example.com",
        "--out-dir",
        out_dir,
        "--algorithm",
        "ed25519",
    ];
    assert!(keygen_dkim(&args).status.success());
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    // The default selector is a month: six digits.
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let selector = name
        .strip_prefix("example.com.")
        .unwrap()
        .strip_suffix(".ed25519.pem")
        .unwrap();
    assert!(
        selector.len() == 6 && selector.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    let before = std::fs::read(&files[0]).unwrap();

    let out = keygen_dkim(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&files[0]).unwrap(), before);

    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(keygen_dkim(&forced).status.success());
    assert_ne!(std::fs::read(&files[0]).unwrap(), before);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["example.com", "--algorithm", "dsa"],
        &["localhost"],
        &["example.com", "--selector", "a b"],
        &["example.com", "--out-dir", "/dev/null/dir"], // under a file: not a folder
    ] {
        let out = keygen_dkim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    for sub in ["dkim", "dns", "secret"] {
        let out = Command::new(env!("CARGO_BIN_EXE_keygen"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: keygen"));
    }
}

/// F9 (issue 11): `--out-dir` that does not exist yet is created, mode 0700 (with any missing
/// parents); one that cannot be used gives one clear error line, the OS error said once.
#[test]
fn a_missing_out_dir_is_created_0700_and_errors_are_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("etc/hedwig/dkim");
    let out = keygen_dkim(&[
        "example.com",
        "--selector",
        "s1",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in [
        dir.path().join("etc"),
        dir.path().join("etc/hedwig"),
        out_dir.clone(),
    ] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let key = out_dir.join("example.com.s1.rsa.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A file where the folder should be: exit 2, one line naming it, no doubled OS error.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for bad in [file.clone(), file.join("sub")] {
        let out = keygen_dkim(&["example.com", "--out-dir", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&bad.display().to_string()), "{err}");
        if let Some(i) = err.find("(os error") {
            assert!(!err[i + 1..].contains("(os error"), "doubled: {err}");
        }
    }
}
