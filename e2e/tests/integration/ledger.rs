//! The delivery ledger through the whole chain (issue 13): 1,000 messages from a raw SMTP
//! client → mailman → the post office (ledger writer on SQLite, admin API on its own port) →
//! beanstalkd → the worker (restarted halfway) → the recipients' MX, which refuses one
//! recipient for good (550) and another one for now (451) until the test lets it through.
//!
//! Read back through the API and through what `postoffice trace` prints, every message has
//! a complete and right timeline: queued with what mailman and the post office knew (host,
//! sender, client, Message-ID, Subject), then one `sent` per copy the MX received with the
//! MX name, its address and the 250; the refused recipient `bounced` with the 550 and the
//! bounce's own queue id, and the bounce `sent` to the sender's MX; the busy one `deferred`
//! with the 451, then `sent`. Nothing is stuck and nothing is left in the events tube.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::common::{worker_config, Net, Postoffice, Stack, SENDER};
use hedwig_testkit::smtp::Behaviour;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const NET: Net = Net(67);
const N: usize = 1000;
const SESSIONS: usize = 4;
const REJECTED: &str = "nobody@rcpt.e2e.test";
const REJECT: &str = "550 5.1.1 <nobody@rcpt.e2e.test>: no such user here";
const LATER: &str = "later@rcpt.e2e.test";
const BUSY: &str = "451 4.2.1 mailbox busy, try again later";
const TOKEN: &str = "e2e-ledger-token-0123456789abcdef";
/// Bound of the waits for the whole run to be delivered and recorded.
const LONG: Duration = Duration::from_secs(180);

fn recipient(i: usize) -> String {
    match i {
        10 => REJECTED.into(),
        20 => LATER.into(),
        _ => format!("user{i}@rcpt.e2e.test"),
    }
}

fn message(i: usize) -> String {
    format!(
        "From: App <{SENDER}>\r\nTo: {}\r\nSubject: ledger message {i}\r\n\
         Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <ledger-{i}@sender.e2e.test>\r\n\
         \r\nmessage number {i}\r\n",
        recipient(i)
    )
}

/// Reads one SMTP reply (all its lines); its code.
async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.expect("read a reply");
        assert!(n > 0, "mailman closed the session");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

/// Sends messages `range` in one SMTP session from the clients' address.
async fn send(stack_mailman: SocketAddr, client: IpAddr, range: std::ops::Range<usize>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(client, 0)).unwrap();
    let stream = socket
        .connect(stack_mailman)
        .await
        .expect("connect to mailman");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    assert_eq!(reply(&mut r).await, 220);
    w.write_all(b"EHLO app.e2e.test\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, 250);
    for i in range {
        let head = format!(
            "MAIL FROM:<{SENDER}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            recipient(i)
        );
        w.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(reply(&mut r).await, 250, "MAIL for {i}");
        assert_eq!(reply(&mut r).await, 250, "RCPT for {i}");
        assert_eq!(reply(&mut r).await, 354, "DATA for {i}");
        w.write_all(format!("{}.\r\n", message(i)).as_bytes())
            .await
            .unwrap();
        assert_eq!(reply(&mut r).await, 250, "message {i} accepted");
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
}

async fn send_all(stack: &Stack, range: std::ops::Range<usize>) {
    let per = range.len().div_ceil(SESSIONS);
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let start = range.start + s * per;
        let end = (start + per).min(range.end);
        tasks.push(tokio::spawn(send(
            stack.mailman_addr(),
            stack.client_ip(),
            start..end,
        )));
    }
    for t in tasks {
        t.await.expect("a sending session");
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, TOKEN).await
    }

    async fn get_with(&self, path: &str, token: &str) -> (u16, Value) {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the ledger API answers");
        let status = answer.status().as_u16();
        let body = answer.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Every message, page by page.
    async fn all_messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = "/api/v1/messages?limit=500".to_string();
        loop {
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "{page}");
            out.extend(page["messages"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => path = format!("/api/v1/messages?limit=500&cursor={next}"),
                None => return out,
            }
        }
    }
}

