//! The beanstalkd wire format (beanstalkd `doc/protocol.txt`): command encoding and
//! incremental reply parsing. No I/O here.
//!
//! [`decode`] looks at the bytes read so far and either returns one complete [`Reply`]
//! (removing it from the buffer) or says how many bytes it needs ([`Decoded::Incomplete`]).
//! Limits are enforced before buffering: a reply line longer than `max_line` or a job body
//! announced larger than `max_body` is a [`Error::Protocol`], so a broken or hostile server
//! cannot make the client allocate without bound.

use bytes::{Bytes, BytesMut};

use crate::error::Error;

/// beanstalkd's limit on tube names, in bytes (`MAX_TUBE_NAME_LEN - 1`).
pub const MAX_TUBE_NAME: usize = 200;
/// Default cap on a reply's first line. beanstalkd's longest is `USING <200-byte tube>`.
pub const DEFAULT_MAX_LINE: usize = 1024;
/// Default cap on a job body or YAML reply accepted from the server.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;

/// A job as handed out by `reserve` and `peek`. The body is opaque bytes (8-bit clean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The server's job id.
    pub id: u64,
    /// The job body, exactly as put.
    pub body: Bytes,
}

/// Checks a tube name against beanstalkd's rules: 1 to 200 bytes of letters, digits and
/// `-+/;.$_()`, not starting with `-`.
pub fn validate_tube(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TUBE_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTubeName(name.to_owned()))
    }
}

/// One request line (the job body of `put` is written separately, after the line).
/// Variants are the protocol's commands one to one (see the [`Client`](crate::Client)
/// method of the same name); numbers are sent as given, durations in whole seconds.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Put {
        pri: u32,
        delay: u32,
        ttr: u32,
        len: usize,
    },
    Use(&'a str),
    Reserve,
    ReserveWithTimeout(u32),
    ReserveJob(u64),
    Delete(u64),
    Release {
        id: u64,
        pri: u32,
        delay: u32,
    },
    Bury {
        id: u64,
        pri: u32,
    },
    Touch(u64),
    Watch(&'a str),
    Ignore(&'a str),
    Peek(u64),
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Kick(u64),
    KickJob(u64),
    StatsJob(u64),
    StatsTube(&'a str),
    Stats,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube {
        tube: &'a str,
        delay: u32,
    },
}

impl Command<'_> {
    /// The command's name as it appears on the wire (for error messages).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Use(_) => "use",
            Command::Reserve => "reserve",
            Command::ReserveWithTimeout(_) => "reserve-with-timeout",
            Command::ReserveJob(_) => "reserve-job",
            Command::Delete(_) => "delete",
            Command::Release { .. } => "release",
            Command::Bury { .. } => "bury",
            Command::Touch(_) => "touch",
            Command::Watch(_) => "watch",
            Command::Ignore(_) => "ignore",
            Command::Peek(_) => "peek",
            Command::PeekReady => "peek-ready",
            Command::PeekDelayed => "peek-delayed",
            Command::PeekBuried => "peek-buried",
            Command::Kick(_) => "kick",
            Command::KickJob(_) => "kick-job",
            Command::StatsJob(_) => "stats-job",
            Command::StatsTube(_) => "stats-tube",
            Command::Stats => "stats",
            Command::ListTubes => "list-tubes",
            Command::ListTubeUsed => "list-tube-used",
            Command::ListTubesWatched => "list-tubes-watched",
            Command::PauseTube { .. } => "pause-tube",
        }
    }

    /// Appends the command line, CRLF included, to `out`. Tube names must already be
    /// validated (they cannot contain spaces or CR/LF then).
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let name = self.name();
        // Writing into a Vec cannot fail.
        let _ = match *self {
            Command::Put {
                pri,
                delay,
                ttr,
                len,
            } => write!(out, "{name} {pri} {delay} {ttr} {len}"),
            Command::Use(t) | Command::Watch(t) | Command::Ignore(t) | Command::StatsTube(t) => {
                write!(out, "{name} {t}")
            }
            Command::ReserveWithTimeout(secs) => write!(out, "{name} {secs}"),
            Command::ReserveJob(id)
            | Command::Delete(id)
            | Command::Touch(id)
            | Command::Peek(id)
            | Command::KickJob(id)
            | Command::StatsJob(id) => write!(out, "{name} {id}"),
            Command::Release { id, pri, delay } => write!(out, "{name} {id} {pri} {delay}"),
            Command::Bury { id, pri } => write!(out, "{name} {id} {pri}"),
            Command::Kick(bound) => write!(out, "{name} {bound}"),
            Command::PauseTube { tube, delay } => write!(out, "{name} {tube} {delay}"),
            Command::Reserve
            | Command::PeekReady
            | Command::PeekDelayed
            | Command::PeekBuried
            | Command::Stats
            | Command::ListTubes
            | Command::ListTubeUsed
            | Command::ListTubesWatched => write!(out, "{name}"),
        };
        out.extend_from_slice(b"\r\n");
    }
}

