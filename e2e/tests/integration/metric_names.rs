//! Every metric name the three daemons exported before issue 12 (when each had its own
//! `/metrics` code) is still exported by the real daemons: one message goes through the whole
//! chain, then each daemon's `/metrics` is scraped over HTTP and every name in the lists
//! below must be a sample in it, or (for a labelled family with no sample yet, as before)
//! declared by its `# TYPE` line. The lists were taken from the `/metrics` output of the
//! daemons before the shared service shell; a rename must be listed in the README's
//! "Changelog" section and here. The worker's deliveries also carry the sending host, as
//! configured in `metrics_hosts`.

use std::net::SocketAddr;
use std::time::Duration;

use hedwig_testkit::dns::DnsServer;
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;

use crate::common::{
    check, clients, mailman_key, worker_config, zone, Net, Postoffice, Worker, MAILMAN_FQDN, WAIT,
};

const NET: Net = Net(170);

const MAILMAN: &[&str] = &[
    "mailman_connections_total",
    "mailman_connections_open",
    "mailman_connections_denied_total",
    "mailman_connections_over_limit_total",
    "mailman_connections_over_client_limit_total",
    "mailman_sessions_timed_out_total",
    "mailman_messages_forwarded_inline_total",
    "mailman_messages_spooled_total",
    "mailman_messages_rejected_total",
    "mailman_messages_refused_total",
    "mailman_messages_forwarded_later_total",
    "mailman_messages_set_aside_total",
    "mailman_spool_depth",
    "mailman_spool_bytes",
    "mailman_spool_oldest_age_seconds",
    "mailman_forward_failures_total{reason=\"unreachable\"}",
    "mailman_forward_failures_total{reason=\"timeout\"}",
    "mailman_forward_failures_total{reason=\"interrupted\"}",
    "mailman_forward_failures_total{reason=\"wrong_key\"}",
    "mailman_forward_failures_total{reason=\"rate_limited\"}",
    "mailman_forward_failures_total{reason=\"unavailable\"}",
    "mailman_forward_failures_total{reason=\"unexpected\"}",
];

const WORKER: &[&str] = &[
    "hedwig_worker_deliveries_total",
    "hedwig_worker_delivery_seconds_bucket",
    "hedwig_worker_delivery_seconds_sum",
    "hedwig_worker_delivery_seconds_count",
    "hedwig_worker_retries_total",
    "hedwig_worker_bounces_total",
    "hedwig_worker_failed_records_total",
    "hedwig_worker_dns_failures_total",
    "hedwig_worker_sessions_tls_total",
    "hedwig_worker_sessions_plain_total",
    "hedwig_worker_bad_jobs_total",
    "hedwig_worker_loops_total",
    "hedwig_worker_bounces_limited_total",
];

const POSTOFFICE: &[&str] = &[
    "hedwig_postoffice_requests_total",
    "hedwig_postoffice_messages_queued_total",
    "hedwig_postoffice_bytes_queued_total",
    "hedwig_postoffice_duplicates_total",
    "hedwig_postoffice_queue_put_seconds_bucket",
    "hedwig_postoffice_queue_put_seconds_sum",
    "hedwig_postoffice_queue_put_seconds_count",
    "hedwig_postoffice_connections_closed_total",
    "hedwig_postoffice_connections_open",
];

/// The names `text` exports: each sample's name (and name with labels), and the names a
/// `# TYPE` line declares (a counter `x` declares `x_total`, a histogram its three series).
fn exported(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.push(name.to_string());
            match kind {
                "counter" if !name.ends_with("_total") => names.push(format!("{name}_total")),
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.push(format!("{name}{s}"));
                    }
                }
                _ => {}
            }
        } else if !line.starts_with('#') {
            if let Some((series, _value)) = line.rsplit_once(' ') {
                names.push(series.to_string());
                names.push(series.split('{').next().unwrap_or(series).to_string());
            }
        }
    }
    names
}

