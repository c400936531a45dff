//! Status on the sending host (issue 14): a message goes the whole way (the real `mailman`
//! binary → the post office with its ledger writer on SQLite → a real beanstalkd → the
//! worker → a testkit SMTP receiver found through a testkit DNS server), then:
//!
//! - its own host sees the delivered message's timeline through mailman's `GET /status/<id>`
//!   (by mailman's message id and by Message-ID) and through `mailman status` (text and
//!   `--json`);
//! - another host (its own key, derived from the same secret) gets 403 from both;
//! - an unknown id is 404; unsigned or wrongly signed status requests are 401;
//! - `mailman queue` lists a message held in the spool while the post office is down, with its
//!   recipients, attempts and why.
//!
//! Addresses: 127.0.160.x only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use serde_json::Value;
use tokio::io::BufReader;

use crate::common::real::{connect_from, RealMailman};
use crate::common::stack::{self, Postoffice};
use crate::common::Client;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 160, 10);
const MX_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 160, 11);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 160, 19);
const OTHER_FQDN: &str = "other.test";
const RCPT: &str = "bob@rcpt.status.test";
const MESSAGE_ID: &str = "status-1@app.status.test";
const WAIT: Duration = Duration::from_secs(60);

fn other_key() -> String {
    hedwig_core::key::derive_key(stack::SECRET, OTHER_FQDN)
}

/// Sends one message through mailman from [`CLIENT_IP`]; mailman's reply.
async fn send(mailman: SocketAddr, body: &str) -> String {
    let stream = connect_from(CLIENT_IP, mailman).await;
    let mut c = Client {
        reader: BufReader::new(stream),
    };
    assert!(c.reply().await.starts_with("220"));
    assert!(c.cmd("EHLO app.status.test").await.starts_with("250"));
    c.send_mail("app@status.test", &[RCPT], body.as_bytes())
        .await
}

/// mailman's message id from its `250` reply (`... (message <id>)`, or `queued locally as
/// <id>,` when the post office did not take it at once).
fn mailman_id(reply: &str) -> String {
    if let Some(start) = reply.find("queued locally as ") {
        return reply[start + 18..]
            .split(',')
            .next()
            .expect("a comma")
            .to_string();
    }
    let start = reply.find("(message ").expect("a message id in the reply") + 9;
    reply[start..]
        .split(')')
        .next()
        .expect("a closing parenthesis")
        .to_string()
}

/// The `mailman` binary with `args`, configured for `fqdn` with `key`; exit success, stdout,
/// stderr.
fn mailman_cli(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailman"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run mailman");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn host_env(
    fqdn: &str,
    key: String,
    postoffice: &str,
    spool: &std::path::Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("HEDWIG_FQDN", fqdn.to_string()),
        ("HEDWIG_KEY", key),
        ("HEDWIG_POSTOFFICE", postoffice.to_string()),
        ("HEDWIG_SPOOL_DIR", spool.display().to_string()),
        ("HEDWIG_LISTEN", format!("{IP}:2525")),
        ("HEDWIG_HTTP_LISTEN", String::new()),
    ]
}

