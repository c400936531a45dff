//! SMTP replies mailman sends, with their enhanced status codes (RFC 3463).
//!
//! Replies are plain text with CRLF; multi-line replies use `code-` on every line but the last
//! (RFC 5321 §4.2.1). Text from outside (a postoffice error) is cleaned of control characters and
//! cut short so it cannot break the reply framing.

/// A reply in wire form, ready to write.
pub type Reply = String;

/// One single-line reply.
pub fn reply(code: u16, text: &str) -> Reply {
    format!("{code} {}\r\n", clean(text))
}

/// One multi-line reply.
pub fn multiline(code: u16, lines: &[String]) -> Reply {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{sep}{}\r\n", clean(line)));
    }
    out
}

/// Text safe inside a reply line: printable, no CR/LF, at most 400 characters.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect()
}

/// Sent to a client outside the allowed networks, before closing.
pub fn access_denied(hostname: &str) -> Reply {
    reply(
        554,
        &format!("5.7.1 {hostname} mailman: your address may not send mail here"),
    )
}

/// Sent when too many sessions are open, before closing.
pub fn too_many_connections(hostname: &str) -> Reply {
    reply(
        421,
        &format!("4.7.0 {hostname} too many connections, try again later"),
    )
}

/// Sent when this client address has too many sessions open, before closing.
pub fn too_many_from_client(hostname: &str) -> Reply {
    reply(
        421,
        &format!("4.7.0 {hostname} too many connections from your address, try again later"),
    )
}

/// Sent when a session reached `session_timeout`, before closing.
pub fn session_too_long(hostname: &str) -> Reply {
    reply(
        421,
        &format!("4.4.2 {hostname} session time limit exceeded, closing connection"),
    )
}

/// The message with mailman's `Received:` header is over the size limit.
pub fn too_big(size: usize, max: usize) -> Reply {
    reply(
        552,
        &format!("5.3.4 message of {size} octets exceeds the limit of {max}"),
    )
}

/// The message has more `Received:` headers than `max_received_headers` (RFC 3463 5.4.6,
/// routing loop detected).
pub fn too_many_hops() -> Reply {
    reply(554, "5.4.6 too many hops (mail loop?)")
}

/// The message's header is one receivers refuse ([`crate::fixup::Refusal`]): `554 5.6.0`
/// with the reason.
pub fn bad_header(refusal: &crate::fixup::Refusal) -> Reply {
    reply(554, &refusal.reply_text())
}

/// Sent on shutdown, before closing (RFC 5321 §3.8).
pub fn shutting_down(hostname: &str) -> Reply {
    reply(
        421,
        &format!("4.3.2 {hostname} service shutting down, try again later"),
    )
}

/// Sent when the client was silent too long (RFC 5321 §4.5.3.2).
pub fn timeout(hostname: &str) -> Reply {
    reply(
        421,
        &format!("4.4.2 {hostname} timeout, closing connection"),
    )
}

/// The message is stored and the postoffice queued it.
pub fn queued(message_id: &str, queue_id: &str) -> Reply {
    reply(
        250,
        &format!("2.0.0 Ok: queued as {queue_id} (message {message_id})"),
    )
}

/// The message is stored in the local spool; it will be forwarded later.
pub fn queued_locally(message_id: &str) -> Reply {
    reply(
        250,
        &format!("2.0.0 Ok: queued locally as {message_id}, will be forwarded"),
    )
}

/// The postoffice refused the message for good.
pub fn rejected(status: u16, reason: &str) -> Reply {
    let (code, esc) = match status {
        413 => (552, "5.3.4"),
        403 => (550, "5.7.1"),
        _ => (554, "5.6.0"),
    };
    reply(code, &format!("{esc} rejected by the postoffice: {reason}"))
}

/// The spool is over its size cap.
pub fn spool_full() -> Reply {
    reply(452, "4.3.1 insufficient system storage, try again later")
}

/// The message could not be stored (disk error).
pub fn local_error() -> Reply {
    reply(451, "4.3.0 local error in processing, try again later")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_cannot_be_broken() {
        assert_eq!(reply(250, "a\r\n250 b"), "250 a  250 b\r\n");
        assert_eq!(
            multiline(250, &["x".into(), "y".into(), "z".into()]),
            "250-x\r\n250-y\r\n250 z\r\n"
        );
        assert_eq!(rejected(413, "big").split(' ').next(), Some("552"));
        assert_eq!(rejected(400, "bad").split(' ').next(), Some("554"));
        assert_eq!(rejected(403, "no").split(' ').next(), Some("550"));
        assert!(clean(&"x".repeat(1000)).len() == 400);
    }
}
