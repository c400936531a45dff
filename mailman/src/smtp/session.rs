//! The server side of one SMTP session, as a state machine with no I/O.
//!
//! The caller pushes received bytes in with [`Session::receive`] and asks [`Session::next`] what
//! to do: write a reply, read more, hand over a finished message, start TLS, or close. Replies
//! to pipelined commands come one by one; the caller writes them out when it has to read again
//! (RFC 2920 §3.1: a server may hold replies until its input is drained). After a
//! [`Action::Message`] the caller decides the fate of the message and passes the reply to
//! [`Session::message_done`].
//!
//! SMTP AUTH (RFC 4954, PLAIN and LOGIN) runs here as far as its exchanges go: the session
//! hands the credentials over with [`Step::Authenticate`] (from [`Session::step`]), and the
//! caller, who checks them off the session, passes its verdict to [`Session::auth_done`]. What
//! is offered to a client (and whether AUTH is required) the caller sets with
//! [`Session::set_auth`]; the app identity its messages carry, with [`Session::set_app`].
//!
//! Limits live here: the command line length, the number of recipients, the message size
//! (early from `SIZE=` and while receiving), and a maximum number of bad commands. Buffered input
//! is bounded by the line limit plus whatever the caller pushed since its last read.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use hedwig_core::address::{parse_reverse_path, Mailbox};
use hedwig_core::wire::App;
use smtp_proto::{Request, AUTH_LOGIN, AUTH_PLAIN, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8};

use super::app_policy::AppPolicy;
use super::auth::{self, AuthOutcome, AuthPolicy, Credentials, SaslError};
use super::data::{BareNewline, DataProgress, DataReceiver};
use super::reply::{multiline, reply, Reply};

/// RFC 5321 §4.5.3.1.4 allows 512 octets per command line; SMTPUTF8 addresses and parameters
/// make real commands longer, so mailman takes up to the text-line limit of 1,000 (§4.5.3.1.6).
pub const MAX_COMMAND_LINE: usize = 1000;

/// Settings a session needs, shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// This host's name, in the greeting, EHLO reply and `Received:` header.
    pub hostname: String,
    /// Largest message accepted, in octets (after dot-unstuffing).
    pub max_message_size: usize,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Whether STARTTLS is offered.
    pub starttls: bool,
    /// Bad commands after which the session is closed.
    pub max_errors: usize,
    /// What a line ending in a bare LF means (commands and message text).
    pub bare_newline: BareNewline,
    /// Decides each RCPT address instead of the address syntax check (it must be at least as
    /// strict); `None`: every well-formed address is taken (mailman). The post office's bounce
    /// listener takes only its own VERP tokens.
    pub recipient_check: Option<RecipientCheck>,
}

/// A check of RCPT addresses: `Err((code, text))` refuses one with that reply; a refusal
/// counts as a bad command (towards `max_errors`), so guessing tokens closes the session.
#[derive(Clone)]
pub struct RecipientCheck(pub Arc<CheckFn>);

/// What a [`RecipientCheck`] calls: the address, then `Ok` or the refusal's code and text.
pub type CheckFn = dyn Fn(&str) -> Result<(), (u16, String)> + Send + Sync;

impl std::fmt::Debug for RecipientCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecipientCheck(..)")
    }
}

/// What the caller should do next.
// A Message (with its app identity) is a few hundred bytes on the stack, moved once per
// message; boxing it would change the type every driver of the session matches on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this reply to the client.
    Reply(Reply),
    /// All input is used up: flush replies and read more.
    NeedMore,
    /// A complete message: store it, then call [`Session::message_done`] with the reply.
    Message(Message),
    /// The `220` for STARTTLS was the last reply: flush it and start the TLS handshake, then
    /// call [`Session::tls_started`].
    StartTls,
    /// Flush replies and close the connection.
    Close,
}

/// What [`Session::step`] asks for: an [`Action`], or (SMTP AUTH) a check of credentials.
/// Kept apart from [`Action`] so that callers that offer no AUTH (the post office's bounce
/// listener) drive the session with [`Session::next`] as before.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Action(Action),
    /// A client sent these credentials: check them, then call [`Session::auth_done`] with
    /// the verdict.
    Authenticate(Credentials),
}