/// An error reply, mapped one to one onto the [`Error`] variant of the same name.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    OutOfMemory,
    InternalError,
    BadFormat,
    UnknownCommand,
    ExpectedCrlf,
    JobTooBig,
    Draining,
    NotFound,
    DeadlineSoon,
    TimedOut,
    NotIgnored,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::OutOfMemory => Error::OutOfMemory,
            Failure::InternalError => Error::InternalError,
            Failure::BadFormat => Error::BadFormat,
            Failure::UnknownCommand => Error::UnknownCommand,
            Failure::ExpectedCrlf => Error::ExpectedCrlf,
            Failure::JobTooBig => Error::JobTooBig,
            Failure::Draining => Error::Draining,
            Failure::NotFound => Error::NotFound,
            Failure::DeadlineSoon => Error::DeadlineSoon,
            Failure::TimedOut => Error::TimedOut,
            Failure::NotIgnored => Error::NotIgnored,
        }
    }
}

/// One reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `INSERTED <id>`
    Inserted(u64),
    /// `BURIED <id>` (to `put`) or `BURIED` (to `release`, and the success reply to `bury`).
    Buried(Option<u64>),
    /// `USING <tube>`
    Using(String),
    /// `WATCHING <count>`
    Watching(u32),
    /// `RESERVED <id> <bytes>` + body
    Reserved(Job),
    /// `FOUND <id> <bytes>` + body
    Found(Job),
    /// `OK <bytes>` + YAML body
    Ok(Bytes),
    /// `DELETED`
    Deleted,
    /// `RELEASED`
    Released,
    /// `TOUCHED`
    Touched,
    /// `KICKED <count>` (to `kick`) or `KICKED` (to `kick-job`)
    Kicked(Option<u64>),
    /// `PAUSED`
    Paused,
    /// Any error reply.
    Failure(Failure),
}

impl Reply {
    /// The reply's first word, for error messages (never includes a body).
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Inserted(_) => "INSERTED",
            Reply::Buried(_) => "BURIED",
            Reply::Using(_) => "USING",
            Reply::Watching(_) => "WATCHING",
            Reply::Reserved(_) => "RESERVED",
            Reply::Found(_) => "FOUND",
            Reply::Ok(_) => "OK",
            Reply::Deleted => "DELETED",
            Reply::Released => "RELEASED",
            Reply::Touched => "TOUCHED",
            Reply::Kicked(_) => "KICKED",
            Reply::Paused => "PAUSED",
            Reply::Failure(_) => "an error reply",
        }
    }
}

/// Outcome of [`decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// One reply, removed from the buffer.
    Complete(Reply),
    /// More bytes are needed; nothing was consumed.
    Incomplete {
        /// The buffer should hold at least this many bytes in total before `decode` can
        /// make progress (a hint for reserving capacity; a line's length is not known
        /// until its CRLF arrives).
        need: usize,
    },
}

