//! The postoffice is down when a message comes: the client still gets 250, and the message is
//! queued exactly once when the postoffice comes back, also across a SIGKILL of mailman.
//! Also the binary's `check-config` and `health-check` subcommands.

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::stack::{self, take_jobs, Postoffice};
use crate::common::{hello, Mailman};
use hedwig_testkit::Beanstalkd;

const BODY: &[u8] = b"Subject: outage\r\n\r\nstill here\r\n";

fn free_addr() -> SocketAddr {
    hedwig_testkit::net::free_addr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postoffice_down_then_up_queues_once() {
    let bs = Beanstalkd::start();
    let po_addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path(), &[format!("http://{po_addr}/")]);
    cfg.key = Some(stack::key());
    let m = Mailman::start(cfg).await;
    let mut c = hello(m.smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    assert_eq!(common::spooled(dir.path()), 1);
    let po = Postoffice::start_on(&bs, po_addr).await;
    assert!(common::wait_spooled(dir.path(), 0, Duration::from_secs(10)).await);
    let jobs = take_jobs(&bs, Duration::from_secs(2)).await;
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].message.ends_with(BODY));
    m.stop().await;
    po.stop().await;
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mailman_bin(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailman"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mailman does not listen on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_250_with_the_postoffice_down() {
    let bs = Beanstalkd::start();
    let po_addr = free_addr();
    let smtp = free_addr();
    let http = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("HEDWIG_LISTEN", smtp.to_string()),
        ("HEDWIG_HTTP_LISTEN", http.to_string()),
        ("HEDWIG_FQDN", stack::FQDN.to_string()),
        ("HEDWIG_KEY", stack::key()),
        ("HEDWIG_POSTOFFICE", format!("http://{po_addr}/")),
        ("HEDWIG_SPOOL_DIR", dir.path().display().to_string()),
        ("HEDWIG_RETRY_MIN", "100ms".to_string()),
        ("HEDWIG_RETRY_MAX", "300ms".to_string()),
    ];
    let mut first = Process(mailman_bin(&[], &env).spawn().unwrap());
    wait_listening(smtp).await;
    let mut c = hello(smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    // SIGKILL right after the 250
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    drop(c);
    assert_eq!(common::spooled(dir.path()), 1);
    let po = Postoffice::start_on(&bs, po_addr).await;
    let second = Process(mailman_bin(&[], &env).spawn().unwrap());
    wait_listening(smtp).await;
    assert!(common::wait_spooled(dir.path(), 0, Duration::from_secs(10)).await);
    // health-check against the running one
    let status = mailman_bin(&["health-check"], &env).status().unwrap();
    assert!(status.success());
    drop(second);
    let status = mailman_bin(&["health-check"], &env).status().unwrap();
    assert!(!status.success(), "nothing listens any more");
    let jobs = take_jobs(&bs, Duration::from_secs(2)).await;
    assert_eq!(jobs.len(), 1, "queued exactly once");
    // The real binary runs with the default header fix-ups (issue 19): the spooled copy
    // carries them across the restart.
    let text = String::from_utf8_lossy(&jobs[0].message);
    assert!(text.contains("\r\nSubject: outage\r\nDate: "), "{text}");
    assert!(
        text.ends_with(
            "\r\nFrom: a@example.com\r\nTo: undisclosed-recipients:;\r\n\r\nstill here\r\n"
        ),
        "{text}"
    );
    // check-config: the right key passes, a wrong one is named
    let out = mailman_bin(&["check-config"], &env).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut wrong = env.clone();
    wrong.retain(|(k, _)| *k != "HEDWIG_KEY");
    wrong.push(("HEDWIG_KEY", "f".repeat(64)));
    let out = mailman_bin(&["check-config"], &wrong).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("REFUSES"), "{text}");
    // and a broken config lists every problem
    let out = mailman_bin(
        &["check-config"],
        &[
            ("HEDWIG_LISTEN", "nonsense".into()),
            ("HEDWIG_MAX_RECIPIENTS", "0".into()),
        ],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    for key in ["listen", "fqdn", "key", "postoffice", "max_recipients"] {
        assert!(text.contains(key), "{key} not named in:\n{text}");
    }
    po.stop().await;
}

/// A crash between the postoffice's 200 and the removal of the spool file leaves the file; the
/// next start posts it again with the same message id and the postoffice answers with the first
/// queue id instead of queuing it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_file_left_after_200_is_not_queued_twice() {
    let bs = Beanstalkd::start();
    let po = Postoffice::start(&bs).await;
    let dir = tempfile::tempdir().unwrap();
    let header = mailman::spool::SpoolHeader {
        v: 1,
        id: hedwig_core::new_queue_id(),
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["b@example.org".into()],
        client: "127.0.0.1".into(),
        received_at: hedwig_core::unix_now(),
        size: BODY.len() as u64,
        app: None,
        fixups: Vec::new(),
    };
    let mut file = serde_json::to_vec(&header).unwrap();
    file.push(b'\n');
    file.extend_from_slice(BODY);
    let path = dir.path().join(format!("{}.msg", header.id));
    let mut cfg = common::config(dir.path(), &[po.url()]);
    cfg.key = Some(stack::key());
    for round in 0..2 {
        // the same file, as if the removal after the first 200 was lost in a crash
        std::fs::write(&path, &file).unwrap();
        let m = Mailman::start(cfg.clone()).await;
        assert!(
            common::wait_spooled(dir.path(), 0, Duration::from_secs(10)).await,
            "round {round}"
        );
        m.stop().await;
    }
    let jobs = take_jobs(&bs, Duration::from_secs(2)).await;
    assert_eq!(jobs.len(), 1, "queued once");
    assert_eq!(
        jobs[0].envelope.message_id.as_deref(),
        Some(header.id.as_str())
    );
    po.stop().await;
}
