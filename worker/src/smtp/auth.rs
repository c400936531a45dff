//! SMTP AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, as a state machine without I/O.
//!
//! [`Exchange`] gives the first command line and then, for each server reply, the next line to
//! send, success, or the reply that refused the login. The session ([`super::session`]) does
//! the reading and writing.
//!
//! Not here: whether AUTH may be sent at all (only inside verified TLS; see
//! [`crate::deliver`]), where the credentials come from ([`crate::login`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::reply::Reply;

/// A SASL mechanism the worker can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    /// The mechanism to use among those the server offered (smtp-proto's `AUTH_*` bits):
    /// `wanted` if offered, else PLAIN, else LOGIN.
    pub fn choose(offered: u64, wanted: Option<Mechanism>) -> Option<Mechanism> {
        let has = |m: Mechanism| offered & m.bit() != 0;
        match wanted {
            Some(m) => has(m).then_some(m),
            None => [Mechanism::Plain, Mechanism::Login]
                .into_iter()
                .find(|&m| has(m)),
        }
    }

    fn bit(self) -> u64 {
        match self {
            Mechanism::Plain => smtp_proto::AUTH_PLAIN,
            Mechanism::Login => smtp_proto::AUTH_LOGIN,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// What to do after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this line (CRLF included).
    Send(String),
    /// 235: logged in.
    Done,
    /// The server refused (or answered out of turn): the reply says why.
    Refused(Reply),
}

/// One AUTH exchange.
pub struct Exchange<'a> {
    mechanism: Mechanism,
    user: &'a str,
    password: &'a str,
    /// LOGIN: how many 334 challenges were answered.
    answered: u8,
}

impl std::fmt::Debug for Exchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl<'a> Exchange<'a> {
    pub fn new(mechanism: Mechanism, user: &'a str, password: &'a str) -> Exchange<'a> {
        Exchange {
            mechanism,
            user,
            password,
            answered: 0,
        }
    }

    /// The AUTH command. PLAIN carries its response at once (RFC 4954 §4 initial response);
    /// `\0user\0password` stays under the 512-octet line limit for any sane credentials.
    pub fn start(&self) -> String {
        match self.mechanism {
            Mechanism::Plain => {
                let raw = format!("\0{}\0{}", self.user, self.password);
                format!("AUTH PLAIN {}\r\n", B64.encode(raw))
            }
            Mechanism::Login => "AUTH LOGIN\r\n".into(),
        }
    }

    /// The next step after `reply`.
    pub fn next(&mut self, reply: &Reply) -> Step {
        match (reply.code, self.mechanism, self.answered) {
            (235, _, _) => Step::Done,
            // LOGIN: the server asks for the user name, then the password (in that order; the
            // challenge text, "Username:"/"Password:", is not relied on).
            (334, Mechanism::Login, 0) => {
                self.answered = 1;
                Step::Send(format!("{}\r\n", B64.encode(self.user)))
            }
            (334, Mechanism::Login, 1) => {
                self.answered = 2;
                Step::Send(format!("{}\r\n", B64.encode(self.password)))
            }
            _ => Step::Refused(reply.clone()),
        }
    }
}

/// Whether the credentials can be sent at all (PLAIN separates fields with NUL; a line break
/// would end the command).
pub fn check_credentials(user: &str, password: &str) -> Result<(), String> {
    if user.is_empty() || password.is_empty() {
        return Err("user and password must not be empty".into());
    }
    if [user, password]
        .iter()
        .any(|s| s.contains(['\0', '\r', '\n']))
    {
        return Err("user and password must not contain NUL or line breaks".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> Reply {
        Reply::from_text(text)
    }

    #[test]
    fn plain_is_one_line_with_initial_response() {
        let mut x = Exchange::new(Mechanism::Plain, "tim", "tanstaaftanstaaf");
        // RFC 4616 §4 example: "\0tim\0tanstaaftanstaaf".
        assert_eq!(x.start(), "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n");
        assert_eq!(
            x.next(&r("235 2.7.0 Authentication successful")),
            Step::Done
        );
        let mut x = Exchange::new(Mechanism::Plain, "tim", "wrong");
        let refused = r("535 5.7.8 Error: authentication failed");
        assert_eq!(x.next(&refused), Step::Refused(refused.clone()));
        // A 334 to PLAIN with initial response is out of turn.
        assert!(matches!(x.next(&r("334 ")), Step::Refused(_)));
    }

    #[test]
    fn login_answers_two_challenges_then_refuses_a_third() {
        let mut x = Exchange::new(Mechanism::Login, "user", "pass");
        assert_eq!(x.start(), "AUTH LOGIN\r\n");
        assert_eq!(
            x.next(&r("334 VXNlcm5hbWU6")),
            Step::Send("dXNlcg==\r\n".into())
        );
        assert_eq!(
            x.next(&r("334 UGFzc3dvcmQ6")),
            Step::Send("cGFzcw==\r\n".into())
        );
        assert!(matches!(x.next(&r("334 again?")), Step::Refused(_)));
        let mut x = Exchange::new(Mechanism::Login, "user", "pass");
        assert_eq!(x.next(&r("535 5.7.8 no")), Step::Refused(r("535 5.7.8 no")));
    }

    #[test]
    fn mechanism_choice() {
        let both = smtp_proto::AUTH_PLAIN | smtp_proto::AUTH_LOGIN;
        assert_eq!(Mechanism::choose(both, None), Some(Mechanism::Plain));
        assert_eq!(
            Mechanism::choose(both, Some(Mechanism::Login)),
            Some(Mechanism::Login)
        );
        assert_eq!(
            Mechanism::choose(smtp_proto::AUTH_LOGIN, None),
            Some(Mechanism::Login)
        );
        assert_eq!(
            Mechanism::choose(smtp_proto::AUTH_LOGIN, Some(Mechanism::Plain)),
            None
        );
        assert_eq!(Mechanism::choose(0, None), None);
    }

    #[test]
    fn credentials_that_cannot_go_on_the_wire() {
        assert!(check_credentials("u", "p").is_ok());
        assert!(check_credentials("", "p").is_err());
        assert!(check_credentials("u", "a\0b").is_err());
        assert!(check_credentials("u\r\n", "p").is_err());
    }
}
