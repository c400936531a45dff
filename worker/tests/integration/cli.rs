//! The binary: `check-config` says what is wrong and exits 1; `health-check` asks /health of
//! a running worker.

use crate::common;

use std::process::Command;
use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::Beanstalkd;

fn worker_cmd(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.arg("--config").arg(config);
    // Keep the environment of whoever runs the tests out of the config.
    for (k, _) in std::env::vars() {
        if k.starts_with("HEDWIG_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn check_config_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.yaml");
    std::fs::write(
        &path,
        "beanstalkd: 127.0.0.1:1\nrelayhost: \"[broken\"\n\
         dkim:\n  keys:\n    - { domain: example.test, selector: s, key_file: /nonexistent/key.pem }\n",
    )
    .unwrap();
    let out = worker_cmd(&path).arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "hostname",
        "relayhost",
        "/nonexistent/key.pem",
        "beanstalkd 127.0.0.1:1",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }

    let bs = Beanstalkd::start();
    std::fs::write(
        &path,
        format!("beanstalkd: {}\nhostname: relay.example.test\n", bs.url()),
    )
    .unwrap();
    let out = worker_cmd(&path).arg("check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// Multi-threaded: the blocking `Command` calls must not stop the in-process worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_against_a_running_worker() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(Zone::new()).await;
    let port = hedwig_testkit::net::free_port(std::net::Ipv4Addr::LOCALHOST);
    let mut config = common::config(&bs.url(), dns.addr());
    config.http_listen = format!("127.0.0.1:{port}");
    let worker = common::start(config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.yaml");
    std::fs::write(&path, format!("http_listen: 127.0.0.1:{port}\n")).unwrap();
    let mut healthy = false;
    for _ in 0..30 {
        let status = worker_cmd(&path).arg("health-check").status().unwrap();
        if status.success() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "health-check never succeeded");
    worker.stop().await;
    let status = worker_cmd(&path).arg("health-check").status().unwrap();
    assert!(!status.success(), "a stopped worker is not healthy");
}