fn events_of<'a>(timeline: &'a Value, recipient: &str) -> Vec<&'a Value> {
    timeline["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["recipient"] == recipient)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_has_a_complete_timeline() {
    let rcpt_behaviour = || {
        Behaviour::new()
            .hostname("mx.rcpt.e2e.test")
            .rcpt(REJECTED, REJECT)
    };
    let mut stack = Stack::start_with(NET, rcpt_behaviour().rcpt(LATER, BUSY)).await;

    // The post office again, now with the ledger: SQLite in a temp dir, the API on its port.
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
    let api = Api {
        base: format!("http://{api_addr}"),
        http: reqwest::Client::new(),
    };

    // Half the messages, a worker restart, the other half.
    send_all(&stack, 0..N / 2).await;
    stack
        .worker
        .restart(worker_config(&stack.beanstalkd, stack.dns.addr()))
        .await;
    send_all(&stack, N / 2..N).await;

    // The busy mailbox: deferred first (the ledger says so), then let through.
    let later = loop {
        let (status, page) = api
            .get(&format!("/api/v1/messages?recipient={LATER}"))
            .await;
        assert_eq!(status, 200, "{page}");
        if page["messages"][0]["status"] == "deferred" {
            break page["messages"][0]["queue_id"]
                .as_str()
                .unwrap()
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stack.rcpt_mx.set_behaviour(rcpt_behaviour());

    // Everything delivered (all but the refused one, and the bounce), the queues settled,
    // and the ledger writer has taken every event.
    // (1,000 messages through every tier on two shared cores: bounded by LONG, not WAIT.)
    assert!(
        stack.rcpt_mx.wait_for(N - 1, LONG).await.is_some(),
        "the recipients' MX got {} of {} messages within {LONG:?}",
        stack.rcpt_mx.received().len(),
        N - 1
    );
    crate::common::check::wait_for(&stack.sender_mx, 1, "the sender's MX").await;
    stack.wait_settled(LONG).await;
    let events_tube = format!("{}-events", hedwig_queue::tubes::TUBE_OUTBOUND);
    let end = tokio::time::Instant::now() + LONG;
    let messages = loop {
        let messages = api.all_messages().await;
        let waiting = stack.jobs_in(&events_tube).await;
        if waiting == 0
            && messages.len() == N + 1
            && messages.iter().all(|m| !m["final_at"].is_null())
        {
            break messages;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the ledger did not settle: {} messages ({} final), {waiting} events jobs waiting",
            messages.len(),
            messages.iter().filter(|m| !m["final_at"].is_null()).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Copies the MX received per recipient: each is one `sent` event in the ledger.
    let mut copies: HashMap<String, usize> = HashMap::new();
    for r in stack.rcpt_mx.received() {
        for to in r.rcpt_to {
            *copies.entry(to).or_default() += 1;
        }
    }
    let by_subject: HashMap<String, &Value> = messages
        .iter()
        .filter_map(|m| m["subject"].as_str().map(|s| (s.to_string(), m)))
        .collect();
    let client = stack.client_ip().to_string();
    let rcpt_mx_ip = NET.rcpt_mx().to_string();
    for i in 0..N {
        let m = by_subject
            .get(&format!("ledger message {i}"))
            .unwrap_or_else(|| panic!("message {i} is not in the ledger"));
        assert_eq!(m["host"], crate::common::MAILMAN_FQDN, "{m}");
        assert_eq!(m["sender"], SENDER, "{m}");
        assert_eq!(m["kind"], "message", "{m}");
        assert_eq!(m["edge_client"], client.as_str(), "{m}");
        assert_eq!(
            m["message_id"],
            format!("ledger-{i}@sender.e2e.test"),
            "{m}"
        );
        assert!(m["edge_id"].is_string(), "{m}");
        let queue_id = m["queue_id"].as_str().unwrap();
        let (status, timeline) = api.get(&format!("/api/v1/messages/{queue_id}")).await;
        assert_eq!(status, 200, "{timeline}");
        let rcpt = recipient(i);
        let events: Vec<&Value> = timeline["events"].as_array().unwrap().iter().collect();
        assert_eq!(
            events.iter().filter(|e| e["kind"] == "queued").count(),
            1,
            "one queued event: {timeline}"
        );
        assert_eq!(
            events[0]["kind"], "queued",
            "queued comes first: {timeline}"
        );
        let mine = events_of(&timeline, &rcpt);
        let outcomes: Vec<&str> = mine.iter().filter_map(|e| e["outcome"].as_str()).collect();
        let sent: Vec<&&Value> = mine.iter().filter(|e| e["outcome"] == "sent").collect();
        match rcpt.as_str() {
            REJECTED => {
                assert_eq!(m["status"], "bounced", "{timeline}");
                assert_eq!(outcomes, ["bounced"], "{timeline}");
                assert_eq!(mine[0]["code"], 550);
                assert_eq!(mine[0]["dsn"], "5.1.1");
                assert!(mine[0]["reply"].as_str().unwrap().contains("no such user"));
                let bq: Vec<&&Value> = events
                    .iter()
                    .filter(|e| e["kind"] == "bounce_queued")
                    .collect();
                assert_eq!(bq.len(), 1, "{timeline}");
                let bounce_id = bq[0]["bounce_queue_id"].as_str().unwrap();
                let (status, bounce) = api.get(&format!("/api/v1/messages/{bounce_id}")).await;
                assert_eq!(status, 200, "{bounce}");
                assert_eq!(bounce["message"]["kind"], "bounce", "{bounce}");
                assert_eq!(bounce["message"]["bounce_of"], queue_id, "{bounce}");
                assert_eq!(bounce["message"]["sender"], "", "{bounce}");
                assert_eq!(bounce["message"]["status"], "sent", "{bounce}");
                assert_eq!(events_of(&bounce, SENDER)[0]["outcome"], "sent", "{bounce}");
            }
            LATER => {
                assert_eq!(queue_id, later);
                assert_eq!(m["status"], "sent", "{timeline}");
                assert_eq!(outcomes.first(), Some(&"deferred"), "{timeline}");
                assert_eq!(outcomes.last(), Some(&"sent"), "{timeline}");
                assert_eq!(mine[0]["code"], 451);
                assert_eq!(mine[0]["dsn"], "4.2.1");
                assert!(mine.last().unwrap()["attempt"].as_u64().unwrap() >= 2);
            }
            _ => {
                assert_eq!(m["status"], "sent", "{timeline}");
                assert_eq!(outcomes.iter().filter(|o| **o != "sent").count(), 0);
            }
        }
        if rcpt != REJECTED {
            assert_eq!(
                sent.len(),
                copies.get(&rcpt).copied().unwrap_or(0),
                "one sent event per copy received: {timeline}"
            );
            assert_eq!(sent[0]["mx"], "mx.rcpt.e2e.test", "{timeline}");
            assert_eq!(sent[0]["ip"], rcpt_mx_ip.as_str(), "{timeline}");
            assert_eq!(sent[0]["code"], 250, "{timeline}");
            assert_eq!(timeline["recipients"][0]["final"], true, "{timeline}");
        }
    }

    // What `postoffice trace` prints, from the same store.
    let store = hedwig_ledger::Store::open(&format!(
        "sqlite://{}",
        data.path().join("ledger.db").display()
    ))
    .await
    .unwrap();
    let traced = postoffice::ledger::cli::trace(&store, LATER).await.unwrap();
    assert_eq!(traced.len(), 1);
    assert_eq!(traced[0].message.queue_id, later);
    let text = postoffice::ledger::cli::render_timelines(&traced);
    for part in [
        later.as_str(),
        "deferred",
        "451",
        "sent",
        "mx.rcpt.e2e.test",
    ] {
        assert!(text.contains(part), "trace lacks {part:?}:\n{text}");
    }
    let by_message_id = postoffice::ledger::cli::trace(&store, "<ledger-7@sender.e2e.test>")
        .await
        .unwrap();
    assert_eq!(
        by_message_id[0].message.subject.as_deref(),
        Some("ledger message 7")
    );
    store.close().await;

    // Nothing stuck; a wrong token and a bad parameter are refused.
    let (status, stuck) = api.get("/api/v1/stuck").await;
    assert_eq!(status, 200, "{stuck}");
    assert_eq!(stuck["count"], 0, "{stuck}");
    let (status, _) = api.get_with("/api/v1/messages", "wrong-token").await;
    assert_eq!(status, 401);
    let (status, body) = api.get("/api/v1/messages?status=lost").await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("status"), "{body}");

    stack.stop().await;
}