/// A received message and its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The reverse-path; empty for the null sender.
    pub mail_from: String,
    /// The forward-paths, in the order given.
    pub rcpt_to: Vec<String>,
    /// The message as received, unstuffed, every line ending in CRLF; no `Received:` yet.
    pub body: Vec<u8>,
    /// The HELO/EHLO name.
    pub helo: String,
    /// EHLO (rather than HELO) was used.
    pub esmtp: bool,
    /// The session was under TLS.
    pub tls: bool,
    /// `SMTPUTF8` was given on MAIL FROM.
    pub smtputf8: bool,
    /// The client's address.
    pub client: IpAddr,
    /// The app inside the sending host that sent it, when known (a container, or the
    /// session's SMTP AUTH login); it goes with the message to the post office.
    pub app: Option<App>,
}

impl Message {
    /// The `Received:` trace header (RFC 5321 §4.4) to put in front of the body, written by
    /// [`hedwig_message::trace`] (which makes the client's HELO name safe for a header).
    ///
    /// `date` is Unix seconds; it is passed in so the header is repeatable in tests.
    pub fn received_header(&self, hostname: &str, id: &str, date: u64) -> String {
        // RFC 3848 / RFC 6531 §4.3 "with" protocol types; "A" after an SMTP AUTH login (not
        // the login itself: that goes to the post office as the app, not to the recipients).
        let login =
            matches!(&self.app, Some(app) if app.source == hedwig_core::wire::AppSource::Login);
        let protocol = match (self.smtputf8, self.esmtp, self.tls, login) {
            (true, _, false, false) => "UTF8SMTP",
            (true, _, true, false) => "UTF8SMTPS",
            (true, _, false, true) => "UTF8SMTPA",
            (true, _, true, true) => "UTF8SMTPSA",
            (false, true, false, false) => "ESMTP",
            (false, true, true, false) => "ESMTPS",
            (false, true, false, true) => "ESMTPA",
            (false, true, true, true) => "ESMTPSA",
            (false, false, false, _) => "SMTP",
            (false, false, true, _) => "SMTPS",
        };
        hedwig_message::trace::Received {
            from_helo: &self.helo,
            client_ip: Some(self.client),
            by_host: hostname,
            by_software: Some("mailman"),
            protocol,
            id,
            // Name the recipient only when there is one: more would disclose Bcc recipients.
            for_rcpt: match self.rcpt_to.as_slice() {
                [one] => Some(one.as_str()),
                _ => None,
            },
            date,
        }
        .field()
    }
}

#[derive(Debug)]
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    smtputf8: bool,
}

#[derive(Debug)]
enum Phase {
    /// Reading command lines.
    Command,
    /// A command line was too long: dropping input up to the next LF.
    DiscardLine,
    /// Reading the message after `354`.
    Data(DataReceiver),
    /// A message was handed over; waiting for [`Session::message_done`].
    AwaitingOutcome,
    /// Waiting for the TLS handshake.
    AwaitingTls,
    /// In an AUTH exchange: the next line is the client's SASL response.
    Sasl(SaslStep),
    /// Credentials were handed over; waiting for [`Session::auth_done`].
    AwaitingAuth(String),
    /// Closed: nothing more will be read.
    Closed,
}

/// Where an AUTH exchange is.
#[derive(Debug)]
enum SaslStep {
    /// PLAIN without an initial response: its message comes next.
    Plain,
    /// LOGIN: the user name comes next.
    LoginUser,
    /// LOGIN: the password of this user comes next.
    LoginPassword(String),
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    client: IpAddr,
    tls: bool,
    phase: Phase,
    input: Vec<u8>,
    helo: Option<(String, bool)>,
    transaction: Option<Transaction>,
    errors: usize,
    /// Command lines taken from the input so far.
    lines: u64,
    /// The session was closed for a bare LF (`bare_newline: reject`).
    bare_lf_refused: bool,
    /// Who inside the sending host this client is (a container), when known at accept;
    /// given to every message unless an AUTH login names it.
    app: Option<App>,
    /// What the app's labels allow it.
    app_policy: Option<AppPolicy>,
    /// The last refusal for the app's policy, for the caller to log and count.
    policy_refusal: Option<String>,
    /// What AUTH offers this client.
    auth: AuthPolicy,
    /// The identity of a successful AUTH; it wins over `app`.
    login: Option<App>,
    /// Credentials waiting to be handed to the caller by [`Session::step`].
    pending: Option<Credentials>,
}

