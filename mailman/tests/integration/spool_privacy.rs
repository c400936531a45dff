//! Issue 11 F9 (mailman's part), against the real `mailman` binary: the spool directory is
//! made 0700 (a 0755 one is narrowed at start, with a warning), message files are 0600, a
//! delivered message leaves no bytes behind in a recycled `.free` file (old `.free` files are
//! zeroed at start), and a password in the postoffice URL appears neither in the debug log
//! nor in `mailman check-config`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::real::{connect_from, read_until, send, RealMailman};
use crate::common::StandIn;

const MM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 103, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 103, 2);
const PASSWORD: &str = "s3cretPw0rd";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(ext))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_is_private_free_files_are_empty_and_passwords_are_not_logged() {
    let po = StandIn::start_on(SocketAddr::new(IpAddr::V4(MM_IP), 0), 503).await;
    let dead = SocketAddr::new(IpAddr::V4(MM_IP), hedwig_testkit::net::free_port(MM_IP));
    let urls = format!(
        "http://hedwig:{PASSWORD}@{dead}/,http://hedwig:{PASSWORD}@{}/",
        po.addr
    );
    // a spool left by an older version: open modes, an old message in a .free file
    let old = tempfile::tempdir().unwrap();
    let spool = old.path().join("spool");
    std::fs::create_dir_all(spool.join("rejected")).unwrap();
    for d in [&spool, &spool.join("rejected")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        spool.join("OLD.free"),
        b"Subject: an old delivered message\r\n",
    )
    .unwrap();
    std::fs::set_permissions(
        spool.join("OLD.free"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let spool_env = spool.display().to_string();
    let env = [
        ("HEDWIG_SPOOL_DIR", spool_env.as_str()),
        ("RUST_LOG", "debug"),
        ("HEDWIG_FORWARD_DEADLINE", "1s"),
    ];
    let mailman = RealMailman::start(MM_IP, &urls, &env).await;
    assert_eq!(mode(&spool), 0o700);
    assert_eq!(mode(&spool.join("rejected")), 0o700);
    let old = std::fs::read(spool.join("OLD.free")).unwrap();
    assert!(
        old.iter().all(|&b| b == 0),
        "old .free file not zeroed: {old:?}"
    );
    assert_eq!(mode(&spool.join("OLD.free")), 0o600);

    // a message the postoffice cannot take yet stays in the spool, 0600
    let mut c = connect_from(CLIENT, mailman.smtp).await;
    send(
        &mut c,
        b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
    )
    .await;
    assert!(
        read_until(&mut c, Duration::from_secs(10), |t| t.contains("354 "))
            .await
            .contains("354 ")
    );
    send(
        &mut c,
        b"Subject: private words\r\n\r\nhello\r\n.\r\nQUIT\r\n",
    )
    .await;
    let r = read_until(&mut c, Duration::from_secs(10), |t| t.contains("221 ")).await;
    assert!(r.starts_with("250 "), "{r:?}");
    let spooled = files(&spool, "msg");
    assert_eq!(spooled.len(), 1);
    assert_eq!(mode(&spooled[0]), 0o600);

    // once delivered, no bytes of it stay on disk
    po.set(200);
    assert!(po.wait_queued(1, Duration::from_secs(10)).await);
    for _ in 0..100 {
        if files(&spool, "msg").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(files(&spool, "msg").is_empty());
    for entry in walk(&spool) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("private words"),
            "{} keeps the delivered message",
            entry.display()
        );
        assert_eq!(mode(&entry), 0o600, "{}", entry.display());
    }
    assert!(!files(&spool, "free").is_empty(), "the file was recycled");

    let log = mailman.stop();
    assert!(log.contains("narrowed to mode 0700"), "{log}");
    assert!(log.contains("redacted@"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the URL password is in the log:\n{log}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailman"))
        .arg("check-config")
        .env_clear()
        .env("HEDWIG_FQDN", crate::common::stack::FQDN)
        .env("HEDWIG_KEY", crate::common::stack::key())
        .env("HEDWIG_POSTOFFICE", &urls)
        .env("HEDWIG_SPOOL_DIR", &spool_env)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("config: ok\n"), "{text}");
    assert!(text.contains("postoffice"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains(&crate::common::stack::key()), "{text}");
    assert!(
        !text.contains("Settings {"),
        "a readable summary, not a debug dump: {text}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
