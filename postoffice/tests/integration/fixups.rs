//! Issue 19 at the post office: the header fix-ups a mailman names in its post (`fixups`)
//! reach the job (`postoffice show`), the `queued` event and the ledger (`postoffice trace`,
//! the console's message page), in the real `postoffice` binary with its ledger writer on
//! SQLite. A post without the field (an older mailman) is queued with none; a field that is
//! not a few short names of `a-z`, `0-9` and `-` is refused with 400 and nothing is queued.
//!
//! Addresses: 127.0.220.1-29.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hedwig_core::key::derive_key;
use hedwig_core::wire::{Email, Submission};
use hedwig_testkit::Beanstalkd;

use crate::common::{jobs_in, HOST, SECRET};
use crate::console_support::{self, Console, PASSWORD, USER};

const MESSAGE: &str = "Subject: nightly report\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\
Message-ID: <fixed.1@web1.example.com>\r\nFrom: cron@example.com\r\n\
To: undisclosed-recipients:;\r\n\r\nall good\r\n";

/// The `postoffice` binary serving with `config`; killed on drop (also when the test fails).
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn postoffice(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("HEDWIG_BEANSTALKD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Posts `message` from [`HOST`] as a mailman does, naming `fixups` (as a raw JSON string
/// when `raw` is given, to send what a real mailman would not).
async fn post(
    http: &reqwest::Client,
    url: &str,
    fixups: &[&str],
    raw: Option<&str>,
) -> (u16, serde_json::Value) {
    let sub = Submission {
        fqdn: HOST.into(),
        key: derive_key(SECRET, HOST),
        email: Email::new(
            "cron@example.com".into(),
            vec!["ops@example.org".into()],
            MESSAGE.as_bytes().to_vec(),
        ),
        id: None,
        app: None,
        fixups: fixups.iter().map(|s| s.to_string()).collect(),
    };
    let mut form = sub.to_form();
    if let Some(raw) = raw {
        form.push(("fixups", raw.to_owned()));
    }
    let resp = http.post(url).form(&form).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixups_reach_the_job_the_ledger_show_and_trace() {
    let ip = Ipv4Addr::new(127, 0, 220, 1);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let listen = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"{listen}\"\nbeanstalkd: \"{}\"\nsecret: \"{SECRET}\"\ndata_dir: \"{}\"\n\
             ledger:\n  writer: true\n  check_interval: 200ms\n",
            beanstalkd.url(),
            dir.path().display(),
        ),
    )
    .unwrap();
    let _serving = Serving(
        Command::new(env!("CARGO_BIN_EXE_postoffice"))
            .arg("--config")
            .arg(&config)
            .env_remove("HEDWIG_BEANSTALKD")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let url = format!("http://{listen}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("{url}health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "the post office came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Refused: not a list of strings, uppercase, a line break, a comma, too long, too many.
    let long = "x".repeat(33);
    let many = vec!["date"; 17];
    let bad: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (vec![], Some(r#"{"date":true}"#), "not a JSON list"),
        (vec!["Date"], None, "a-z, 0-9 and -"),
        (vec!["to\r\nX-Evil: 1"], None, "a-z, 0-9 and -"),
        (vec!["date,from"], None, "a-z, 0-9 and -"),
        (vec![""], None, "1 to 32"),
        (vec![long.as_str()], None, "1 to 32"),
        (many, None, "at most 16"),
    ];
    for (fixups, raw, why) in bad {
        let (status, body) = post(&http, &url, &fixups, raw).await;
        assert_eq!(status, 400, "{fixups:?} {raw:?}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("fixups") && error.contains(why),
            "{fixups:?}: {error}"
        );
    }
    assert!(
        jobs_in(&beanstalkd.url(), hedwig_queue::tubes::TUBE_OUTBOUND)
            .await
            .is_empty(),
        "nothing refused was queued"
    );

    // A mailman that completed the message, and an older one (no field).
    let (status, body) = post(&http, &url, &["date", "message-id", "from", "to"], None).await;
    assert_eq!(status, 200, "{body}");
    let fixed = body["id"].as_str().unwrap().to_owned();
    let (status, body) = post(&http, &url, &[], None).await;
    assert_eq!(status, 200, "{body}");
    let plain = body["id"].as_str().unwrap().to_owned();

    let jobs = jobs_in(&beanstalkd.url(), hedwig_queue::tubes::TUBE_OUTBOUND).await;
    let job = |id: &str| {
        jobs.iter()
            .find(|j| j.envelope.queue_id == id)
            .unwrap_or_else(|| panic!("job {id}"))
    };
    assert_eq!(
        job(&fixed).envelope.fixups,
        ["date", "message-id", "from", "to"]
    );
    assert!(job(&plain).envelope.fixups.is_empty());

    // `postoffice show` reads the job.
    let servers = beanstalkd.url();
    let (ok, out, err) = postoffice(&config, &["show", &fixed, "--beanstalkd", &servers]);
    assert!(ok, "{err}");
    assert!(
        out.contains("fix-ups:     date,message-id,from,to\n"),
        "{out}"
    );
    let (ok, out, err) = postoffice(&config, &["show", &plain, "--beanstalkd", &servers]);
    assert!(ok, "{err}");
    assert!(!out.contains("fix-ups"), "{out}");

    // `postoffice trace` reads the ledger, once the writer has the `queued` events.
    let deadline = Instant::now() + Duration::from_secs(30);
    let traced = loop {
        let (ok, out, _) = postoffice(&config, &["trace", &fixed]);
        if ok && out.contains(&format!("message {fixed}")) {
            break out;
        }
        assert!(Instant::now() < deadline, "the ledger has {fixed}: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        traced.contains("  fix-ups date,message-id,from,to\n"),
        "{traced}"
    );
    let (ok, json, err) = postoffice(&config, &["trace", &fixed, "--json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json[0]["message"]["fixups"],
        serde_json::json!(["date", "message-id", "from", "to"])
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let traced = loop {
        let (ok, out, _) = postoffice(&config, &["trace", &plain]);
        if ok && out.contains(&format!("message {plain}")) {
            break out;
        }
        assert!(Instant::now() < deadline, "the ledger has {plain}: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!traced.contains("fix-ups"), "{traced}");
}

/// The console's message page lists the fix-ups, escaped like every field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_message_page_shows_the_fixups() {
    let ip = Ipv4Addr::new(127, 0, 220, 20);
    let console = Console::start(ip, |_| {}).await;
    let t = console_support::now();
    let mut event = console_support::queued(
        "01FIXED",
        t,
        HOST,
        "cron@example.com",
        &["ops@example.org"],
        "nightly report",
    );
    if let hedwig_queue::event::What::Queued(q) = &mut event.what {
        q.fixups = vec!["date".into(), "message-id".into(), "bcc".into()];
    }
    console.record(vec![event], "01FIXED").await;
    let plain = console_support::queued(
        "01PLAIN",
        t,
        HOST,
        "cron@example.com",
        &["ops@example.org"],
        "plain",
    );
    console.record(vec![plain], "01PLAIN").await;
    let c = console.client(Ipv4Addr::new(127, 0, 220, 21));
    assert_eq!(console.login(&c, USER, PASSWORD).await.status(), 303);
    let (status, page) = console.get(&c, "/console/messages/01FIXED").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("<dt>Header fix-ups</dt><dd>date, message-id, bcc</dd>"),
        "{page}"
    );
    let (status, page) = console.get(&c, "/console/messages/01PLAIN").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<dt>Header fix-ups</dt><dd>-</dd>"), "{page}");
    console.stop().await;
}
