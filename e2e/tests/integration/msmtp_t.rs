//! `msmtp -t`: the recipients come from the To:, Cc: and Bcc: headers, as applications that
//! pipe a whole message to `sendmail -t` expect. The input has Unix line endings (LF), as
//! applications write it; msmtp sends CRLF (RFC 5321 §2.3.8), so what arrives is the input with
//! every LF turned into CRLF, and without the Bcc: line (msmtp removes it; the Bcc recipient
//! still gets the message). Everything else is byte for byte what the application wrote.

use crate::common::{check, clients, Net, Stack, CLIENT_HELO, RELAY_HOSTNAME, SENDER, WAIT};

const NET: Net = Net(62);

const BCC_LINE: &str = "Bcc: carol@rcpt.e2e.test\n";

fn input() -> String {
    format!(
        "From: App <app@sender.e2e.test>\n\
To: Alice <alice@rcpt.e2e.test>\n\
Cc: bob@rcpt.e2e.test\n\
{BCC_LINE}\
Subject: msmtp -t with UTF-8\n\
Date: Mon, 23 Nov 2026 05:00:00 +0000\n\
Message-ID: <msmtp-t-1@sender.e2e.test>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Ça va? Ünïcödé bödy — 中文 🦉\n\
..two dots\n\
\tindented with a tab\n\
end\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_t_takes_recipients_from_the_headers() {
    let stack = Stack::start(NET).await;
    let input = input();
    clients::msmtp(&stack, &["-t"], input.as_bytes()).await;

    let got = check::wait_for(&stack.rcpt_mx, 1, "the recipients' MX").await;
    let delivered = &got[0];
    assert_eq!(delivered.mail_from, SENDER);
    // All three share one MX: one transaction, every recipient in it.
    let mut rcpts = delivered.rcpt_to.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "alice@rcpt.e2e.test",
            "bob@rcpt.e2e.test",
            "carol@rcpt.e2e.test"
        ]
    );
    assert_eq!(delivered.helo, RELAY_HOSTNAME);
    let parts = check::split(&delivered.data);
    let expected = input.replacen(BCC_LINE, "", 1).replace('\n', "\r\n");
    check::assert_bytes_eq(parts.message, expected.as_bytes(), "the message");
    // Several recipients: mailman names none of them (that would disclose the Bcc).
    check::assert_received(&parts.received, CLIENT_HELO, stack.client_ip(), None);
    assert!(!String::from_utf8_lossy(&delivered.data).contains("carol"));
    check::assert_dkim_passes(&stack.dns, &delivered.data).await;

    stack.wait_settled(WAIT).await;
    assert_eq!(stack.rcpt_mx.received().len(), 1, "delivered exactly once");
    assert!(stack.sender_mx.received().is_empty(), "no bounce");
    stack.stop().await;
}