impl Session {
    /// A session for a client at `client`.
    pub fn new(config: SessionConfig, client: IpAddr) -> Self {
        Session {
            config,
            client,
            tls: false,
            phase: Phase::Command,
            input: Vec::new(),
            helo: None,
            transaction: None,
            errors: 0,
            lines: 0,
            bare_lf_refused: false,
            app: None,
            app_policy: None,
            policy_refusal: None,
            auth: AuthPolicy::default(),
            login: None,
            pending: None,
        }
    }

    /// What SMTP AUTH offers this client (nothing until this is called).
    pub fn set_auth(&mut self, policy: AuthPolicy) {
        self.auth = policy;
    }

    /// The name the client logged in as, after a successful AUTH.
    pub fn login(&self) -> Option<&str> {
        self.login.as_ref().map(|app| app.name.as_str())
    }

    /// The app identity the session's messages carry (the caller sets it at accept from the
    /// container map); `None`: the client is known by its address.
    pub fn set_app(&mut self, app: Option<App>) {
        self.app = app;
    }

    /// The app identity the session's messages carry now: the AUTH login's, else the one
    /// set with [`Session::set_app`].
    pub fn app(&self) -> Option<&App> {
        self.login.as_ref().or(self.app.as_ref())
    }

    /// Whether AUTH is advertised to this client now: offered, and under TLS or from a
    /// network trusted with plain text passwords.
    fn auth_usable(&self) -> bool {
        self.auth.offered && (self.tls || self.auth.plaintext)
    }

    /// The policy of the app's labels, enforced at MAIL and at the end of DATA.
    pub fn set_app_policy(&mut self, policy: Option<AppPolicy>) {
        self.app_policy = policy;
    }

    /// The reply of the last command refused for the app's policy, once (the caller logs it
    /// and counts it).
    pub fn take_policy_refusal(&mut self) -> Option<String> {
        self.policy_refusal.take()
    }

    /// A refusal for the app's policy: not a bad command (it does not count towards
    /// `max_errors`): the client did nothing wrong in SMTP terms.
    fn policy_refused(&mut self, (code, text): (u16, String)) -> Action {
        let r = reply(code, &text);
        self.policy_refusal = Some(format!("{code} {text}"));
        Action::Reply(r)
    }

    /// The `220` greeting.
    pub fn greeting(&self) -> Reply {
        reply(220, &format!("{} ESMTP mailman", self.config.hostname))
    }

