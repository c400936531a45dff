//! Issue 17, "who sent it": real containers on a test Docker network, msmtp in each, sending to
//! the real mailman on the network's gateway address. Each container is known by its name,
//! compose labels and lane; one breaking its `hedwig.sender-domains` label is refused with the
//! 5xx; one over its `hedwig.rate` gets 451; without `docker.socket` the client is known by
//! its address and mail flows as before.
//!
//! These tests need Docker and fail saying so without it (CI has it). Every network and
//! container is named `hedwig-test-dockerid-…` and removed by its guard, also on failure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hedwig_core::wire::{App, AppSource};
use hedwig_testkit::docker::{self, Container, Network};
use mailman::docker::{DockerSettings, Resolver};
use tokio_util::sync::CancellationToken;

use crate::common::real::RealMailman;
use crate::common::StandIn;

const SOCKET: &str = "/var/run/docker.sock";
const EXEC_LIMIT: Duration = Duration::from_secs(30);

/// A name unique to this test run and tag.
fn name(tag: &str) -> String {
    format!("hedwig-test-dockerid-{}-{tag}", std::process::id())
}

const WEB_LABELS: &[(&str, &str)] = &[
    ("com.docker.compose.project", "shop"),
    ("com.docker.compose.service", "web"),
    ("hedwig.lane", "transactional"),
    ("hedwig.sender-domains", "shop.test, *.mail.shop.test"),
];

const BATCH_LABELS: &[(&str, &str)] = &[
    ("hedwig.lane", "bulk"),
    ("hedwig.sender-domains", "news.test"),
    ("hedwig.rate", "1"),
];

