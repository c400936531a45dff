//! The crate's one error type.
//!
//! Every beanstalkd error reply has its own variant, so callers can `match` on `NotFound`,
//! `TimedOut` or `JobTooBig` instead of comparing strings. [`Error::is_connection_error`] is the
//! one place that decides whether the connection that produced an error can still be used.

use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to beanstalkd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, reading or writing failed (including the server closing the connection).
    #[error("beanstalkd I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A connect or a command did not finish within the configured time.
    #[error("beanstalkd did not answer within {0:?}")]
    Timeout(Duration),
    /// The server answered something this client did not expect (or could not frame): the
    /// stream can no longer be trusted.
    #[error("beanstalkd protocol error: {0}")]
    Protocol(String),
    /// A tube name that beanstalkd would reject; nothing was sent.
    #[error("invalid tube name {0:?}")]
    InvalidTubeName(String),
    /// `OUT_OF_MEMORY`: the server cannot allocate memory for the job.
    #[error("beanstalkd is out of memory")]
    OutOfMemory,
    /// `INTERNAL_ERROR`: a bug in the server.
    #[error("beanstalkd internal error")]
    InternalError,
    /// `BAD_FORMAT`: the server did not understand a command line.
    #[error("beanstalkd rejected a badly formatted command")]
    BadFormat,
    /// `UNKNOWN_COMMAND`.
    #[error("beanstalkd does not know the command")]
    UnknownCommand,
    /// `EXPECTED_CRLF`: a job body was not followed by CRLF.
    #[error("beanstalkd expected CRLF after the job body")]
    ExpectedCrlf,
    /// `JOB_TOO_BIG`: the body is larger than the server's `max-job-size` (`-z`).
    #[error("job body larger than the server's max-job-size")]
    JobTooBig,
    /// `DRAINING`: the server is in drain mode and takes no new jobs.
    #[error("beanstalkd is draining and accepts no new jobs")]
    Draining,
    /// `NOT_FOUND`: no such job (or tube), or the job is not reserved by this connection.
    #[error("not found")]
    NotFound,
    /// `DEADLINE_SOON`: a job reserved by this connection is about to reach its TTR.
    #[error("a reserved job's time-to-run is about to expire")]
    DeadlineSoon,
    /// `TIMED_OUT`: `reserve-with-timeout` found no job in time.
    #[error("no job became ready in time")]
    TimedOut,
    /// `NOT_IGNORED`: the last watched tube cannot be ignored.
    #[error("cannot ignore the only watched tube")]
    NotIgnored,
    /// `BURIED`: the server buried the job instead (out of memory growing its priority
    /// queue). For `put` this carries the new job's id; for `release` the released job's id.
    #[error("beanstalkd buried job {0}")]
    Buried(u64),
}

impl Error {
    /// Whether the connection that produced this error must be thrown away.
    ///
    /// True for I/O errors, timeouts and protocol errors (the reply stream may be out of step
    /// with the requests). Also true for `BAD_FORMAT`, `UNKNOWN_COMMAND` and `EXPECTED_CRLF`:
    /// this client only sends well-formed commands, so one of those replies means the two ends
    /// disagree about where a command starts. Every other reply is a normal answer on a
    /// healthy connection. [`Client`](crate::Client) acts on this itself: after such an error
    /// the next call reconnects.
    pub fn is_connection_error(&self) -> bool {
        match self {
            Error::Io(_)
            | Error::Timeout(_)
            | Error::Protocol(_)
            | Error::BadFormat
            | Error::UnknownCommand
            | Error::ExpectedCrlf => true,
            Error::InvalidTubeName(_)
            | Error::OutOfMemory
            | Error::InternalError
            | Error::JobTooBig
            | Error::Draining
            | Error::NotFound
            | Error::DeadlineSoon
            | Error::TimedOut
            | Error::NotIgnored
            | Error::Buried(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Failure;

    #[test]
    fn classification() {
        let healthy = [
            Failure::OutOfMemory,
            Failure::InternalError,
            Failure::JobTooBig,
            Failure::Draining,
            Failure::NotFound,
            Failure::DeadlineSoon,
            Failure::TimedOut,
            Failure::NotIgnored,
        ];
        for f in healthy {
            assert!(!Error::from(f).is_connection_error(), "{f:?}");
        }
        for f in [
            Failure::BadFormat,
            Failure::UnknownCommand,
            Failure::ExpectedCrlf,
        ] {
            assert!(Error::from(f).is_connection_error(), "{f:?}");
        }
        assert!(matches!(
            Error::from(Failure::UnknownCommand),
            Error::UnknownCommand
        ));
        assert!(matches!(Error::from(Failure::BadFormat), Error::BadFormat));
        assert!(!Error::Buried(3).is_connection_error());
        assert!(!Error::InvalidTubeName("-".into()).is_connection_error());
        assert!(Error::Timeout(Duration::from_secs(1)).is_connection_error());
        assert!(Error::Protocol("x".into()).is_connection_error());
        assert!(Error::Io(std::io::ErrorKind::BrokenPipe.into()).is_connection_error());
    }
}