/// Tries to take one reply off the front of `buf`.
pub fn decode(buf: &mut BytesMut, max_line: usize, max_body: usize) -> Result<Decoded, Error> {
    // Only look for the CRLF within the allowed line length (+2 for the CRLF itself).
    let window = &buf[..buf.len().min(max_line + 2)];
    let Some(line_len) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= max_line + 2 {
            return Err(Error::Protocol(format!(
                "reply line longer than {max_line} bytes"
            )));
        }
        return Ok(Decoded::Incomplete {
            need: buf.len() + 1,
        });
    };
    let line = std::str::from_utf8(&buf[..line_len])
        .map_err(|_| Error::Protocol("reply line is not ASCII".into()))?;
    let mut words = line.split(' ');
    let word = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let head = line_len + 2;

    let simple = |reply: Reply| -> Result<(Reply, usize), Error> { Ok((reply, head)) };
    let (reply, consumed) = match (word, args.as_slice()) {
        ("INSERTED", [id]) => simple(Reply::Inserted(num(id, line)?))?,
        ("BURIED", []) => simple(Reply::Buried(None))?,
        ("BURIED", [id]) => simple(Reply::Buried(Some(num(id, line)?)))?,
        ("USING", [tube]) => simple(Reply::Using((*tube).to_owned()))?,
        ("WATCHING", [n]) => simple(Reply::Watching(num(n, line)?))?,
        ("DELETED", []) => simple(Reply::Deleted)?,
        ("RELEASED", []) => simple(Reply::Released)?,
        ("TOUCHED", []) => simple(Reply::Touched)?,
        ("KICKED", []) => simple(Reply::Kicked(None))?,
        ("KICKED", [n]) => simple(Reply::Kicked(Some(num(n, line)?)))?,
        ("PAUSED", []) => simple(Reply::Paused)?,
        ("OUT_OF_MEMORY", []) => simple(Reply::Failure(Failure::OutOfMemory))?,
        ("INTERNAL_ERROR", []) => simple(Reply::Failure(Failure::InternalError))?,
        ("BAD_FORMAT", []) => simple(Reply::Failure(Failure::BadFormat))?,
        ("UNKNOWN_COMMAND", []) => simple(Reply::Failure(Failure::UnknownCommand))?,
        ("EXPECTED_CRLF", []) => simple(Reply::Failure(Failure::ExpectedCrlf))?,
        ("JOB_TOO_BIG", []) => simple(Reply::Failure(Failure::JobTooBig))?,
        ("DRAINING", []) => simple(Reply::Failure(Failure::Draining))?,
        ("NOT_FOUND", []) => simple(Reply::Failure(Failure::NotFound))?,
        ("DEADLINE_SOON", []) => simple(Reply::Failure(Failure::DeadlineSoon))?,
        ("TIMED_OUT", []) => simple(Reply::Failure(Failure::TimedOut))?,
        ("NOT_IGNORED", []) => simple(Reply::Failure(Failure::NotIgnored))?,
        ("RESERVED" | "FOUND" | "OK", _) => {
            let (id, len) = match (word, args.as_slice()) {
                ("OK", [len]) => (0, num::<usize>(len, line)?),
                ("RESERVED" | "FOUND", [id, len]) => (num(id, line)?, num::<usize>(len, line)?),
                _ => return Err(bad_line(line)),
            };
            if len > max_body {
                return Err(Error::Protocol(format!(
                    "{word} body of {len} bytes is over the {max_body}-byte limit"
                )));
            }
            let (is_ok, is_reserved) = (word == "OK", word == "RESERVED");
            let total = head + len + 2;
            if buf.len() < total {
                return Ok(Decoded::Incomplete { need: total });
            }
            if &buf[head + len..total] != b"\r\n" {
                return Err(Error::Protocol("reply body not followed by CRLF".into()));
            }
            let mut frame = buf.split_to(total);
            let body = frame.split_off(head).split_to(len).freeze();
            let reply = if is_ok {
                Reply::Ok(body)
            } else if is_reserved {
                Reply::Reserved(Job { id, body })
            } else {
                Reply::Found(Job { id, body })
            };
            return Ok(Decoded::Complete(reply));
        }
        _ => return Err(bad_line(line)),
    };
    let _ = buf.split_to(consumed);
    Ok(Decoded::Complete(reply))
}

