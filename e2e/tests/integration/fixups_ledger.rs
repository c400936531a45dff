//! Issue 19's fix-ups in the ledger, through the whole chain: a raw SMTP client (a cron
//! script's hand-rolled SMTP) sends only a `Subject:` to mailman, which adds `Date:`,
//! `Message-ID:`, `From:` and `To:`; another message carries a `Bcc:`, which mailman removes.
//! mailman posts what it did (`fixups`), the post office copies it into the job and the
//! `queued` event, its ledger writer (SQLite) stores it, and the worker delivers the message.
//! The ledger's timeline, `postoffice trace`'s text and the admin API name the fix-ups; a
//! message that needed none has none.
//!
//! Addresses: 127.0.220.x (`Net(220)`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{check, Net, Postoffice, Stack, SENDER, WAIT};
use crate::header_fixups::raw_client;

const NET: Net = Net(220);
const TOKEN: &str = "e2e-fixups-token-0123456789abcdef";

/// The queue id in mailman's `250 2.0.0 Ok: queued as <id> (message <id>)`.
fn queue_id(talk: &str) -> String {
    let at = talk.find("queued as ").expect("a queue id in the reply") + "queued as ".len();
    talk[at..].split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_shows_what_mailman_fixed() {
    let mut stack = Stack::start(NET).await;
    // The post office again, with its ledger writer on SQLite and the admin API.
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let api_addr = SocketAddr::from((
        NET.services(),
        hedwig_testkit::net::free_port(NET.services()),
    ));
    stack.stop_postoffice().await;
    let dir = data.path().to_path_buf();
    stack.postoffice = Some(
        Postoffice::start_with(stack.postoffice_addr, &stack.beanstalkd, |c| {
            c.data_dir = dir;
            c.ledger.writer = true;
            c.ledger.check_interval = Duration::from_millis(200);
            c.ledger.api_listen = Some(api_addr);
            c.ledger.api_token_file = Some(token_file);
        })
        .await,
    );

    let talk = raw_client(&stack, "nightly report", "All 12 jobs ran.\r\n").await;
    assert!(talk.contains("\r\n250 2.0.0 Ok: queued as "), "{talk}");
    let completed = queue_id(&talk);
    let with_bcc = format!(
        "with bcc\r\nFrom: App <{SENDER}>\r\nTo: alice@rcpt.e2e.test\r\n\
         Bcc: boss@rcpt.e2e.test\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <bcc.1@sender.e2e.test>"
    );
    let talk = raw_client(&stack, &with_bcc, "hello\r\n").await;
    assert!(talk.contains("\r\n250 2.0.0 Ok: queued as "), "{talk}");
    let bcc_removed = queue_id(&talk);
    let complete = format!(
        "complete\r\nFrom: App <{SENDER}>\r\nTo: alice@rcpt.e2e.test\r\n\
         Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <complete.1@sender.e2e.test>"
    );
    let talk = raw_client(&stack, &complete, "hello\r\n").await;
    assert!(talk.contains("\r\n250 2.0.0 Ok: queued as "), "{talk}");
    let untouched = queue_id(&talk);

    // Delivered (the fixed message as the MX got it is checked in header_fixups.rs).
    let got = check::wait_for(&stack.rcpt_mx, 3, "the recipients' MX").await;
    assert_eq!(got.len(), 3);
    stack.wait_settled(WAIT).await;

    // The ledger, through the admin API, once every message is sent.
    let http = reqwest::Client::new();
    let api = |id: &str| format!("http://{api_addr}/api/v1/messages/{id}");
    for id in [&completed, &bcc_removed, &untouched] {
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            let answer = http.get(api(id)).bearer_auth(TOKEN).send().await.unwrap();
            if answer.status() == 200 {
                let v: serde_json::Value = answer.json().await.unwrap();
                if v["message"]["status"] == "sent" {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < end, "{id} sent in the ledger");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let fixups = |id: &str| {
        let http = http.clone();
        let url = api(id);
        async move {
            let v: serde_json::Value = http
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["message"]["fixups"].clone()
        }
    };
    assert_eq!(
        fixups(&completed).await,
        serde_json::json!(["date", "message-id", "from", "to"])
    );
    assert_eq!(fixups(&bcc_removed).await, serde_json::json!(["bcc"]));
    assert_eq!(fixups(&untouched).await, serde_json::json!([]));

    // What `postoffice trace` prints, from the same store.
    let store = hedwig_ledger::Store::open(&format!(
        "sqlite://{}",
        data.path().join("ledger.db").display()
    ))
    .await
    .unwrap();
    let text = |id: String| {
        let store = &store;
        async move {
            let traced = postoffice::ledger::cli::trace(store, &id).await.unwrap();
            assert_eq!(traced.len(), 1, "{id}");
            postoffice::ledger::cli::render_timelines(&traced)
        }
    };
    let t = text(completed.clone()).await;
    assert!(t.contains("\n  fix-ups date,message-id,from,to\n"), "{t}");
    assert!(t.contains("subject \"nightly report\""), "{t}");
    let t = text(bcc_removed.clone()).await;
    assert!(t.contains("\n  fix-ups bcc\n"), "{t}");
    let t = text(untouched.clone()).await;
    assert!(!t.contains("fix-ups"), "{t}");
    store.close().await;
    stack.stop().await;
}
