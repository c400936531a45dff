//! The DATA phase: end-of-data detection, dot-unstuffing and line-ending normalisation.
//!
//! Bytes are pushed in as they arrive, split anywhere. Every line is stored with a CRLF ending,
//! whether the client sent CRLF or a bare LF (RFC 5321 §2.3.8 forbids bare LF, but `sendmail`
//! style clients send it; normalising here means the stored message never carries the line-ending
//! ambiguity that SMTP smuggling relies on). A lone CR inside a line is kept as it is.
//! A line that starts with `.` loses that dot (RFC 5321 §4.5.2); a line that is just `.` ends the
//! message. The stored size is capped: once over the limit the rest is counted and dropped, so a
//! huge message costs no memory and the session stays in step with the client.
//!
//! Lines longer than 1,000 octets are accepted: applications (PHP `mail()` with HTML bodies) send
//! them, and the worker folds or re-encodes on delivery.

use memchr::memchr;

/// Receives one message body.
#[derive(Debug)]
pub struct DataReceiver {
    body: Vec<u8>,
    max: usize,
    /// Octets of the message after unstuffing and normalisation, including those dropped.
    size: usize,
    line_start: bool,
    /// The current line began with a dot that was removed, and nothing else has come yet
    /// (except perhaps the CR kept in `cr_pending`).
    dot: bool,
    /// The last byte seen was a CR that is not yet stored: it is dropped if an LF follows.
    cr_pending: bool,
}

/// What [`DataReceiver::push`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProgress {
    /// All the input was part of the message; more is needed.
    More,
    /// The end-of-data line was found after this many input octets; the rest is commands.
    Done(usize),
}

impl DataReceiver {
    /// A receiver that stores at most `max` octets.
    pub fn new(max: usize) -> Self {
        DataReceiver {
            body: Vec::new(),
            max,
            size: 0,
            line_start: true,
            dot: false,
            cr_pending: false,
        }
    }

    /// Feeds received bytes.
    pub fn push(&mut self, input: &[u8]) -> DataProgress {
        let mut rest = input;
        loop {
            let Some(&first) = rest.first() else {
                return DataProgress::More;
            };
            if self.line_start {
                self.line_start = false;
                if first == b'.' {
                    self.dot = true;
                    rest = &rest[1..];
                    continue;
                }
            }
            if self.dot {
                match first {
                    b'\n' => {
                        return DataProgress::Done(input.len() - rest.len() + 1);
                    }
                    b'\r' if !self.cr_pending => {
                        self.cr_pending = true;
                        rest = &rest[1..];
                        continue;
                    }
                    _ => self.dot = false,
                }
            }
            match memchr(b'\n', rest) {
                Some(pos) => {
                    let mut line = &rest[..pos];
                    if !line.is_empty() {
                        if self.cr_pending {
                            self.store(b"\r");
                        }
                        if let Some(stripped) = line.strip_suffix(b"\r") {
                            line = stripped;
                        }
                        self.store(line);
                    }
                    self.store(b"\r\n");
                    self.cr_pending = false;
                    self.line_start = true;
                    rest = &rest[pos + 1..];
                }
                None => {
                    if self.cr_pending {
                        self.store(b"\r");
                        self.cr_pending = false;
                    }
                    match rest.strip_suffix(b"\r") {
                        Some(head) => {
                            self.store(head);
                            self.cr_pending = true;
                        }
                        None => self.store(rest),
                    }
                    return DataProgress::More;
                }
            }
        }
    }

    fn store(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size <= self.max {
            self.body.extend_from_slice(bytes);
        } else if !self.body.is_empty() {
            // Over the limit: free the memory now, the message will be refused.
            self.body = Vec::new();
        }
    }

    /// Octets in the message so far, including any dropped over the limit.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the message went over the limit.
    pub fn oversized(&self) -> bool {
        self.size > self.max
    }

