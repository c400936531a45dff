//! The DATA phase: end-of-data detection, dot-unstuffing and line-ending normalisation.
//!
//! Bytes are pushed in as they arrive, split anywhere. The message ends only at
//! `<CR><LF>.<CR><LF>` (RFC 5321 §4.1.1.4): the dot line must itself end in CRLF and follow a
//! line that ended in CRLF (or the `DATA` command). No other shape ends it — not `\n.\n`,
//! `\r\n.\n`, `\n.\r\n`, `\r.\r`, `\r\n.\r`, `\r.\r\n`, `\n.\r` or `\r.\n` — so a pipelined
//! second transaction hidden behind one of them stays message text (the SMTP smuggling class
//! of CVE-2023-51764). This is Postfix 3.9's `smtpd_forbid_bare_newline`:
//!
//! - [`BareNewline::Normalize`] (the default): a line that ends in a bare LF is stored with a
//!   CRLF ending, like any other line, but it never takes part in the end-of-data sequence.
//! - [`BareNewline::Reject`]: the first bare LF ends the transaction ([`DataProgress::BareLf`];
//!   the session answers `550 5.5.2` and closes, as Postfix does).
//!
//! Every stored line ends in CRLF. A lone CR inside a line is kept as it is. A line that starts
//! with `.` loses that dot (RFC 5321 §4.5.2). The stored size is capped: once over the limit the
//! rest is counted and dropped, so a huge message costs no memory and the session stays in
//! step with the client.
//!
//! Lines longer than 1,000 octets are accepted: applications (PHP `mail()` with HTML bodies) send
//! them, and the worker folds or re-encodes on delivery.

use memchr::memchr;

/// What to do with a line that ends in a bare LF (Postfix 3.9 `smtpd_forbid_bare_newline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Store the line with a CRLF ending; it never ends the message.
    #[default]
    Normalize,
    /// Refuse the message and close the session.
    Reject,
}

impl std::fmt::Display for BareNewline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BareNewline::Normalize => "normalize",
            BareNewline::Reject => "reject",
        })
    }
}

/// Where in the current line the receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing of the line seen yet.
    LineStart,
    /// The line began with a dot, removed; nothing else yet.
    Dot,
    /// The line is `.` followed by a CR, not stored yet.
    DotCr,
    /// Inside a line; `cr` when the last byte was a CR not stored yet (dropped if an LF
    /// follows).
    Line { cr: bool },
}

/// Receives one message body.
#[derive(Debug)]
pub struct DataReceiver {
    body: Vec<u8>,
    max: usize,
    /// Octets of the message after unstuffing and normalisation, including those dropped.
    size: usize,
    state: State,
    /// The previous line ended in a real CRLF (or this is the first line): only then may a
    /// `.` CRLF line end the message.
    after_crlf: bool,
    bare_newline: BareNewline,
}

/// What [`DataReceiver::push`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProgress {
    /// All the input was part of the message; more is needed.
    More,
    /// The end-of-data line was found after this many input octets; the rest is commands.
    Done(usize),
    /// A bare LF came while bare newlines are refused ([`BareNewline::Reject`]).
    BareLf,
}

impl DataReceiver {
    /// A receiver that stores at most `max` octets and normalises bare LF.
    pub fn new(max: usize) -> Self {
        Self::with_bare_newline(max, BareNewline::Normalize)
    }

    /// A receiver that stores at most `max` octets and treats bare LF as `bare_newline` says.
    pub fn with_bare_newline(max: usize, bare_newline: BareNewline) -> Self {
        DataReceiver {
            body: Vec::new(),
            max,
            size: 0,
            state: State::LineStart,
            after_crlf: true,
            bare_newline,
        }
    }

    /// A line has ended; `crlf` when with a real CRLF. False when a bare LF is refused.
    fn end_line(&mut self, crlf: bool) -> bool {
        if !crlf && self.bare_newline == BareNewline::Reject {
            return false;
        }
        self.store(b"\r\n");
        self.after_crlf = crlf;
        self.state = State::LineStart;
        true
    }