async fn get(url: String) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("mailman's HTTP listener answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_sees_its_own_delivered_message_and_not_another_hosts() {
    let beanstalkd = Beanstalkd::start_on(IP);
    let mut dns = None;
    for _ in 0..20 {
        let zone = Zone::new()
            .mx("rcpt.status.test", 10, "mx.rcpt.status.test")
            .a("mx.rcpt.status.test", &MX_IP.to_string());
        if let Ok(server) = DnsServer::start_on(SocketAddr::from((IP, 0)), zone).await {
            dns = Some(server);
            break;
        }
    }
    let dns = dns.expect("the test DNS server starts");
    let mx = SmtpReceiver::start(
        SocketAddr::from((MX_IP, 0)),
        Behaviour::new().hostname("mx.rcpt.status.test"),
    )
    .await
    .expect("the SMTP receiver starts");
    let data = tempfile::tempdir().unwrap();
    let po = Postoffice::start_with(&beanstalkd, SocketAddr::from((IP, 0)), |c| {
        c.data_dir = data.path().to_path_buf();
        c.ledger.writer = true;
        c.ledger.check_interval = Duration::from_millis(200);
    })
    .await;
    let worker_stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(worker::run(
        worker::Config {
            beanstalkd: vec![beanstalkd.url()],
            concurrency: 2,
            hostname: "relay.status.test".into(),
            nameservers: vec![dns.addr().to_string()],
            smtp_port: mx.addr().port(),
            http_listen: String::new(),
            shutdown_grace: Duration::from_secs(2),
            retry: worker::config::Retry {
                first: Duration::from_secs(1),
                max_delay: Duration::from_secs(2),
                max_lifetime: Duration::from_secs(600),
            },
            ..worker::Config::default()
        },
        worker_stop.clone(),
    ));
    let mailman = RealMailman::start(IP, &po.url(), &[]).await;

    let body = format!(
        "From: <app@status.test>\r\nTo: <{RCPT}>\r\nSubject: status check\r\n\
         Message-ID: <{MESSAGE_ID}>\r\n\r\nhello\r\n"
    );
    let reply = send(mailman.smtp, &body).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    let id = mailman_id(&reply);
    assert!(
        mx.wait_for(1, WAIT).await.is_some(),
        "the MX got the message"
    );

    // Delivered and recorded: mailman's endpoint shows the timeline to its own host.
    let status_url = |id: &str| format!("http://{}/status/{id}", mailman.http);
    let end = tokio::time::Instant::now() + WAIT;
    let timeline = loop {
        let (status, body) = get(status_url(&id)).await;
        if status == 200 && body["message"]["status"] == "sent" {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no delivered timeline: {status} {body}\n{}",
            mailman.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(timeline["message"]["edge_id"], id.as_str());
    assert_eq!(timeline["message"]["host"], stack::FQDN);
    assert_eq!(timeline["message"]["message_id"], MESSAGE_ID);
    assert_eq!(timeline["recipients"][0]["recipient"], RCPT);
    assert_eq!(timeline["recipients"][0]["status"], "sent");
    let kinds: Vec<String> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["kind"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(kinds.contains(&"queued/".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"recipient/sent".to_string()), "{kinds:?}");
    // By Message-ID too, with or without angle brackets.
    for by in [MESSAGE_ID.to_string(), format!("%3C{MESSAGE_ID}%3E")] {
        let (status, body) = get(status_url(&by)).await;
        assert_eq!(status, 200, "{by}: {body}");
        assert_eq!(body["message"]["edge_id"], id.as_str());
    }
    // Unknown: 404.
    let (status, body) = get(status_url("no-such-message")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no message"),
        "{body}"
    );

    // The CLI of the same host: text and JSON.
    let spool = tempfile::tempdir().unwrap();
    let own = host_env(stack::FQDN, stack::key(), &po.url(), spool.path());
    let (ok, out, err) = mailman_cli(&["status", &id], &own);
    assert!(ok, "{out}{err}");
    assert!(out.contains("status sent"), "{out}");
    assert!(out.contains(&format!("sent {RCPT}")), "{out}");
    assert!(out.contains("mx mx.rcpt.status.test"), "{out}");
    let (ok, out, err) = mailman_cli(&["status", "--json", &format!("<{MESSAGE_ID}>")], &own);
    assert!(ok, "{err}");
    let json: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["message"]["queue_id"], timeline["message"]["queue_id"]);
    let (ok, _, err) = mailman_cli(&["status", "no-such-message"], &own);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");

    // Another host, with a valid key of its own: 403 from the CLI and from its mailman.
    let theirs = host_env(OTHER_FQDN, other_key(), &po.url(), spool.path());
    for asked in [id.as_str(), MESSAGE_ID] {
        let (ok, out, err) = mailman_cli(&["status", asked], &theirs);
        assert!(!ok, "{out}");
        assert!(err.contains("403"), "{err}");
        assert!(
            !out.contains(RCPT) && !err.contains(RCPT),
            "nothing of it is shown"
        );
    }
    let other = RealMailman::start(
        IP,
        &po.url(),
        &[("HEDWIG_FQDN", OTHER_FQDN), ("HEDWIG_KEY", &other_key())],
    )
    .await;
    let (status, body) = get(format!("http://{}/status/{id}", other.http)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.get("message").is_none(), "{body}");
    let (status, _) = get(format!("http://{}/status/no-such-message", other.http)).await;
    assert_eq!(status, 404);

    // Straight at the post office: unsigned, or signed with another host's key, is 401.
    let http = reqwest::Client::new();
    let status_po = format!("http://{}/status", po.addr);
    let ask = serde_json::json!({ "id": id }).to_string();
    let answer = http
        .post(&status_po)
        .header("content-type", "application/json")
        .body(ask.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    let mut forged = http.post(&status_po).body(ask.clone());
    for (k, v) in hedwig_core::signing::sign(
        &other_key(),
        stack::FQDN,
        hedwig_core::unix_now(),
        "POST",
        "/status",
        ask.as_bytes(),
    ) {
        forged = forged.header(k, v);
    }
    assert_eq!(forged.send().await.unwrap().status().as_u16(), 401);

    drop(other);
    drop(mailman);
    worker_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailman_queue_lists_what_waits_while_the_post_office_is_down() {
    // Nothing listens here: every post fails to connect.
    let down = format!("http://{IP}:{}/", hedwig_testkit::net::free_port(IP));
    let mailman = RealMailman::start(IP, &down, &[]).await;
    let reply = send(mailman.smtp, "Subject: waiting\r\n\r\nhello\r\n").await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    let id = mailman_id(&reply);
    let env = vec![("HEDWIG_SPOOL_DIR", mailman.spool.display().to_string())];
    let end = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let (ok, out, err) = mailman_cli(&["queue", "--json"], &env);
        assert!(ok, "{err}");
        let listed: Value = serde_json::from_str(&out).expect("JSON");
        if listed["messages"][0]["attempts"].as_u64().unwrap_or(0) >= 2 {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no attempts recorded: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let m = &listed["messages"][0];
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1);
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["state"], "waiting");
    assert_eq!(m["rcpt_to"][0], RCPT);
    assert_eq!(m["client"], IpAddr::V4(CLIENT_IP).to_string());
    assert!(
        m["last_error"].as_str().unwrap().contains("unreachable"),
        "{m}"
    );
    let (ok, out, _) = mailman_cli(&["queue"], &env);
    assert!(ok);
    assert!(out.contains(&id) && out.contains(RCPT), "{out}");
    assert!(out.contains("last: postoffice unreachable"), "{out}");
    // mailman's status endpoint says that no post office answered (502), not "not found".
    let (status, body) = get(format!("http://{}/status/{id}", mailman.http)).await;
    assert_eq!(status, 502, "{body}");
    drop(mailman);
}