/// Sends one message with msmtp inside `container` to `server`; msmtp's exit status and
/// its stderr (which quotes the server's refusal).
async fn msmtp(
    container: &Container,
    server: SocketAddr,
    from: &str,
    header_from: &str,
) -> (bool, String) {
    let message = format!(
        "From: {header_from}\r\nTo: r@dest.test\r\nSubject: from {}\r\n\r\nhello\r\n",
        container.name
    );
    let out = container
        .exec(
            &[
                "/usr/bin/msmtp",
                &format!("--host={}", server.ip()),
                &format!("--port={}", server.port()),
                "--auth=off",
                "--tls=off",
                "--domain=client.test",
                &format!("--from={from}"),
                "r@dest.test",
            ],
            message.as_bytes(),
            EXEC_LIMIT,
        )
        .await
        .expect("docker exec runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fields of mailman's "client is a container" lines (JSON log), by app name.
fn container_lines(log: &str) -> HashMap<String, serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "client is a container")
        .filter_map(|v| Some((v["app"].as_str()?.to_string(), v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_maps_a_container_address_to_its_app() {
    docker::require();
    let image = docker::client_image().expect("client image");
    let net = Network::create(&name("resolver")).expect("network");
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = mailman::metrics::Metrics::register(&mut registry);
    let resolver = Resolver::start(
        DockerSettings {
            socket: SOCKET.into(),
            lookup_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(60),
            max_entries: 4096,
        },
        metrics.docker.clone(),
        stop.clone(),
    )
    .await
    .expect("socket");
    // Started after the resolver's first refresh: found through the refresh a lookup of an
    // unknown address on a Docker network asks for (or the start event's).
    let web = Container::start(&name("resolver-web"), &image, &net, WEB_LABELS).expect("web");
    let found = resolver
        .lookup(IpAddr::V4(web.ip))
        .await
        .expect("the container is found");
    assert_eq!(
        found.app,
        App {
            name: web.name.clone(),
            source: AppSource::Container,
            image: Some(image.clone()),
            compose_project: Some("shop".into()),
            compose_service: Some("web".into()),
            lane: Some("transactional".into()),
        }
    );
    assert_eq!(
        found.policy.sender_domains,
        Some(vec![
            "shop.test".to_string(),
            "*.mail.shop.test".to_string()
        ])
    );
    assert_eq!(found.policy.rate, None);
    assert!(metrics.docker.entries.get() >= 1);
    // The gateway is on the network but no container; loopback is on none.
    assert!(resolver.lookup(IpAddr::V4(net.gateway)).await.is_none());
    assert!(resolver
        .lookup(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .is_none());
    // Gone: the die/destroy event (or the next lookup's refresh) drops it.
    let ip = web.ip;
    drop(web);
    let mut gone = false;
    for _ in 0..100 {
        if resolver.lookup(IpAddr::V4(ip)).await.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a removed container's address is forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_send_under_their_names_and_labels() {
    docker::require();
    let image = docker::client_image().expect("client image");
    let net = Network::create(&name("mail")).expect("network");
    let web = Container::start(&name("web"), &image, &net, WEB_LABELS).expect("web");
    let batch = Container::start(&name("batch"), &image, &net, BATCH_LABELS).expect("batch");
    let postoffice = StandIn::start_on("127.0.180.1:0".parse().unwrap(), 200).await;
    let allowed = format!("[{}]", net.subnet);
    let mailman = RealMailman::start(
        net.gateway,
        &postoffice.url(),
        &[
            ("HEDWIG_DOCKER__SOCKET", SOCKET),
            ("HEDWIG_ALLOWED_NETWORKS", &allowed),
            ("HEDWIG_LOG_FORMAT", "json"),
        ],
    )
    .await;

    let (ok, err) = msmtp(
        &web,
        mailman.smtp,
        "a@shop.test",
        "Shop <a@eu.mail.shop.test>",
    )
    .await;
    assert!(ok, "web sends as its own domains: {err}\n{}", mailman.log());
    let (ok, err) = msmtp(&web, mailman.smtp, "a@shop.test", "Boss <boss@evil.test>").await;
    assert!(!ok, "a From: outside hedwig.sender-domains is refused");
    let refusal = format!("550 5.7.1 container {} may not send as evil.test", web.name);
    assert!(err.contains(&refusal), "msmtp said: {err}");
    let (ok, err) = msmtp(&web, mailman.smtp, "a@evil.test", "a@shop.test").await;
    assert!(!ok && err.contains(&refusal), "MAIL FROM too: {err}");

    let (ok, err) = msmtp(&batch, mailman.smtp, "n@news.test", "n@news.test").await;
    assert!(ok, "batch's first message: {err}");
    let (ok, err) = msmtp(&batch, mailman.smtp, "n@news.test", "n@news.test").await;
    assert!(
        !ok && err.contains("451 4.7.1"),
        "over hedwig.rate=1: {err}"
    );

    assert!(postoffice.wait_queued(2, Duration::from_secs(10)).await);
    let posts = postoffice.posts();
    assert_eq!(
        posts.len(),
        2,
        "only the allowed messages reach the post office"
    );
    // Each post carries the container's identity (the post's `app`).
    let apps: Vec<(String, Option<String>, Option<String>)> = posts
        .iter()
        .map(|p| {
            let app = p.app.as_ref().expect("every post names its container");
            assert_eq!(app.source, hedwig_core::wire::AppSource::Container);
            (
                app.name.clone(),
                app.lane.clone(),
                app.compose_service.clone(),
            )
        })
        .collect();
    assert!(
        apps.contains(&(
            web.name.clone(),
            Some("transactional".into()),
            Some("web".into())
        )),
        "{apps:?}"
    );
    assert!(
        apps.contains(&(batch.name.clone(), Some("bulk".into()), None)),
        "{apps:?}"
    );
    let log = mailman.stop();
    let lines = container_lines(&log);
    let web_line = lines
        .get(&web.name)
        .unwrap_or_else(|| panic!("no line for web in\n{log}"));
    assert_eq!(web_line["compose_project"], "shop");
    assert_eq!(web_line["compose_service"], "web");
    assert_eq!(web_line["lane"], "transactional");
    assert_eq!(web_line["image"], image.as_str());
    assert_eq!(
        web_line["client"]
            .as_str()
            .map(|c| c.starts_with(&web.ip.to_string())),
        Some(true)
    );
    let batch_line = lines
        .get(&batch.name)
        .unwrap_or_else(|| panic!("no line for batch in\n{log}"));
    assert_eq!(batch_line["lane"], "bulk");
    assert_eq!(batch_line["compose_project"], "");
    // Refusals are logged with the app's name (its span).
    assert!(
        log.lines()
            .any(|l| l.contains("refused for the app's label policy")
                && l.contains(&refusal)
                && l.contains(&web.name)),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_socket_a_container_is_its_address() {
    docker::require();
    let image = docker::client_image().expect("client image");
    let net = Network::create(&name("plain")).expect("network");
    let web = Container::start(&name("plain-web"), &image, &net, WEB_LABELS).expect("web");
    let postoffice = StandIn::start_on("127.0.180.2:0".parse().unwrap(), 200).await;
    let allowed = format!("[{}]", net.subnet);
    let mailman = RealMailman::start(
        net.gateway,
        &postoffice.url(),
        &[
            ("HEDWIG_ALLOWED_NETWORKS", &allowed),
            ("HEDWIG_LOG_FORMAT", "json"),
        ],
    )
    .await;
    // Its labels mean nothing without the socket: evil.test goes through to the post office
    // (whose host policy is the check then).
    let (ok, err) = msmtp(&web, mailman.smtp, "a@shop.test", "Boss <boss@evil.test>").await;
    assert!(ok, "{err}\n{}", mailman.log());
    assert!(postoffice.wait_queued(1, Duration::from_secs(10)).await);
    let posts = postoffice.posts();
    assert_eq!(posts[0].app, None);
    let log = mailman.stop();
    assert!(container_lines(&log).is_empty(), "{log}");
}