    /// Feeds received bytes.
    pub fn push(&mut self, input: &[u8]) -> DataProgress {
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            match self.state {
                State::LineStart => match byte {
                    b'.' => {
                        self.state = State::Dot;
                        i += 1;
                    }
                    _ => self.state = State::Line { cr: false },
                },
                State::Dot => match byte {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    // `.` bare LF: an (unstuffed) empty line, never the end.
                    b'\n' => {
                        if !self.end_line(false) {
                            return DataProgress::BareLf;
                        }
                        i += 1;
                    }
                    _ => self.state = State::Line { cr: false },
                },
                State::DotCr => match byte {
                    b'\n' if self.after_crlf => return DataProgress::Done(i + 1),
                    b'\n' => {
                        // `.` CRLF after a bare LF: an empty line.
                        self.end_line(true);
                        i += 1;
                    }
                    _ => {
                        // The CR belongs to the line's text.
                        self.state = State::Line { cr: true };
                    }
                },
                State::Line { cr } => {
                    let rest = &input[i..];
                    match memchr(b'\n', rest) {
                        Some(pos) => {
                            let text = &rest[..pos];
                            let crlf = match text.split_last() {
                                None => cr,
                                Some((&last, head)) => {
                                    if cr {
                                        self.store(b"\r");
                                    }
                                    if last == b'\r' {
                                        self.store(head);
                                        true
                                    } else {
                                        self.store(text);
                                        false
                                    }
                                }
                            };
                            if !self.end_line(crlf) {
                                return DataProgress::BareLf;
                            }
                            i += pos + 1;
                        }
                        None => {
                            if cr {
                                self.store(b"\r");
                            }
                            let cr = match rest.strip_suffix(b"\r") {
                                Some(head) => {
                                    self.store(head);
                                    true
                                }
                                None => {
                                    self.store(rest);
                                    false
                                }
                            };
                            self.state = State::Line { cr };
                            return DataProgress::More;
                        }
                    }
                }
            }
        }
        DataProgress::More
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
            other => panic!("no end found in {input:?}: {other:?}"),
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
                    other => panic!("no end with cut at {cut}: {other:?}"),
                },
                DataProgress::BareLf => panic!("bare LF refused while normalising"),
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
        // `.` bare LF is an empty line, not the end
        check_splits(b".\n.\r\n.\r\n", b"\r\n\r\n", 8);
    }

    #[test]
    fn bare_lf_is_normalised() {
        // a bare LF line, even an empty one, is not followed by the end: the end needs CRLF first
        check_splits(b"a\nb\r\n\n.\r\nc\r\n.\r\n", b"a\r\nb\r\n\r\n\r\nc\r\n", 15);
    }

    /// Every end-of-data shape of the SMTP smuggling advisory (SEC Consult, CVE-2023-51764/5/6
    /// and the "eight shapes" of issue 11): only `\r\n.\r\n` ends the message; in the
    /// others the hidden transaction stays message text, normalised to CRLF lines.
    #[test]
    fn only_crlf_dot_crlf_ends_data_smuggling_shapes() {
        const HIDDEN: &[u8] = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nforged";
        let shapes: [(&[u8], &[u8]); 9] = [
            // shape, how it is stored (after "body")
            (b"\n.\n", b"\r\n\r\n"),
            (b"\n.\r\n", b"\r\n\r\n"),
            (b"\r\n.\n", b"\r\n\r\n"),
            (b"\r.\r", b"\r.\r"),
            (b"\r.\r\n", b"\r.\r\n"),
            (b"\r\n.\r", b"\r\n\r"),
            (b"\n.\r", b"\r\n\r"),
            (b"\r.\n", b"\r.\r\n"),
            (b"\r\n\x00.\r\n", b"\r\n\x00.\r\n"),
        ];
        for (shape, stored) in shapes {
            let mut input = b"body".to_vec();
            input.extend_from_slice(shape);
            input.extend_from_slice(HIDDEN);
            input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            let mut body = b"body".to_vec();
            body.extend_from_slice(stored);
            body.extend_from_slice(HIDDEN);
            body.extend_from_slice(b"\r\n");
            check_splits(&input, &body, input.len() - 6);
        }
        // and the real one ends it
        check_splits(b"body\r\n.\r\nMAIL", b"body\r\n", 9);
    }

    #[test]
    fn reject_mode_stops_at_the_first_bare_lf() {
        for input in [&b"a\nb"[..], b"ok\r\n.\n", b"\n", b"x\r\n\n", b"y\r\r\n\n"] {
            for cut in 0..=input.len() {
                let mut r = DataReceiver::with_bare_newline(1 << 20, BareNewline::Reject);
                let first = r.push(&input[..cut]);
                let got = if first == DataProgress::More {
                    r.push(&input[cut..])
                } else {
                    first
                };
                assert_eq!(got, DataProgress::BareLf, "{input:?} cut at {cut}");
            }
        }
        let mut r = DataReceiver::with_bare_newline(1 << 20, BareNewline::Reject);
        assert_eq!(r.push(b"a\r\n\r\n.\r\n"), DataProgress::Done(8));
        assert_eq!(r.into_body().unwrap(), b"a\r\n\r\n");
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