fn num<T: std::str::FromStr>(s: &str, line: &str) -> Result<T, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_line(line));
    }
    s.parse().map_err(|_| bad_line(line))
}

fn bad_line(line: &str) -> Error {
    // The line is at most max_line bytes; cut it further for the message.
    let shown: String = line.chars().take(80).collect();
    Error::Protocol(format!("unexpected reply line {shown:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Reply> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while !buf.is_empty() {
            match decode(&mut buf, DEFAULT_MAX_LINE, DEFAULT_MAX_BODY).unwrap() {
                Decoded::Complete(r) => out.push(r),
                Decoded::Incomplete { .. } => panic!("incomplete at {:?}", buf),
            }
        }
        out
    }

    /// Feeds `input` in two pieces split at every position, and byte by byte; each way must
    /// give the same replies as the whole input at once.
    fn check_splits(input: &[u8], expected: &[Reply]) {
        assert_eq!(decode_all(input), expected);
        for split in 0..=input.len() {
            let mut got = Vec::new();
            let mut buf = BytesMut::new();
            for piece in [&input[..split], &input[split..]] {
                buf.extend_from_slice(piece);
                while let Decoded::Complete(r) =
                    decode(&mut buf, DEFAULT_MAX_LINE, DEFAULT_MAX_BODY).unwrap()
                {
                    got.push(r);
                }
            }
            assert_eq!(got, expected, "split at {split}");
            assert!(buf.is_empty());
        }
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            match decode(&mut buf, DEFAULT_MAX_LINE, DEFAULT_MAX_BODY).unwrap() {
                Decoded::Complete(r) => got.push(r),
                Decoded::Incomplete { need } => assert!(need > buf.len()),
            }
        }
        assert_eq!(got, expected, "byte by byte");
    }

    #[test]
    fn every_simple_reply() {
        let input = b"INSERTED 7\r\nBURIED 8\r\nBURIED\r\nUSING foo\r\nWATCHING 2\r\n\
DELETED\r\nRELEASED\r\nTOUCHED\r\nKICKED 3\r\nKICKED\r\nPAUSED\r\nOUT_OF_MEMORY\r\n\
INTERNAL_ERROR\r\nBAD_FORMAT\r\nUNKNOWN_COMMAND\r\nEXPECTED_CRLF\r\nJOB_TOO_BIG\r\n\
DRAINING\r\nNOT_FOUND\r\nDEADLINE_SOON\r\nTIMED_OUT\r\nNOT_IGNORED\r\n";
        let expected = vec![
            Reply::Inserted(7),
            Reply::Buried(Some(8)),
            Reply::Buried(None),
            Reply::Using("foo".into()),
            Reply::Watching(2),
            Reply::Deleted,
            Reply::Released,
            Reply::Touched,
            Reply::Kicked(Some(3)),
            Reply::Kicked(None),
            Reply::Paused,
            Reply::Failure(Failure::OutOfMemory),
            Reply::Failure(Failure::InternalError),
            Reply::Failure(Failure::BadFormat),
            Reply::Failure(Failure::UnknownCommand),
            Reply::Failure(Failure::ExpectedCrlf),
            Reply::Failure(Failure::JobTooBig),
            Reply::Failure(Failure::Draining),
            Reply::Failure(Failure::NotFound),
            Reply::Failure(Failure::DeadlineSoon),
            Reply::Failure(Failure::TimedOut),
            Reply::Failure(Failure::NotIgnored),
        ];
        check_splits(input, &expected);
    }

    #[test]
    fn bodies_are_8bit_clean_and_split_anywhere() {
        let body: &[u8] = b"a\r\nb\0\xff\xfe\r\n";
        let mut input = Vec::new();
        input.extend_from_slice(format!("RESERVED 42 {}\r\n", body.len()).as_bytes());
        input.extend_from_slice(body);
        input.extend_from_slice(b"\r\nFOUND 1 0\r\n\r\nOK 14\r\n---\n- default\n\r\nDELETED\r\n");
        let expected = vec![
            Reply::Reserved(Job {
                id: 42,
                body: Bytes::copy_from_slice(body),
            }),
            Reply::Found(Job {
                id: 1,
                body: Bytes::new(),
            }),
            Reply::Ok(Bytes::from_static(b"---\n- default\n")),
            Reply::Deleted,
        ];
        check_splits(&input, &expected);
    }

    #[test]
    fn incomplete_body_asks_for_the_whole_frame() {
        let mut buf = BytesMut::from(&b"RESERVED 1 10\r\nabc"[..]);
        assert_eq!(
            decode(&mut buf, DEFAULT_MAX_LINE, DEFAULT_MAX_BODY).unwrap(),
            Decoded::Incomplete { need: 15 + 10 + 2 }
        );
        assert_eq!(buf.len(), 18, "nothing consumed");
    }

    #[test]
    fn limits_are_protocol_errors() {
        let mut long = BytesMut::from(&[b'A'; 40][..]);
        assert!(matches!(
            decode(&mut long, 32, 100),
            Err(Error::Protocol(m)) if m.contains("longer")
        ));
        // Exactly at the limit is fine.
        let mut ok = BytesMut::from(&b"USING abcdef\r\n"[..]);
        assert!(matches!(decode(&mut ok, 12, 100), Ok(Decoded::Complete(_))));
        let mut big = BytesMut::from(&b"RESERVED 1 101\r\n"[..]);
        assert!(matches!(
            decode(&mut big, 32, 100),
            Err(Error::Protocol(m)) if m.contains("limit")
        ));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"INSERTED\r\n",
            b"INSERTED x\r\n",
            b"INSERTED +1\r\n",
            b"INSERTED 1 2\r\n",
            b"WATCHING 99999999999\r\n",
            b"RESERVED 1\r\n",
            b"OK 3\r\nabcde\r\n",
            b"NOT_FOUND \r\n",
            b"\xff\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                matches!(decode(&mut buf, 64, 100), Err(Error::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encode_commands() {
        let cases: Vec<(Command, &str)> = vec![
            (
                Command::Put {
                    pri: 1,
                    delay: 2,
                    ttr: 3,
                    len: 4,
                },
                "put 1 2 3 4",
            ),
            (Command::Use("a"), "use a"),
            (Command::Reserve, "reserve"),
            (Command::ReserveWithTimeout(5), "reserve-with-timeout 5"),
            (Command::ReserveJob(9), "reserve-job 9"),
            (Command::Delete(9), "delete 9"),
            (
                Command::Release {
                    id: 9,
                    pri: 1,
                    delay: 2,
                },
                "release 9 1 2",
            ),
            (Command::Bury { id: 9, pri: 1 }, "bury 9 1"),
            (Command::Touch(9), "touch 9"),
            (Command::Watch("w"), "watch w"),
            (Command::Ignore("w"), "ignore w"),
            (Command::Peek(9), "peek 9"),
            (Command::PeekReady, "peek-ready"),
            (Command::PeekDelayed, "peek-delayed"),
            (Command::PeekBuried, "peek-buried"),
            (Command::Kick(10), "kick 10"),
            (Command::KickJob(9), "kick-job 9"),
            (Command::StatsJob(9), "stats-job 9"),
            (Command::StatsTube("t"), "stats-tube t"),
            (Command::Stats, "stats"),
            (Command::ListTubes, "list-tubes"),
            (Command::ListTubeUsed, "list-tube-used"),
            (Command::ListTubesWatched, "list-tubes-watched"),
            (
                Command::PauseTube {
                    tube: "t",
                    delay: 5,
                },
                "pause-tube t 5",
            ),
        ];
        for (cmd, line) in cases {
            let mut out = Vec::new();
            cmd.encode(&mut out);
            assert_eq!(out, format!("{line}\r\n").into_bytes());
        }
    }

    #[test]
    fn tube_names() {
        for good in ["default", "a", "A-b+c/d;e.f$g_h(i)", &"x".repeat(200)] {
            assert!(validate_tube(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a b", "a\r\n", "é", "a*", &"x".repeat(201)] {
            assert!(
                matches!(validate_tube(bad), Err(Error::InvalidTubeName(_))),
                "{bad}"
            );
        }
    }
}
