//! A headless Chromium driven through chromedriver (WebDriver) with fantoccini, for the
//! console's browser tests. Debian's `chromium` and `chromium-driver` packages
//! (scripts/install-deps); without them the test fails and says so.
//!
//! chromedriver is started on a free port of 127.0.0.1 (it binds nothing else), in its own
//! process group with Chromium under it, and the group is killed when the [`Browser`] is
//! dropped, so that a failing test leaves no browser behind.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Browsers running at once in this test process: each Chromium takes a core while it
/// starts, and the machine's few are shared with other tests.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _slot: tokio::sync::SemaphorePermit<'static>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console's browser tests need Debian's `{package}` \
                 package (scripts/install-deps installs it: apt-get install chromium chromium-driver)"
            );
        }
        // ring and aws-lc-rs are both in the test build: name the one hedwig uses (an error
        // means another test installed it already).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let slot = RUNNING
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromedriver.log");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // The tests run as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ]
            }),
        );
        let mut last = None;
        // A chromedriver whose port another process took meanwhile exits: up to 3 drivers,
        // each given 20 s (Chromium takes seconds to start on a busy machine).
        for _ in 0..3 {
            let port = hedwig_testkit::net::free_port(Ipv4Addr::LOCALHOST);
            let mut command = Command::new(CHROMEDRIVER);
            command
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--log-path={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            // Killed with its group if anything below panics before the Browser owns it.
            let mut driver = Guard(Some(command.spawn().expect("chromedriver starts")));
            let url = format!("http://127.0.0.1:{port}");
            for _ in 0..200 {
                if let Ok(Some(status)) = driver.child().try_wait() {
                    last = Some(format!("chromedriver exited: {status}"));
                    break;
                }
                match ClientBuilder::rustls()
                    .expect("TLS roots for the WebDriver client")
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => {
                        return Browser {
                            client,
                            driver: driver.take(),
                            _profile: profile,
                            _slot: slot,
                        }
                    }
                    Err(e) => last = Some(format!("{url}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(driver);
        }
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        panic!(
            "no WebDriver session from chromedriver: {last:?}\nits log, last lines first:\n{tail}"
        );
    }

    /// Saves a PNG of the page as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// Types `text` into the (first) field named `name`.
    pub async fn fill(&self, name: &str, text: &str) {
        self.fill_css(&format!("[name=\"{name}\"]"), text).await
    }

    /// Types `text` into the first field matching the CSS selector.
    pub async fn fill_css(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("field {css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks the first element matching the CSS selector (a link or a submit button) and
    /// waits, at most 10 s, until the page it loads is complete.
    pub async fn click(&self, css: &str) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
        for _ in 0..200 {
            // The old document's root goes stale once the new page replaced it.
            if old.tag_name().await.is_err() {
                let ready = self
                    .client
                    .execute("return document.readyState", vec![])
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                if ready.as_deref() == Some("complete") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} loaded no new page within 10 s");
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// The page's visible text.
    pub async fn body(&self) -> String {
        self.text("body").await
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Ends the session (Chromium quits) and chromedriver.
    pub async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        kill_group(&mut self.driver);
    }
}

/// A chromedriver not yet handed to a [`Browser`].
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("present until taken")
    }

    fn take(mut self) -> Child {
        self.0.take().expect("present until taken")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
        }
    }
}

fn kill_group(child: &mut Child) {
    // chromedriver leads its own process group (Chromium is in it): end them all.
    let pid = child.id() as i32;
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.driver.try_wait() {
            kill_group(&mut self.driver);
        }
    }
}
