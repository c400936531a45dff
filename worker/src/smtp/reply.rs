//! SMTP replies (RFC 5321 §4.2): incremental parsing from bytes, no I/O.
//!
//! [`parse`] takes a buffer and returns `Ok(None)` when the reply is not complete yet ("need
//! more bytes" is not an error), or the reply and how many bytes it used. The whole text is
//! kept, every line with its code, because it goes verbatim into logs, the failed-tube record
//! and bounces. Lines and replies have size caps so a hostile server cannot make us buffer
//! without end. The enhanced status code (RFC 3463) of the first line is picked out.

use std::fmt;

/// RFC 5321 §4.5.3.1.5 says 512 octets per reply line; real servers exceed it a little.
pub const MAX_LINE: usize = 2048;
/// Most lines in one reply (EHLO replies are the long ones).
pub const MAX_LINES: usize = 100;

/// One complete SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code of the last line.
    pub code: u16,
    /// The enhanced status code (`5.1.1`) if the first line starts with one.
    pub dsn: Option<String>,
    /// Every line as received, without CRLF, joined with `\n`.
    pub text: String,
}

/// A reply that breaks the syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line does not start with a 3-digit code: {0:?}")]
    Syntax(String),
    #[error("reply line longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("reply longer than {MAX_LINES} lines")]
    TooManyLines,
}

impl Reply {
    /// The class digit: 2, 3, 4 or 5.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The lines after the code and separator, e.g. the EHLO keywords.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text
            .split('\n')
            .map(|line| line.get(4..).unwrap_or_default())
    }

    /// Builds a reply from text such as `"250 2.0.0 ok"` (for tests and local answers).
    pub fn from_text(text: &str) -> Reply {
        let mut buf = text.replace('\n', "\r\n").into_bytes();
        buf.extend_from_slice(b"\r\n");
        match parse(&buf) {
            Ok(Some((reply, _))) => reply,
            _ => Reply {
                code: 451,
                dsn: None,
                text: text.to_string(),
            },
        }
    }
}

impl fmt::Display for Reply {
    /// One line, continuation lines joined with a space (as Postfix logs them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for line in self.text.split('\n') {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// Parses one reply from the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            return Ok(None);
        };
        if lf > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        let mut line = &rest[..lf];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        pos += lf + 1;
        let ok = line.len() >= 3
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line.get(3), None | Some(b' ') | Some(b'-'));
        if !ok {
            return Err(ReplyError::Syntax(
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
        lines.push(line);
        if lines.len() > MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        if line.get(3) != Some(&b'-') {
            break;
        }
    }
    let last = lines[lines.len() - 1];
    let code = u16::from(last[0] - b'0') * 100
        + u16::from(last[1] - b'0') * 10
        + u16::from(last[2] - b'0');
    let text = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dsn = enhanced_code(lines[0].get(4..).unwrap_or_default(), code);
    Ok(Some((Reply { code, dsn, text }, pos)))
}

/// RFC 3463 `class.subject.detail` at the start of the text, if its class agrees with the
/// reply code (RFC 3463 §2: the class must match the reply's first digit).
fn enhanced_code(text: &[u8], code: u16) -> Option<String> {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let token = std::str::from_utf8(&text[..end]).ok()?;
    let mut parts = token.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let valid = parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && digits(subject, 3)
        && digits(detail, 3)
        && class.as_bytes()[0] - b'0' == (code / 100) as u8;
    valid.then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        let (r, used) = parse(b"250 2.1.0 Ok\r\nextra").unwrap().unwrap();
        assert_eq!(used, 14);
        assert_eq!(r.code, 250);
        assert_eq!(r.dsn.as_deref(), Some("2.1.0"));
        assert_eq!(r.text, "250 2.1.0 Ok");

        let input = b"550-5.7.1 first line\r\n550-second\r\n550 5.7.1 third\r\n";
        let (r, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(r.code, 550);
        assert_eq!(r.dsn.as_deref(), Some("5.7.1"));
        assert_eq!(r.text, "550-5.7.1 first line\n550-second\n550 5.7.1 third");
        assert_eq!(
            r.to_string(),
            "550-5.7.1 first line 550-second 550 5.7.1 third"
        );
        assert_eq!(
            r.lines().collect::<Vec<_>>(),
            ["5.7.1 first line", "second", "5.7.1 third"]
        );
    }

    #[test]
    fn every_split_point_needs_more_then_parses() {
        let input = b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n";
        for cut in 0..input.len() {
            assert_eq!(parse(&input[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (r, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(r.lines().nth(2), Some("SIZE 1000"));
    }

    #[test]
    fn bare_code_and_lf_only() {
        let (r, _) = parse(b"354\n").unwrap().unwrap();
        assert_eq!(r.code, 354);
        assert_eq!(r.dsn, None);
    }

    #[test]
    fn enhanced_code_must_agree_with_class() {
        assert_eq!(parse(b"451 5.7.1 odd\r\n").unwrap().unwrap().0.dsn, None);
        assert_eq!(
            parse(b"451 4.7.1 grey\r\n")
                .unwrap()
                .unwrap()
                .0
                .dsn
                .as_deref(),
            Some("4.7.1")
        );
        assert_eq!(parse(b"250 1.2.3 x\r\n").unwrap().unwrap().0.dsn, None);
        assert_eq!(parse(b"250 ok 2.0.0\r\n").unwrap().unwrap().0.dsn, None);
    }

    #[test]
    fn garbage_and_limits() {
        assert!(matches!(parse(b"hello\r\n"), Err(ReplyError::Syntax(_))));
        assert!(matches!(parse(b"25 x\r\n"), Err(ReplyError::Syntax(_))));
        assert!(matches!(parse(b"250x\r\n"), Err(ReplyError::Syntax(_))));
        let long = vec![b'2'; MAX_LINE + 10];
        assert_eq!(parse(&long), Err(ReplyError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse(many.as_bytes()), Err(ReplyError::TooManyLines));
    }
}