async fn scrape(addr: SocketAddr) -> String {
    let res = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"));
    assert_eq!(res.status(), 200, "GET http://{addr}/metrics");
    res.text().await.expect("the /metrics body")
}

fn assert_names(daemon: &str, text: &str, want: &[&str]) {
    let have = exported(text);
    let missing: Vec<&&str> = want
        .iter()
        .filter(|w| !have.iter().any(|h| h == **w))
        .collect();
    assert!(
        missing.is_empty(),
        "{daemon}'s /metrics lost {missing:?}:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_name_is_still_exported() {
    let beanstalkd = Beanstalkd::start();
    let dns = DnsServer::start(zone(NET)).await;
    let rcpt_mx = SmtpReceiver::start(
        SocketAddr::from((NET.rcpt_mx(), 25)),
        Behaviour::new().hostname("mx.rcpt.e2e.test"),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");
    let services = NET.services();
    let free = || hedwig_testkit::net::free_port(services);
    let postoffice_addr = SocketAddr::from((services, free()));
    let postoffice = Postoffice::start(postoffice_addr, &beanstalkd).await;

    let worker_http = SocketAddr::from((services, free()));
    let mut config = worker_config(&beanstalkd, dns.addr());
    config.http_listen = worker_http.to_string();
    // The sending host gets its own label in the worker's metrics only when configured.
    config.metrics_hosts = vec![MAILMAN_FQDN.into()];
    let worker = Worker::start(config);

    let spool = tempfile::tempdir().expect("spool dir");
    let mailman_config = mailman::Config {
        listen: vec![SocketAddr::from((services, 0)).to_string()],
        http_listen: SocketAddr::from((services, 0)).to_string(),
        fqdn: MAILMAN_FQDN.into(),
        key: Some(mailman_key()),
        postoffice: vec![Postoffice::url(postoffice_addr)],
        spool_dir: spool.path().to_path_buf(),
        shutdown_timeout: Duration::from_secs(3),
        ..mailman::Config::default()
    };
    let stop_mailman = CancellationToken::new();
    let mailman = mailman::start(
        mailman_config.check().expect("the test config is valid"),
        stop_mailman.clone(),
    )
    .await
    .expect("mailman starts");
    let mailman_http = mailman.http_addr.expect("mailman's http listener");

    let mut args = clients::msmtp_options_to(mailman.smtp_addrs[0], NET.client().into());
    args.extend(["--".to_string(), "alice@rcpt.e2e.test".to_string()]);
    let message = b"From: <app@sender.e2e.test>\r\nTo: <alice@rcpt.e2e.test>\r\n\
Subject: metric names\r\n\r\nhello\r\n";
    clients::run("/usr/bin/msmtp", &args, message).await;
    check::wait_for(&rcpt_mx, 1, "the recipient's MX").await;

    // The worker counts the delivery just after the receiver has it: wait (bounded).
    let end = tokio::time::Instant::now() + WAIT;
    let worker_text = loop {
        let text = scrape(worker_http).await;
        if text.contains("hedwig_worker_deliveries_total{") || tokio::time::Instant::now() > end {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_names("mailman", &scrape(mailman_http).await, MAILMAN);
    assert_names("worker", &worker_text, WORKER);
    let delivered = format!(
        "hedwig_worker_deliveries_total{{status=\"delivered\",domain=\"rcpt.e2e.test\",host=\"{MAILMAN_FQDN}\"}} 1"
    );
    assert!(
        worker_text.lines().any(|l| l == delivered),
        "no {delivered:?} in\n{worker_text}"
    );
    assert_names("postoffice", &scrape(postoffice_addr).await, POSTOFFICE);

    stop_mailman.cancel();
    tokio::time::timeout(Duration::from_secs(10), mailman.wait())
        .await
        .expect("mailman stops within 10 s");
    postoffice.stop().await;
    worker.stop().await;
}