    /// The message, when it is within the limit.
    pub fn into_body(self) -> Option<Vec<u8>> {
        (!self.oversized()).then_some(self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_whole(input: &[u8]) -> (Vec<u8>, usize) {
        let mut r = DataReceiver::new(1 << 20);
        match r.push(input) {
            DataProgress::Done(n) => (r.into_body().unwrap(), n),
            DataProgress::More => panic!("no end found in {input:?}"),
        }
    }

    /// Every split of `input` into two pushes gives the same body and end position.
    fn check_splits(input: &[u8], body: &[u8], end: usize) {
        assert_eq!(receive_whole(input), (body.to_vec(), end), "whole");
        for cut in 0..=input.len() {
            let mut r = DataReceiver::new(1 << 20);
            let got_end = match r.push(&input[..cut]) {
                DataProgress::Done(n) => n,
                DataProgress::More => match r.push(&input[cut..]) {
                    DataProgress::Done(n) => cut + n,
                    DataProgress::More => panic!("no end with cut at {cut}"),
                },
            };
            assert_eq!(got_end, end, "cut at {cut}");
            assert_eq!(r.into_body().unwrap(), body, "cut at {cut}");
        }
        // and byte by byte
        let mut r = DataReceiver::new(1 << 20);
        let mut got_end = None;
        for (i, b) in input.iter().enumerate() {
            if let DataProgress::Done(n) = r.push(std::slice::from_ref(b)) {
                assert_eq!(n, 1);
                got_end = Some(i + 1);
                break;
            }
        }
        assert_eq!(got_end, Some(end), "byte by byte");
        assert_eq!(r.into_body().unwrap(), body, "byte by byte");
    }

    #[test]
    fn crlf_message_and_unstuffing() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nNEXT";
        check_splits(
            input,
            b"Subject: x\r\n\r\n.leading dot\r\n",
            input.len() - 4,
        );
    }

    #[test]
    fn empty_message() {
        check_splits(b".\r\n", b"", 3);
        check_splits(b".\n", b"", 2);
    }

    #[test]
    fn bare_lf_is_normalised() {
        check_splits(b"a\nb\r\n\n.\n", b"a\r\nb\r\n\r\n", 8);
    }

    #[test]
    fn lone_cr_is_kept_and_dot_lines_that_are_not_the_end() {
        check_splits(b"a\rb\r\n.\rx\r\n. \r\n.\r\n", b"a\rb\r\n\rx\r\n \r\n", 17);
        // CR CR LF: one CR belongs to the line
        check_splits(b"a\r\r\n.\r\n", b"a\r\r\n", 7);
    }

    #[test]
    fn eight_bit_and_nul_pass_through() {
        check_splits(
            b"caf\xe9 \x00 \xc3\xa9\r\n.\r\n",
            b"caf\xe9 \x00 \xc3\xa9\r\n",
            14,
        );
    }

    #[test]
    fn smuggling_shapes_do_not_end_early_with_crlf_dot_lf_mix() {
        // "\r\n.\r\n" inside is the end; a "." line in the middle of other text is not
        let input = b"x\r\n.y\r\n..\r\n.\r\n";
        check_splits(input, b"x\r\ny\r\n.\r\n", input.len());
    }

    #[test]
    fn oversized_message_is_counted_and_dropped() {
        let mut r = DataReceiver::new(10);
        assert_eq!(r.push(b"0123456789\r\n"), DataProgress::More);
        assert!(r.oversized());
        assert_eq!(r.push(&[b'x'; 5000]), DataProgress::More);
        assert_eq!(r.push(b"\r\n.\r\n"), DataProgress::Done(5));
        assert_eq!(r.size(), 12 + 5002);
        assert!(r.into_body().is_none());
        // exactly at the limit is fine
        let mut r = DataReceiver::new(12);
        assert_eq!(r.push(b"0123456789\r\n.\r\n"), DataProgress::Done(15));
        assert_eq!(r.into_body().unwrap(), b"0123456789\r\n");
    }
}