    /// Whether the session is receiving a message (the caller applies the DATA timeout).
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_))
    }

    /// Whether a transaction (MAIL FROM given) is open.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some() || self.in_data()
    }

    /// Command lines read so far: the caller starts a command line's deadline when this
    /// changes (or no partial line is buffered), so dribbling a line byte by byte cannot
    /// extend it.
    pub fn lines_read(&self) -> u64 {
        self.lines
    }

    /// Whether the session was closed for a bare LF (the caller logs it).
    pub fn bare_lf_refused(&self) -> bool {
        self.bare_lf_refused
    }

    /// Part of a command line is buffered (or a too-long one is being discarded).
    pub fn mid_line(&self) -> bool {
        match self.phase {
            Phase::DiscardLine => true,
            Phase::Command | Phase::Sasl(_) => !self.input.is_empty(),
            _ => false,
        }
    }

    /// Adds received bytes. Call it after [`Action::NeedMore`].
    pub fn receive(&mut self, bytes: &[u8]) {
        if !matches!(self.phase, Phase::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Records the outcome of the message handed over with [`Action::Message`]; `reply` is
    /// written next.
    pub fn message_done(&mut self, reply: Reply) -> Action {
        if matches!(self.phase, Phase::AwaitingOutcome) {
            self.phase = Phase::Command;
        }
        Action::Reply(reply)
    }

    /// The TLS handshake succeeded: the session starts over (RFC 3207 §4.2), forgetting the
    /// HELO name and anything the client said before.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.login = None;
        self.transaction = None;
        self.input.clear();
        self.phase = Phase::Command;
    }

    /// What to do next, for a caller that offers no AUTH: credentials (which only come when
    /// [`Session::set_auth`] offered AUTH) are answered `454`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Action {
        match self.step() {
            Step::Action(action) => action,
            Step::Authenticate(_) => self.auth_done(AuthOutcome::Unavailable),
        }
    }

    /// What to do next: an action, or credentials to check.
    pub fn step(&mut self) -> Step {
        let action = self.advance();
        match self.pending.take() {
            Some(credentials) => Step::Authenticate(credentials),
            None => Step::Action(action),
        }
    }

    fn advance(&mut self) -> Action {
        loop {
            match &mut self.phase {
                Phase::Closed => return Action::Close,
                Phase::AwaitingOutcome | Phase::AwaitingAuth(_) => return Action::NeedMore,
                Phase::AwaitingTls => return Action::StartTls,
                Phase::DiscardLine => match memchr::memchr(b'\n', &self.input) {
                    Some(pos) => {
                        self.input.drain(..=pos);
                        self.lines += 1;
                        self.phase = Phase::Command;
                    }
                    None => {
                        self.input.clear();
                        return Action::NeedMore;
                    }
                },
                Phase::Data(receiver) => match receiver.push(&self.input) {
                    DataProgress::More => {
                        self.input.clear();
                        return Action::NeedMore;
                    }
                    DataProgress::Done(used) => {
                        self.input.drain(..used);
                        return self.end_of_data();
                    }
                    DataProgress::BareLf => return self.bare_lf(),
                },
                Phase::Command | Phase::Sasl(_) => {
                    // A TLS ClientHello (handshake record 0x16, version 3.x) on the plain port
                    // never holds a newline we could answer; say why and close.
                    if matches!(self.phase, Phase::Command) && self.input.starts_with(&[0x16, 0x03])
                    {
                        return self.close(reply(
                            421,
                            "4.7.0 TLS handshake on a plain SMTP port; use STARTTLS",
                        ));
                    }
                    let Some(pos) = memchr::memchr(b'\n', &self.input) else {
                        if self.input.len() >= MAX_COMMAND_LINE {
                            self.input.clear();
                            // a too long SASL response ends the exchange too
                            self.phase = Phase::DiscardLine;
                            return self.error(500, "5.5.2 line too long");
                        }
                        return Action::NeedMore;
                    };
                    let line: Vec<u8> = self.input.drain(..=pos).collect();
                    self.lines += 1;
                    if self.config.bare_newline == BareNewline::Reject && !line.ends_with(b"\r\n") {
                        return self.bare_lf();
                    }
                    if line.len() > MAX_COMMAND_LINE {
                        self.phase = Phase::Command;
                        return self.error(500, "5.5.2 line too long");
                    }
                    if matches!(self.phase, Phase::Sasl(_)) {
                        return self.sasl_response(&line);
                    }
                    return self.command(&line);
                }
            }
        }
    }

    /// A line ended in a bare LF while those are refused: like Postfix 3.9 with
    /// `smtpd_forbid_bare_newline = reject`, say why and close (the client's idea of where the
    /// message ends cannot be trusted any more, so the session cannot go on).
    fn bare_lf(&mut self) -> Action {
        self.bare_lf_refused = true;
        self.close(reply(550, "5.5.2 Error: bare <LF> received"))
    }

    fn close(&mut self, last: Reply) -> Action {
        self.phase = Phase::Closed;
        self.input = Vec::new();
        self.transaction = None;
        Action::Reply(last)
    }

    /// A bad command: counts towards the limit, closing the session when it is reached.
    fn error(&mut self, code: u16, text: &str) -> Action {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            return self.close(reply(
                421,
                &format!("4.7.0 {} too many errors, closing", self.config.hostname),
            ));
        }
        Action::Reply(reply(code, text))
    }

    fn command(&mut self, line: &[u8]) -> Action {
        if line.contains(&0) {
            return self.error(500, "5.5.2 NUL byte in command");
        }
        if std::str::from_utf8(line).is_err() {
            return self.error(500, "5.5.2 command is not valid UTF-8");
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(err) => return self.parse_error(err),
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Rset => {
                self.transaction = None;
                Action::Reply(reply(250, "2.0.0 Ok"))
            }
            Request::Noop { .. } => Action::Reply(reply(250, "2.0.0 Ok")),
            // RFC 5321 §3.5.3: 252 when the server will not verify but will accept the mail.
            Request::Vrfy { .. } => Action::Reply(reply(
                252,
                "2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => Action::Reply(reply(
                214,
                "2.0.0 mailman: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
            )),
            Request::Quit => self.close(reply(
                221,
                &format!("2.0.0 {} closing connection", self.config.hostname),
            )),
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, &initial_response),
            Request::Expn { .. } => self.error(502, "5.5.1 EXPN is not implemented"),
            Request::Bdat { .. } => {
                // Without CHUNKING advertised the chunk cannot be skipped reliably; close.
                self.close(reply(
                    421,
                    "4.5.1 BDAT is not supported here (CHUNKING is not offered), closing",
                ))
            }
            other => self.error(502, &format!("5.5.1 {} is not implemented", other.name())),
        }
    }

    fn parse_error(&mut self, err: smtp_proto::Error) -> Action {
        use smtp_proto::Error as E;
        match err {
            E::UnknownCommand => self.error(500, "5.5.1 unrecognized command"),
            E::InvalidSenderAddress => self.error(501, "5.1.7 bad sender address syntax"),
            E::InvalidRecipientAddress => self.error(501, "5.1.3 bad recipient address syntax"),
            E::SyntaxError { syntax } => self.error(501, &format!("5.5.4 syntax: {syntax}")),
            E::InvalidParameter { param } => {
                self.error(501, &format!("5.5.4 invalid parameter {param}"))
            }
            E::UnsupportedParameter { param } => {
                self.error(555, &format!("5.5.4 unsupported parameter {param}"))
            }
            E::NeedsMoreData { .. } | E::ResponseTooLong | E::InvalidResponse { .. } => {
                self.error(500, "5.5.2 syntax error")
            }
        }
    }

    fn hello(&mut self, host: Cow<'_, str>, esmtp: bool) -> Action {
        self.transaction = None;
        self.helo = Some((host.into_owned(), esmtp));
        let name = &self.config.hostname;
        if !esmtp {
            return Action::Reply(reply(250, name));
        }
        let mut lines = vec![
            format!("{name} Hello {}", self.client),
            "PIPELINING".to_string(),
            "8BITMIME".to_string(),
            format!("SIZE {}", self.config.max_message_size),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
        ];
        if self.config.starttls && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        // RFC 4954 §4 and RFC 8314 §5: no AUTH offered where a password would cross a network
        // in plain text.
        if self.auth_usable() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push("HELP".to_string());
        Action::Reply(multiline(250, &lines))
    }

    fn starttls(&mut self) -> Action {
        if self.tls {
            return self.error(503, "5.5.1 TLS already active");
        }
        if !self.config.starttls {
            return self.error(502, "5.5.1 STARTTLS is not offered");
        }
        if self.in_transaction() {
            return self.error(503, "5.5.1 STARTTLS in the middle of a transaction");
        }
        // RFC 3207 §4.2 and CVE-2011-0411: anything pipelined after STARTTLS is dropped, never
        // read as if it came over TLS.
        self.input.clear();
        self.phase = Phase::AwaitingTls;
        Action::Reply(reply(220, "2.0.0 Ready to start TLS"))
    }

    fn auth(&mut self, mechanism: u64, initial_response: &str) -> Action {
        if !self.auth.offered {
            return self.error(502, "5.5.1 AUTH is not offered here");
        }
        // AUTH is an ESMTP extension (RFC 4954 §3): after HELO it was never offered.
        if !matches!(self.helo, Some((_, true))) {
            return self.error(503, "5.5.1 send EHLO first");
        }
        // RFC 4954 §4: one successful AUTH per session, none inside a transaction.
        if self.login.is_some() {
            return self.error(503, "5.5.1 already authenticated");
        }
        if self.in_transaction() {
            return self.error(503, "5.5.1 AUTH is not permitted during a mail transaction");
        }
        if !self.auth_usable() {
            // RFC 5248 / RFC 4954 §6: 538 5.7.11
            return self.error(
                538,
                "5.7.11 Encryption required for requested authentication mechanism",
            );
        }
        let initial = initial_response.trim();
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => self.sasl_prompt(SaslStep::Plain, ""),
            AUTH_PLAIN => match auth::decode(initial).and_then(|m| auth::plain(&m)) {
                Ok(credentials) => self.authenticate(credentials),
                Err(err) => self.sasl_error(err),
            },
            AUTH_LOGIN if initial.is_empty() => {
                self.sasl_prompt(SaslStep::LoginUser, auth::LOGIN_USERNAME)
            }
            // An initial response to LOGIN is the user name (as Outlook and swaks send it).
            AUTH_LOGIN => match auth::decode(initial).and_then(|m| auth::login_part(&m)) {
                Ok(user) => self.sasl_prompt(SaslStep::LoginPassword(user), auth::LOGIN_PASSWORD),
                Err(err) => self.sasl_error(err),
            },
            _ => self.error(504, "5.5.4 Unrecognized authentication type"),
        }
    }

    /// A `334` challenge; the next line is the client's answer.
    fn sasl_prompt(&mut self, step: SaslStep, challenge: &str) -> Action {
        self.phase = Phase::Sasl(step);
        Action::Reply(reply(334, challenge))
    }

    fn sasl_error(&mut self, err: SaslError) -> Action {
        self.phase = Phase::Command;
        match err {
            SaslError::Base64 => self.error(501, "5.5.2 Cannot decode response"),
            SaslError::Malformed => self.error(501, "5.5.2 Malformed authentication response"),
        }
    }

    /// One line answering a `334`.
    fn sasl_response(&mut self, line: &[u8]) -> Action {
        let Phase::Sasl(step) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return self.close(reply(421, "4.3.0 internal state error, closing"));
        };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            return self.sasl_error(SaslError::Base64);
        };
        // RFC 4954 §4: `*` cancels the exchange, answered with 501.
        if line.trim() == "*" {
            return self.error(501, "5.7.0 Authentication cancelled");
        }
        let decoded = match auth::decode(line.trim()) {
            Ok(decoded) => decoded,
            Err(err) => return self.sasl_error(err),
        };
        match step {
            SaslStep::Plain => match auth::plain(&decoded) {
                Ok(credentials) => self.authenticate(credentials),
                Err(err) => self.sasl_error(err),
            },
            SaslStep::LoginUser => match auth::login_part(&decoded) {
                Ok(user) => self.sasl_prompt(SaslStep::LoginPassword(user), auth::LOGIN_PASSWORD),
                Err(err) => self.sasl_error(err),
            },
            SaslStep::LoginPassword(login) => match auth::login_part(&decoded) {
                Ok(password) => self.authenticate(Credentials { login, password }),
                Err(err) => self.sasl_error(err),
            },
        }
    }

    /// Hands `credentials` to the caller through [`Session::step`].
    fn authenticate(&mut self, credentials: Credentials) -> Action {
        self.phase = Phase::AwaitingAuth(credentials.login.clone());
        self.pending = Some(credentials);
        Action::NeedMore
    }

    /// The verdict on the credentials handed over with [`Step::Authenticate`]; the returned
    /// reply is written next.
    pub fn auth_done(&mut self, outcome: AuthOutcome) -> Action {
        let Phase::AwaitingAuth(login) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return self.close(reply(421, "4.3.0 internal state error, closing"));
        };
        match outcome {
            AuthOutcome::Accepted { lane } => {
                self.login = Some(App {
                    name: login,
                    source: hedwig_core::wire::AppSource::Login,
                    image: None,
                    compose_project: None,
                    compose_service: None,
                    lane,
                });
                Action::Reply(reply(235, "2.7.0 Authentication successful"))
            }
            AuthOutcome::Refused => self.error(535, "5.7.8 Authentication credentials invalid"),
            AuthOutcome::Blocked => self.close(reply(
                421,
                &format!(
                    "4.7.0 {} too many failed authentications, closing",
                    self.config.hostname
                ),
            )),
            AuthOutcome::Unavailable => {
                Action::Reply(reply(454, "4.7.0 Temporary authentication failure"))
            }
        }
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<Cow<'_, str>>) -> Action {
        if self.helo.is_none() {
            return self.error(503, "5.5.1 send EHLO or HELO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1 nested MAIL command");
        }
        if self.auth.offered && self.auth.required && self.login.is_none() {
            // RFC 4954 §6
            return self.error(530, "5.7.0 Authentication required");
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.error(555, "5.5.4 BODY=BINARYMIME is not supported");
        }
        if from.size > self.config.max_message_size {
            return Action::Reply(reply(
                552,
                &format!(
                    "5.3.4 message size exceeds the limit of {} octets",
                    self.config.max_message_size
                ),
            ));
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let address = from.address.trim();
        match parse_reverse_path(address) {
            Err(err) => self.error(501, &format!("5.1.7 {err}")),
            Ok(Some(mailbox)) if mailbox.needs_smtputf8() && !smtputf8 => self.error(
                553,
                "5.6.7 a non-ASCII address needs the SMTPUTF8 parameter",
            ),
            Ok(mailbox) => {
                if let Some(policy) = &self.app_policy {
                    if let Err(refusal) = policy.check_mail(mailbox.as_ref()) {
                        return self.policy_refused(refusal);
                    }
                }
                self.transaction = Some(Transaction {
                    mail_from: address.to_string(),
                    rcpt_to: Vec::new(),
                    smtputf8,
                });
                Action::Reply(reply(250, "2.1.0 Ok"))
            }
        }
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<Cow<'_, str>>) -> Action {
        let max = self.config.max_recipients;
        let Some(tx) = &mut self.transaction else {
            return self.error(503, "5.5.1 need MAIL before RCPT");
        };
        let address = to.address.trim();
        if let Some(check) = &self.config.recipient_check {
            // The check decides alone (VERP local parts are longer than the 64 octets the
            // address parser allows); only what it takes is accepted.
            if let Err((code, text)) = (check.0)(address) {
                return self.error(code, &text);
            }
            if tx.rcpt_to.len() >= max {
                return Action::Reply(reply(452, "4.5.3 too many recipients"));
            }
            tx.rcpt_to.push(address.to_string());
            return Action::Reply(reply(250, "2.1.5 Ok"));
        }
        let mailbox = match Mailbox::parse(address) {
            Ok(mailbox) => mailbox,
            Err(err) => return self.error(501, &format!("5.1.3 {err}")),
        };
        if mailbox.needs_smtputf8() && !tx.smtputf8 {
            return self.error(553, "5.6.7 a non-ASCII address needs SMTPUTF8 on MAIL FROM");
        }
        if tx.rcpt_to.len() >= max {
            // RFC 5321 §4.5.3.1.10: 452 for too many recipients, the client sends the rest later.
            return Action::Reply(reply(452, "4.5.3 too many recipients"));
        }
        tx.rcpt_to.push(address.to_string());
        Action::Reply(reply(250, "2.1.5 Ok"))
    }

    fn data(&mut self) -> Action {
        match &self.transaction {
            None => self.error(503, "5.5.1 need MAIL and RCPT before DATA"),
            Some(tx) if tx.rcpt_to.is_empty() => {
                // RFC 2920 §3.1: with pipelining, DATA after failed RCPTs gets 554.
                self.error(554, "5.5.1 no valid recipients")
            }
            Some(_) => {
                self.phase = Phase::Data(DataReceiver::with_bare_newline(
                    self.config.max_message_size,
                    self.config.bare_newline,
                ));
                Action::Reply(reply(354, "End data with <CR><LF>.<CR><LF>"))
            }
        }
    }

    fn end_of_data(&mut self) -> Action {
        let phase = std::mem::replace(&mut self.phase, Phase::Command);
        let tx = self.transaction.take();
        let (Phase::Data(receiver), Some(tx)) = (phase, tx) else {
            return self.close(reply(421, "4.3.0 internal state error, closing"));
        };
        let size = receiver.size();
        let Some(body) = receiver.into_body() else {
            return Action::Reply(reply(
                552,
                &format!(
                    "5.3.4 message of {size} octets exceeds the limit of {}",
                    self.config.max_message_size
                ),
            ));
        };
        if let Some(policy) = &self.app_policy {
            if let Err(refusal) = policy.check_message(&body) {
                return self.policy_refused(refusal);
            }
        }
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        self.phase = Phase::AwaitingOutcome;
        Action::Message(Message {
            mail_from: tx.mail_from,
            rcpt_to: tx.rcpt_to,
            body,
            helo,
            esmtp,
            tls: self.tls,
            smtputf8: tx.smtputf8,
            client: self.client,
            app: self.app().cloned(),
        })
    }
}
