//! Issue 17 at the post office: the app identity of a post travels into the job and the
//! ledger; the lane is chosen (header where allowed, the app's lane under the host's ceiling,
//! the sender domain, the host's lane, the default) and sets the job's beanstalkd priority;
//! `X-Hedwig-Lane` never reaches the queue; posts without `app` (older mailmen) still work.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hedwig_core::key::derive_key;
use hedwig_core::wire::{App, AppSource, Email, Submission};
use hedwig_queue::job::Job;
use hedwig_testkit::Beanstalkd;
use serde_json::Value;

use crate::common::{PostOffice, SECRET};

const TOKEN: &str = "lanes-test-token-0123456789";
const OPEN: &str = "open.example.com";
const CAPPED: &str = "capped.example.com";
const PLAIN: &str = "plain.example.com";

fn app(lane: Option<&str>) -> App {
    App {
        name: "shop-billing-1".into(),
        source: AppSource::Container,
        image: Some("shop/billing:4".into()),
        compose_project: Some("shop".into()),
        compose_service: Some("billing".into()),
        lane: lane.map(str::to_owned),
    }
}

/// Posts `message` from `host` as a mailman would, with `app` when given.
async fn post(
    po: &PostOffice,
    host: &str,
    from: &str,
    message: &str,
    app: Option<App>,
) -> (u16, Value) {
    let sub = Submission {
        fqdn: host.into(),
        key: derive_key(SECRET, host),
        email: Email::new(
            from.into(),
            vec!["user@example.org".into()],
            message.as_bytes().to_vec(),
        ),
        id: None,
        app,
        fixups: Vec::new(),
    };
    let resp = po
        .http
        .post(po.url())
        .form(&sub.to_form())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every ready job with its beanstalkd priority, by queue id (reserved, then released as it
/// was).
async fn jobs_with_priority(po: &PostOffice) -> Vec<(Job, u32)> {
    let mut client = beanstalk::Client::connect(po.beanstalkd.url())
        .await
        .unwrap();
    client
        .watch(hedwig_queue::tubes::TUBE_OUTBOUND)
        .await
        .unwrap();
    client.ignore("default").await.unwrap();
    let mut out = Vec::new();
    for _ in 0..100 {
        match client.reserve_with_timeout(Duration::ZERO).await {
            Ok(job) => {
                let pri = client
                    .stats_job(job.id)
                    .await
                    .unwrap()
                    .get_u64("pri")
                    .unwrap() as u32;
                out.push((Job::decode(&job.body).unwrap(), pri, job.id));
            }
            Err(beanstalk::Error::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    for (_, pri, id) in &out {
        client.release(*id, *pri, Duration::ZERO).await.unwrap();
    }
    out.into_iter().map(|(j, p, _)| (j, p)).collect()
}

async fn find(po: &PostOffice, queue_id: &str) -> (Job, u32) {
    jobs_with_priority(po)
        .await
        .into_iter()
        .find(|(j, _)| j.envelope.queue_id == queue_id)
        .unwrap_or_else(|| panic!("job {queue_id} in the outbound tube"))
}

#[tokio::test]
async fn app_and_lane_reach_the_job_and_the_ledger() {
    let ip = Ipv4Addr::new(127, 0, 160, 50);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let api = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let mut config = crate::common::config(&beanstalkd);
    config.data_dir = dir.path().to_path_buf();
    config.ledger.url = Some(format!("sqlite://{}/ledger.db", dir.path().display()));
    config.ledger.writer = true;
    config.ledger.api_listen = Some(api);
    config.ledger.api_token_file = Some(token_file);
    config
        .sender_lanes
        .insert("news.example.com".into(), "bulk".into());
    config.hosts.insert(
        OPEN.into(),
        postoffice::config::HostPolicy {
            lane_header: true,
            ..Default::default()
        },
    );
    config.hosts.insert(
        CAPPED.into(),
        postoffice::config::HostPolicy {
            allowed_lanes: vec!["bulk".into()],
            lane_header: true,
            ..Default::default()
        },
    );
    config.hosts.insert(
        PLAIN.into(),
        postoffice::config::HostPolicy {
            lane: Some("transactional".into()),
            ..Default::default()
        },
    );
    let po = PostOffice::start_with(beanstalkd, config).await;

    // The app's lane: transactional, priority 0 (its first message in the lane).
    let (status, body) = post(
        &po,
        OPEN,
        "app@example.com",
        "Subject: reset\r\n\r\nx\r\n",
        Some(app(Some("transactional"))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let with_app = body["id"].as_str().unwrap().to_owned();
    let (job, pri) = find(&po, &with_app).await;
    assert_eq!(job.envelope.app, Some(app(Some("transactional"))));
    assert_eq!(job.envelope.lane.as_deref(), Some("transactional"));
    assert_eq!(pri, 0);

    // An old-style post (no app): the default lane at job_priority; the header is allowed
    // for this host and wins over the sender domain, and is taken out of the message.
    let (status, body) = post(
        &po,
        OPEN,
        "app@news.example.com",
        "X-Hedwig-Lane: transactional\r\nSubject: hi\r\n\r\nx\r\n",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (job, pri) = find(&po, body["id"].as_str().unwrap()).await;
    assert_eq!(job.envelope.app, None);
    assert_eq!(job.envelope.lane.as_deref(), Some("transactional"));
    assert_eq!(job.message, b"Subject: hi\r\n\r\nx\r\n");
    assert_eq!(
        pri, 1,
        "the host's second transactional message this minute"
    );

    // No header, no app: the sender domain's lane, bulk, at 1024.
    let (_, body) = post(
        &po,
        OPEN,
        "app@news.example.com",
        "Subject: n\r\n\r\nx\r\n",
        None,
    )
    .await;
    let (job, pri) = find(&po, body["id"].as_str().unwrap()).await;
    assert_eq!(job.envelope.lane.as_deref(), Some("bulk"));
    assert_eq!(pri, 1024);

    // Above the ceiling: the header and the app ask for transactional, the host may only
    // use bulk. Not refused; the header is still taken out.
    let (status, body) = post(
        &po,
        CAPPED,
        "app@example.com",
        "X-Hedwig-Lane: transactional\r\nSubject: c\r\n\r\nx\r\n",
        Some(app(Some("transactional"))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (job, pri) = find(&po, body["id"].as_str().unwrap()).await;
    assert_eq!(job.envelope.lane.as_deref(), Some("bulk"));
    assert_eq!(job.message, b"Subject: c\r\n\r\nx\r\n");
    assert_eq!(pri, 1024);

    // A host that may not use the header: it is ignored (and taken out); the host's lane.
    let (_, body) = post(
        &po,
        PLAIN,
        "app@example.com",
        "X-Hedwig-Lane: bulk\r\nSubject: p\r\n\r\nx\r\n",
        None,
    )
    .await;
    let plain = body["id"].as_str().unwrap().to_owned();
    let (job, pri) = find(&po, &plain).await;
    assert_eq!(job.envelope.lane.as_deref(), Some("transactional"));
    assert_eq!(job.message, b"Subject: p\r\n\r\nx\r\n");
    assert_eq!(pri, 0);

    // An app identity that cannot go into a log line is refused, not queued.
    let mut bad = app(None);
    bad.name = "billing\nfake log line".into();
    let (status, body) = post(
        &po,
        OPEN,
        "app@example.com",
        "Subject: x\r\n\r\nx\r\n",
        Some(bad),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("app: name"),
        "{body}"
    );
    let mut long = app(None);
    long.image = Some("x".repeat(256));
    let (status, _) = post(
        &po,
        OPEN,
        "app@example.com",
        "Subject: x\r\n\r\nx\r\n",
        Some(long),
    )
    .await;
    assert_eq!(status, 400);

    // The ledger: the app's name and the lane on the message.
    let http = reqwest::Client::new();
    let get = |id: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://{api}/api/v1/messages/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())?;
            r.json::<Value>().await.ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stored = None;
    while Instant::now() < deadline {
        if let (Some(a), Some(b)) = (get(with_app.clone()).await, get(plain.clone()).await) {
            stored = Some((a, b));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b) = stored.expect("the writer stored both messages");
    assert_eq!(a["message"]["app"], "shop-billing-1", "{a}");
    assert_eq!(a["message"]["lane"], "transactional", "{a}");
    assert_eq!(b["message"]["app"], Value::Null, "{b}");
    assert_eq!(b["message"]["lane"], "transactional", "{b}");
    let queued = &a["events"][0];
    assert_eq!(queued["kind"], "queued");
    assert_eq!(queued["app"], "shop-billing-1");
    assert_eq!(queued["lane"], "transactional");

    // `postoffice trace` shows them.
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(
        &config,
        format!(
            "ledger:\n  url: \"sqlite://{}/ledger.db\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .env_remove("HEDWIG_CONFIG")
        .arg("--config")
        .arg(&config)
        .args(["trace", &with_app])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("app shop-billing-1  lane transactional"),
        "{text}"
    );
}

#[tokio::test]
async fn lane_settings_are_checked() {
    let beanstalkd = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 160, 51));
    let mut config = crate::common::config(&beanstalkd);
    config.default_lane = "nope".into();
    config
        .sender_lanes
        .insert("x.example".into(), "missing".into());
    config.hosts.insert(
        "h.example".into(),
        postoffice::config::HostPolicy {
            allowed_lanes: vec!["bulk".into()],
            lane: Some("transactional".into()),
            ..Default::default()
        },
    );
    let problems = config.check().unwrap_err().join("\n");
    assert!(problems.contains("default_lane: \"nope\""), "{problems}");
    assert!(problems.contains("sender_lanes.x.example"), "{problems}");
    assert!(
        problems
            .contains("hosts.h.example: its lane \"transactional\" is not in its allowed_lanes"),
        "{problems}"
    );
}
