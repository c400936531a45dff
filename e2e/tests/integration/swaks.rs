//! swaks speaking ESMTP to mailman with a whole message on stdin and two recipients in two
//! domains: each domain's MX gets the message once, with only its own recipient, byte for byte
//! as swaks sent it (CRLF input with 8-bit UTF-8 and Latin-1 bytes), signed and traced.

use crate::common::{check, clients, Net, Stack, CLIENT_HELO, RELAY_HOSTNAME, SENDER, WAIT};

const NET: Net = Net(64);

const MESSAGE: &[u8] = b"From: app@sender.e2e.test\r\n\
To: alice@rcpt.e2e.test, postmaster@sender.e2e.test\r\n\
Subject: swaks test\r\n\
Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n\
Message-ID: <swaks-1@sender.e2e.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Caf\xe9 cr\xe8me \xe0 la fran\xe7aise\r\n\
..\r\n\
.\x20\r\n\
end\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_to_two_domains() {
    let stack = Stack::start(NET).await;
    // swaks ends the data with `CRLF . CRLF` itself: data that already ends with a line end
    // would get an extra empty line. Given MESSAGE without its last CRLF, it sends exactly
    // MESSAGE.
    let data = MESSAGE
        .strip_suffix(b"\r\n")
        .expect("MESSAGE ends with CRLF");
    let out = clients::swaks(
        &stack,
        &["alice@rcpt.e2e.test", "postmaster@sender.e2e.test"],
        data,
    )
    .await;
    let transcript = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = transcript.lines().collect();
    let dot = lines
        .iter()
        .position(|l| *l == " -> .")
        .unwrap_or_else(|| panic!("no final dot in the transcript:\n{transcript}"));
    assert!(
        lines
            .get(dot + 1)
            .is_some_and(|l| l.starts_with("<-  250 ")),
        "mailman answers the final dot with 250:\n{transcript}"
    );

    for (mx, rcpt) in [
        (&stack.rcpt_mx, "alice@rcpt.e2e.test"),
        (&stack.sender_mx, "postmaster@sender.e2e.test"),
    ] {
        let got = check::wait_for(mx, 1, rcpt).await;
        let delivered = &got[0];
        assert_eq!(delivered.mail_from, SENDER);
        assert_eq!(delivered.rcpt_to, [rcpt]);
        assert_eq!(delivered.helo, RELAY_HOSTNAME);
        let parts = check::split(&delivered.data);
        check::assert_bytes_eq(parts.message, MESSAGE, rcpt);
        // Two recipients in the SMTP session: no `for` clause.
        check::assert_received(&parts.received, CLIENT_HELO, stack.client_ip(), None);
        check::assert_dkim_passes(&stack.dns, &delivered.data).await;
    }

    stack.wait_settled(WAIT).await;
    assert_eq!(stack.rcpt_mx.received().len(), 1, "delivered exactly once");
    assert_eq!(
        stack.sender_mx.received().len(),
        1,
        "delivered exactly once"
    );
    stack.stop().await;
}
