//! How a message travels to the postoffice: in the JSON `data` string or base64 in
//! `data_b64` (issue 11 F8).
//!
//! JSON escaping grows some bytes sixfold (a control character becomes `\u0001`): a 13 MB
//! message of control characters made a 78 MB body that the postoffice refused (413) after
//! mailman had answered `250`. Base64 grows everything by exactly 4/3. mailman sends whichever
//! form is smaller, so the body never exceeds 4/3 of the message plus the envelope, well within
//! the postoffice's HTTP body limit (three times its `max_message_size`). `data_b64` is
//! understood by every postoffice of this project (it already carries 8-bit messages); plain
//! text keeps travelling in `data`, as old postoffices expect.

use base64::Engine as _;
use hedwig_core::wire::Email;

/// Octets of `message` once escaped into a JSON string (without the quotes), as serde_json
/// writes it; `None` when it is not valid UTF-8 (it cannot travel in `data`).
pub fn json_len(message: &[u8]) -> Option<usize> {
    std::str::from_utf8(message).ok()?;
    Some(
        message
            .iter()
            .map(|&b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0x00..=0x1f => 6,
                _ => 1,
            })
            .sum(),
    )
}

/// Octets of `message` in base64 (padded).
pub fn base64_len(message: &[u8]) -> usize {
    message.len().div_ceil(3) * 4
}

/// The `email` field with the message in its smaller form.
pub fn compact_email(mail_from: String, rcpt_to: Vec<String>, message: Vec<u8>) -> Email {
    match json_len(&message) {
        Some(json) if json <= base64_len(&message) => Email::new(mail_from, rcpt_to, message),
        _ => Email {
            mailfrom: mail_from,
            rcpttos: rcpt_to,
            data: None,
            data_b64: Some(base64::engine::general_purpose::STANDARD.encode(&message)),
            raw: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_length_matches_serde_json() {
        let samples: [&[u8]; 5] = [
            b"plain text\r\n",
            b"\x01\x02\x1f \"q\" \\ \t\x08\x0c\x7f",
            "caf\u{e9} \u{2028}".as_bytes(),
            b"",
            b"\x00",
        ];
        for m in samples {
            let s = std::str::from_utf8(m).unwrap();
            let encoded = serde_json::to_string(s).unwrap();
            assert_eq!(json_len(m), Some(encoded.len() - 2), "{s:?}");
        }
        assert_eq!(json_len(b"\xff"), None);
    }

    #[test]
    fn the_smaller_form_is_chosen_and_round_trips() {
        let text = b"Subject: hi\r\n\r\nordinary text\r\n".to_vec();
        let e = compact_email("a@b.test".into(), vec!["c@d.test".into()], text.clone());
        assert!(e.data.is_some() && e.data_b64.is_none());
        assert_eq!(e.into_message().unwrap(), text);
        let control = vec![0x01u8; 3000];
        let e = compact_email("a@b.test".into(), vec![], control.clone());
        assert!(e.data.is_none());
        assert_eq!(e.data_b64.as_ref().unwrap().len(), 4000);
        assert_eq!(e.into_message().unwrap(), control);
        let latin1 = b"caf\xe9".to_vec();
        let e = compact_email(String::new(), vec![], latin1.clone());
        assert_eq!(e.into_message().unwrap(), latin1);
        // worst case of the chosen form: 4/3 of the message
        let wire =
            serde_json::to_vec(&compact_email(String::new(), vec![], vec![0x01; 300_000])).unwrap();
        assert!(wire.len() <= 400_100, "{}", wire.len());
    }
}
