//! The worker's SMTP reply parser (`worker::smtp::reply::parse`) on arbitrary server output.
//!
//! The input is read as the worker's session does: parse, advance by the octets used, repeat
//! until "need more" or an error. Checked:
//! - no panic; `used` is within the buffer and non-zero; the code is three digits;
//! - a complete reply is not complete any earlier (the octet before `used` is its last LF);
//! - the reply's own text, rebuilt with `Reply::from_text`, parses to the same reply;
//! - the enhanced status code, when found, agrees with the reply's class;
//! - "need more" only while no line is over the limit (no unbounded buffering).
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker::smtp::reply::{parse, Reply, MAX_LINE, MAX_LINES};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    for _ in 0..=data.len() {
        match parse(buf) {
            Ok(Some((reply, used))) => {
                assert!(used > 0 && used <= buf.len());
                assert_eq!(buf[used - 1], b'\n');
                assert_eq!(parse(&buf[..used - 1]), Ok(None), "complete too early");
                assert!((0..=999).contains(&reply.code));
                assert!(reply.text.split('\n').count() <= MAX_LINES);
                if let Some(dsn) = &reply.dsn {
                    assert_eq!(
                        dsn.as_bytes()[0] - b'0',
                        (reply.code / 100) as u8,
                        "{dsn} in a {} reply",
                        reply.code
                    );
                }
                let again = Reply::from_text(&reply.text);
                assert_eq!(again, reply, "from_text of the reply's own text");
                let _ = reply.to_string();
                assert_eq!(reply.lines().count(), reply.text.split('\n').count());
                buf = &buf[used..];
            }
            Ok(None) => {
                // Buffering more is allowed only while the current line is within the limit.
                let last = buf.rsplit(|&b| b == b'\n').next().unwrap_or_default();
                assert!(
                    last.len() <= MAX_LINE,
                    "need more with a {}-octet line",
                    last.len()
                );
                return;
            }
            Err(_) => return,
        }
    }
    panic!("more replies than input octets");
});
