//! Buffered request/reply I/O on one stream, generic over the stream so unit tests can use
//! an in-memory pipe. Knows framing (via [`proto`](crate::proto)), not timeouts, reconnects
//! or the meaning of replies; that is [`Client`](crate::Client)'s job.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::proto::{decode, Command, Decoded, Reply};

/// Bodies up to this size are sent in one write with their command line (one packet for a
/// typical small put); larger ones are written from the caller's slice without a copy.
const COALESCE_LIMIT: usize = 16 * 1024;

pub(crate) struct Connection<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    max_line: usize,
    max_body: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(crate) fn new(stream: S, max_line: usize, max_body: usize) -> Self {
        Connection {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: Vec::with_capacity(256),
            max_line,
            max_body,
        }
    }

    /// Sends one command (with its body for `put`) and reads its reply.
    ///
    /// The body is always sent in full, followed by CRLF, even if the server will refuse it
    /// (`JOB_TOO_BIG`): beanstalkd reads and discards the body before answering, so this
    /// keeps both ends in step.
    pub(crate) async fn request(
        &mut self,
        cmd: &Command<'_>,
        body: Option<&[u8]>,
    ) -> Result<Reply, Error> {
        self.wbuf.clear();
        cmd.encode(&mut self.wbuf);
        match body {
            Some(body) if body.len() <= COALESCE_LIMIT => {
                self.wbuf.extend_from_slice(body);
                self.wbuf.extend_from_slice(b"\r\n");
                self.stream.write_all(&self.wbuf).await?;
            }
            Some(body) => {
                self.stream.write_all(&self.wbuf).await?;
                self.stream.write_all(body).await?;
                self.stream.write_all(b"\r\n").await?;
            }
            None => self.stream.write_all(&self.wbuf).await?,
        }
        self.stream.flush().await?;
        self.read_reply().await
    }

    /// Sends several body-less commands in one write and reads their replies, in order
    /// (beanstalkd answers a connection's commands one after the other). The caller bounds
    /// how many: every reply is held until the last has arrived, and the commands must fit
    /// in the socket buffers while the replies wait unread (a few hundred short commands).
    pub(crate) async fn pipeline(&mut self, cmds: &[Command<'_>]) -> Result<Vec<Reply>, Error> {
        self.wbuf.clear();
        for cmd in cmds {
            cmd.encode(&mut self.wbuf);
        }
        self.stream.write_all(&self.wbuf).await?;
        self.stream.flush().await?;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    async fn read_reply(&mut self) -> Result<Reply, Error> {
        loop {
            match decode(&mut self.rbuf, self.max_line, self.max_body)? {
                Decoded::Complete(reply) => return Ok(reply),
                Decoded::Incomplete { need } => {
                    let want = need.saturating_sub(self.rbuf.len()).max(4096);
                    self.rbuf.reserve(want);
                    if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                        return Err(Error::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "beanstalkd closed the connection",
                        )));
                    }
                }
            }
        }
    }
}

impl Connection<TcpStream> {
    /// Whether the idle connection still looks usable: the server has not closed it and has
    /// sent nothing unasked. A check without waiting, made before each command so that a
    /// server restart while idle costs no failed call (nothing was sent on the dead
    /// connection, so reconnecting is safe even for `put`).
    pub(crate) fn looks_alive(&self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        // A real non-blocking peek (the socket is in non-blocking mode): tokio's own
        // `try_read` trusts cached readiness, which may not have seen the FIN yet.
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&self.stream).peek(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            // 0 = the server closed; anything else = unsolicited bytes, out of step.
            Ok(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Failure, DEFAULT_MAX_BODY, DEFAULT_MAX_LINE};

    /// A big put's body is written in full and framed with CRLF; replies trickling in one
    /// byte at a time are reassembled.
    #[tokio::test]
    async fn big_put_and_trickled_reply() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut conn = Connection::new(client, DEFAULT_MAX_LINE, DEFAULT_MAX_BODY);
        let body = vec![b'\n'; 100_000];
        let expected_len = "put 0 0 1 100000\r\n".len() + body.len() + 2;
        let server_task = tokio::spawn(async move {
            let mut got = vec![0u8; expected_len];
            server.read_exact(&mut got).await.unwrap();
            for b in b"JOB_TOO_BIG\r\n" {
                server.write_all(&[*b]).await.unwrap();
            }
            got
        });
        let cmd = Command::Put {
            pri: 0,
            delay: 0,
            ttr: 1,
            len: body.len(),
        };
        let reply = conn.request(&cmd, Some(&body)).await.unwrap();
        assert_eq!(reply, Reply::Failure(Failure::JobTooBig));
        let got = server_task.await.unwrap();
        assert!(got.starts_with(b"put 0 0 1 100000\r\n\n\n"));
        assert!(got.ends_with(b"\n\r\n"));
    }

    #[tokio::test]
    async fn eof_is_an_io_error() {
        let (client, server) = tokio::io::duplex(1024);
        drop(server);
        let mut conn = Connection::new(client, DEFAULT_MAX_LINE, DEFAULT_MAX_BODY);
        let err = conn.request(&Command::Stats, None).await.unwrap_err();
        assert!(err.is_connection_error(), "{err}");
    }
}
