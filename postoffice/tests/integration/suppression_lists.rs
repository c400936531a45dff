//! The real `postoffice suppress` binary with entries of one mailing list (issue 19):
//! `add --list` (the id as `List-Id:` writes it, brackets and case), `list --list ID|none`
//! and `--json` with `list_id`, `remove --scope --list` removing that list's entry alone, and
//! bad `--list` values exiting 2 with the option named. On a SQLite store in a temporary
//! data directory: no network, no addresses.

use std::path::Path;

use serde_json::Value;

fn run(data_dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .arg("suppress")
        .args(args)
        .env_remove("HEDWIG_CONFIG")
        .env_remove("HEDWIG_BEANSTALKD")
        .env("HEDWIG_DATA_DIR", data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run postoffice");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (scope, list_id) of the entries `list --json` prints with `args`, sorted.
fn listed(data_dir: &Path, args: &[&str]) -> Vec<(String, Option<String>)> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(data_dir, &all);
    assert_eq!(code, Some(0), "{err}");
    let body: Value = serde_json::from_str(&out).expect("JSON");
    let mut got: Vec<_> = body["suppressions"]
        .as_array()
        .expect("suppressions")
        .iter()
        .map(|s| {
            (
                s["scope"].as_str().unwrap_or("").to_owned(),
                s["list_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    got.sort();
    got
}

fn entry(scope: &str, list: Option<&str>) -> (String, Option<String>) {
    (scope.into(), list.map(str::to_owned))
}

#[tokio::test]
async fn the_command_line_adds_lists_and_removes_entries_of_one_list() {
    let data = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        data.path().join("ledger.db").display()
    );
    hedwig_ledger::Store::open(&url)
        .await
        .unwrap()
        .close()
        .await;
    let dir = data.path();

    let (code, out, err) = run(
        dir,
        &[
            "add",
            "Bob@Y.test",
            "--scope",
            "news.test",
            "--list",
            "<Weekly.News.TEST>",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("scope news.test  list weekly.news.test"),
        "{out}"
    );
    for args in [
        &["add", "bob@y.test", "--scope", "news.test"][..],
        &[
            "add",
            "bob@y.test",
            "--scope",
            "news.test",
            "--list",
            "offers.news.test",
        ],
    ] {
        let (code, _, err) = run(dir, args);
        assert_eq!(code, Some(0), "{err}");
    }
    assert_eq!(
        listed(dir, &["--scope", "news.test"]),
        [
            entry("news.test", None),
            entry("news.test", Some("offers.news.test")),
            entry("news.test", Some("weekly.news.test")),
        ]
    );
    assert_eq!(listed(dir, &["--list", "none"]), [entry("news.test", None)]);
    assert_eq!(
        listed(dir, &["--list", "WEEKLY.news.test"]),
        [entry("news.test", Some("weekly.news.test"))]
    );

    // Removing one list's entry leaves the domain's and the other list's.
    let (code, out, err) = run(
        dir,
        &[
            "remove",
            "bob@y.test",
            "--scope",
            "news.test",
            "--list",
            "weekly.news.test",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "removed 1 entry\n");
    assert_eq!(
        listed(dir, &[]),
        [
            entry("news.test", None),
            entry("news.test", Some("offers.news.test"))
        ]
    );
    // Nothing matched: exit 1.
    let (code, _, _) = run(dir, &["remove", "bob@y.test", "--list", "weekly.news.test"]);
    assert_eq!(code, Some(1));

    // Bad values: exit 2, the option named; "whole scopes only" alone removes nothing.
    for args in [
        &["add", "bob@y.test", "--list", "two words"][..],
        &["list", "--list", "a..b"],
        &["remove", "--list", "none"],
    ] {
        let (code, _, err) = run(dir, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("--list"), "{args:?}: {err}");
    }
    assert_eq!(listed(dir, &[]).len(), 2);
}
