//! Header fields of a raw message, as DKIM sees them, without copying.
//!
//! A field is `name ":" value` where the value runs to the end of the last line of the field
//! (folded continuation lines start with SP or HTAB) and keeps its line break, which relaxed
//! canonicalization (RFC 6376 §3.4.2) then normalizes. The header section ends at the first
//! empty line; a line that is neither a field nor a continuation is taken as the start of the
//! body (a malformed message: what we sign is what the receiver will see as the body).
//! Lines may end in CRLF or, in malformed input, a bare LF.

use mail_auth::common::headers::HeaderStream;

/// Iterates over the header fields of `message`, then yields the body.
pub(crate) struct Fields<'x> {
    message: &'x [u8],
    pos: usize,
    body: Option<usize>,
}

impl<'x> Fields<'x> {
    pub(crate) fn new(message: &'x [u8]) -> Self {
        Fields {
            message,
            pos: 0,
            body: None,
        }
    }
}

impl<'x> Iterator for Fields<'x> {
    /// (name as written, value after the colon including the final line break)
    type Item = (&'x [u8], &'x [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.body.is_some() {
            return None;
        }
        let rest = &self.message[self.pos..];
        if rest.is_empty() {
            self.body = Some(self.message.len());
            return None;
        }
        if rest.starts_with(b"\r\n") {
            self.body = Some(self.pos + 2);
            return None;
        }
        if rest.starts_with(b"\n") {
            self.body = Some(self.pos + 1);
            return None;
        }
        // The field ends after a line break not followed by WSP (RFC 5322 §2.2.3 folding).
        let mut end = rest.len();
        let mut from = 0;
        while let Some(nl) = rest[from..].iter().position(|&b| b == b'\n') {
            let after = from + nl + 1;
            match rest.get(after) {
                Some(b' ' | b'\t') => from = after,
                _ => {
                    end = after;
                    break;
                }
            }
        }
        let field = &rest[..end];
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            self.body = Some(self.pos);
            return None;
        };
        // A colon on a continuation line does not make the first line a field.
        if field[..colon].contains(&b'\n') {
            self.body = Some(self.pos);
            return None;
        }
        self.pos += end;
        Some((&field[..colon], &field[colon + 1..]))
    }
}

impl<'x> HeaderStream<'x> for Fields<'x> {
    fn next_header(&mut self) -> Option<(&'x [u8], &'x [u8])> {
        self.next()
    }

    fn body(&mut self) -> &'x [u8] {
        while self.next().is_some() {}
        let start = self.body.unwrap_or(self.message.len());
        &self.message[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Field<'a> = (&'a [u8], &'a [u8]);

    fn split(message: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
        let mut fields = Fields::new(message);
        let headers: Vec<_> = fields.by_ref().collect();
        let body = fields.body();
        (headers, body)
    }

    #[test]
    fn fields_and_body() {
        let (headers, body) =
            split(b"From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\nX:\r\n\r\nbody\r\n\r\n");
        assert_eq!(
            headers,
            vec![
                (&b"From"[..], &b" a@b\r\n"[..]),
                (&b"Subject"[..], &b" one\r\n two\r\n\tthree\r\n"[..]),
                (&b"X"[..], &b"\r\n"[..]),
            ]
        );
        assert_eq!(body, b"body\r\n\r\n");
    }

    #[test]
    fn edge_cases() {
        assert_eq!(split(b""), (vec![], &b""[..]));
        assert_eq!(split(b"\r\nonly body"), (vec![], &b"only body"[..]));
        // No empty line: everything is header, the body is empty.
        assert_eq!(
            split(b"A: 1\r\nB: 2"),
            (
                vec![(&b"A"[..], &b" 1\r\n"[..]), (&b"B"[..], &b" 2"[..])],
                &b""[..]
            )
        );
        // A line without a colon starts the body.
        assert_eq!(
            split(b"A: 1\r\nnot a field\r\nx"),
            (vec![(&b"A"[..], &b" 1\r\n"[..])], &b"not a field\r\nx"[..])
        );
        // Bare LF.
        assert_eq!(
            split(b"A: 1\n\nb\n"),
            (vec![(&b"A"[..], &b" 1\n"[..])], &b"b\n"[..])
        );
        // 8-bit bytes pass through.
        assert_eq!(
            split(b"S: \xe9\xff\r\n\r\n\xe9"),
            (vec![(&b"S"[..], &b" \xe9\xff\r\n"[..])], &b"\xe9"[..])
        );
    }
}
