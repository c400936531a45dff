//! The mailman → postoffice protocol, compatible with the original hedwig.
//!
//! `POST /` with `application/x-www-form-urlencoded` fields `fqdn`, `key` (alias `secret`),
//! `email` (a JSON document, see [`Email`]) and an optional `id` (a message id made by the sender
//! so that a repeated post is answered with the first queue id instead of being queued twice).
//! A JSON body with the same fields is accepted too; there `email` may be an object or a string
//! holding the JSON.
//!
//! Extension over the original: message bytes that are not valid UTF-8 (an 8-bit body in
//! Latin-1, say) cannot travel in a JSON string, so a sender puts them base64-encoded in
//! `data_b64` instead of `data`. Old clients never need it.
//!
//! Extension: an optional field `app` (a JSON object, [`App`]; in a form, a string holding it)
//! names the app inside the sending host that sent the message: a container on a Docker
//! bridge or an SMTP AUTH login at mailman. Post offices from before it ignore the field.
//!
//! Extension: an optional field `fixups` (a JSON array of strings; in a form, a string
//! holding it) names the header fix-ups the sending mailman made (issue 19: `date`,
//! `message-id`, `from`, `to`, `bcc`), so that the ledger can show them. Post offices from
//! before it ignore the field; a post without it has none.

//! Extension (issue 18): the raw form, `POST /raw` ([`RAW_ENDPOINT`]; content type
//! [`RAW_CONTENT_TYPE`]): one line of JSON ([`RawHeader`]: every field above but `email`,
//! with the envelope's `mailfrom` and `rcpttos` beside them), `\n`, then the message bytes
//! exactly, unescaped: the same framing as a job in beanstalkd. No escaping on either side,
//! no base64 for 8-bit messages, and the post office takes the message out of the body without
//! decoding it. A path of its own, never `/`: a post office from before it would read a raw
//! body at `/` as a form, whose fields the message's own text could then supply; at `/raw`
//! it answers 404 without reading the body, and mailman posts the JSON form instead (see
//! `mailman::post`).

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::OneOrMany;

/// Why a submission cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("field {0:?} is missing")]
    MissingField(&'static str),
    #[error("field \"email\" is not valid JSON: {0}")]
    EmailJson(#[source] serde_json::Error),
    #[error("the form body is malformed: {0}")]
    Form(String),
    #[error("the JSON body is malformed: {0}")]
    Json(#[source] serde_json::Error),
    #[error("email has neither \"data\" nor \"data_b64\"")]
    NoData,
    #[error("email has both \"data\" and \"data_b64\"")]
    BothData,
    #[error("field \"app\" is not valid: {0}")]
    AppJson(#[source] serde_json::Error),
    #[error("field \"fixups\" is not a JSON list of strings: {0}")]
    FixupsJson(#[source] serde_json::Error),
    #[error("\"data_b64\" is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("the raw body has no header line (no \\n)")]
    RawNoHeader,
    #[error("the raw body's header line is not valid JSON: {0}")]
    RawHeader(#[source] serde_json::Error),
}

/// The content type of the raw form (see the module docs).
pub const RAW_CONTENT_TYPE: &str = "application/vnd.hedwig.raw";

/// The endpoint of the raw form, relative to the post office's URL (and, with its `/`, the
/// path its signatures name).
pub const RAW_ENDPOINT: &str = "/raw";

/// The header line of the raw form: the fields of the other forms, but the message, which
/// follows the line as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    #[serde(alias = "secret", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Envelope sender; empty is the null sender `<>`.
    #[serde(default)]
    pub mailfrom: String,
    /// Envelope recipients.
    #[serde(deserialize_with = "one_or_many", default)]
    pub rcpttos: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixups: Vec<String>,
}

impl RawHeader {
    /// The raw form's body: this header's JSON line, `\n`, then `message` as it is. `message`
    /// is given in parts (a spool file's slices, say) so that nothing is copied twice.
    pub fn encode(&self, message: &[&[u8]]) -> Vec<u8> {
        let mut body = serde_json::to_vec(self)
            .unwrap_or_else(|_| unreachable!("RawHeader has only strings and lists"));
        body.reserve(message.iter().map(|p| p.len()).sum::<usize>() + 1);
        body.push(b'\n');
        for part in message {
            body.extend_from_slice(part);
        }
        body
    }
}

/// The `email` field: the SMTP envelope and the RFC 5322 message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// Envelope sender; empty is the null sender `<>`.
    #[serde(alias = "from", default)]
    pub mailfrom: String,
    /// Envelope recipients. Old clients may send a single string.
    #[serde(alias = "to", deserialize_with = "one_or_many", default)]
    pub rcpttos: Vec<String>,
    /// The message, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The message, base64 (standard alphabet), when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
    /// The message as it came in the raw form. Never serialized: [`Submission::to_form`]
    /// moves it to `data` or `data_b64` first.
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
}

impl Email {
    /// An email carrying `message` in whichever field keeps its bytes exact.
    pub fn new(mailfrom: String, rcpttos: Vec<String>, message: Vec<u8>) -> Self {
        let (data, data_b64) = match String::from_utf8(message) {
            Ok(text) => (Some(text), None),
            Err(err) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(err.into_bytes())),
            ),
        };
        Email {
            mailfrom,
            rcpttos,
            data,
            data_b64,
            raw: None,
        }
    }

    /// This email with a raw message moved to `data` or `data_b64`, so that it serializes
    /// whole.
    pub fn portable(&self) -> Email {
        match &self.raw {
            Some(raw) => Email::new(self.mailfrom.clone(), self.rcpttos.clone(), raw.clone()),
            None => self.clone(),
        }
    }

    /// The message bytes, exactly as the sender had them.
    pub fn into_message(self) -> Result<Vec<u8>, WireError> {
        if let Some(raw) = self.raw {
            return Ok(raw);
        }
        match (self.data, self.data_b64) {
            (Some(text), None) => Ok(text.into_bytes()),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(WireError::Base64),
            (None, None) => Err(WireError::NoData),
            (Some(_), Some(_)) => Err(WireError::BothData),
        }
    }
}

/// One recipient or a list; an empty string (old clients with no recipient) is none.
fn one_or_many<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::<String>::deserialize(de)? {
        OneOrMany::One(s) if s.is_empty() => Vec::new(),
        other => other.into_vec(),
    })
}

/// Who inside the sending host sent a message, as mailman knows it (issue 17). Without it the
/// sender is known only by the host and the client address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// The name logs, the ledger and events show: the container's name (compose names it
    /// `project-service-1`) or the login.
    pub name: String,
    /// How mailman knows it.
    pub source: AppSource,
    /// The container's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The container's compose project (label `com.docker.compose.project`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    /// The container's compose service (label `com.docker.compose.service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    /// The lane the app asks for (its `hedwig.lane` label, or its login's lane); the sending
    /// host's policy at the post office has the last word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
}

/// How mailman learned an [`App`]'s identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppSource {
    /// The client's address on a Docker network, mapped to a container by the Engine API.
    Container,
    /// An SMTP AUTH login.
    Login,
}

/// One submission as the post office reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub fqdn: String,
    pub key: String,
    pub email: Email,
    /// The sender's message id, if it made one (mailman does).
    pub id: Option<String>,
    /// The app inside the host that sent it, when mailman knows.
    pub app: Option<App>,
    /// The header fix-ups the sender made (issue 19), in order; empty when none (or the
    /// sender is older than the field). Checked by the post office, not here.
    pub fixups: Vec<String>,
}

#[derive(Deserialize)]
struct FormFields {
    fqdn: Option<String>,
    #[serde(alias = "secret")]
    key: Option<String>,
    email: Option<String>,
    id: Option<String>,
    app: Option<String>,
    fixups: Option<String>,
}

#[derive(Deserialize)]
struct JsonFields {
    fqdn: Option<String>,
    #[serde(alias = "secret")]
    key: Option<String>,
    email: Option<serde_json::Value>,
    id: Option<String>,
    app: Option<App>,
    #[serde(default)]
    fixups: Vec<String>,
}

impl Submission {
    /// Reads an `application/x-www-form-urlencoded` body.
    pub fn from_form(body: &[u8]) -> Result<Self, WireError> {
        Self::from_form_with(body, true)
    }

    /// Reads an `application/json` body.
    pub fn from_json(body: &[u8]) -> Result<Self, WireError> {
        Self::from_json_with(body, true)
    }

    /// As [`Submission::from_form`]; `key_required: false` for a signed request (see
    /// [`crate::signing`]), whose body carries no key (`key` is then empty).
    pub fn from_form_with(body: &[u8], key_required: bool) -> Result<Self, WireError> {
        let fields: FormFields =
            serde_urlencoded::from_bytes(body).map_err(|e| WireError::Form(e.to_string()))?;
        let email = fields.email.ok_or(WireError::MissingField("email"))?;
        let email: Email = serde_json::from_str(&email).map_err(WireError::EmailJson)?;
        let app = match fields.app.filter(|a| !a.is_empty()) {
            Some(app) => Some(serde_json::from_str(&app).map_err(WireError::AppJson)?),
            None => None,
        };
        let fixups = match fields.fixups.filter(|f| !f.is_empty()) {
            Some(fixups) => serde_json::from_str(&fixups).map_err(WireError::FixupsJson)?,
            None => Vec::new(),
        };
        Self::assemble(fields.fqdn, fields.key, email, fields.id, key_required)
            .map(|s| s.with_app(app).with_fixups(fixups))
    }

    /// As [`Submission::from_json`], with `key_required` as for [`Submission::from_form_with`].
    pub fn from_json_with(body: &[u8], key_required: bool) -> Result<Self, WireError> {
        let fields: JsonFields = serde_json::from_slice(body).map_err(WireError::Json)?;
        let email = match fields.email.ok_or(WireError::MissingField("email"))? {
            serde_json::Value::String(s) => serde_json::from_str(&s),
            other => serde_json::from_value(other),
        }
        .map_err(WireError::EmailJson)?;
        Self::assemble(fields.fqdn, fields.key, email, fields.id, key_required)
            .map(|s| s.with_app(fields.app).with_fixups(fields.fixups))
    }

    /// Reads a raw-form body ([`RAW_CONTENT_TYPE`]), with `key_required` as for
    /// [`Submission::from_form_with`]. The message is copied out of `body` once, never
    /// decoded.
    pub fn from_raw_with(body: &[u8], key_required: bool) -> Result<Self, WireError> {
        let split = memchr::memchr(b'\n', body).ok_or(WireError::RawNoHeader)?;
        let header: RawHeader =
            serde_json::from_slice(&body[..split]).map_err(WireError::RawHeader)?;
        let email = Email {
            mailfrom: header.mailfrom,
            rcpttos: header.rcpttos,
            data: None,
            data_b64: None,
            raw: Some(body[split + 1..].to_vec()),
        };
        Self::assemble(header.fqdn, header.key, email, header.id, key_required)
            .map(|s| s.with_app(header.app).with_fixups(header.fixups))
    }

    fn assemble(
        fqdn: Option<String>,
        key: Option<String>,
        email: Email,
        id: Option<String>,
        key_required: bool,
    ) -> Result<Self, WireError> {
        let key = match key {
            Some(key) => key,
            None if key_required => return Err(WireError::MissingField("key")),
            None => String::new(),
        };
        Ok(Submission {
            fqdn: fqdn.ok_or(WireError::MissingField("fqdn"))?,
            key,
            email,
            id: id.filter(|id| !id.is_empty()),
            app: None,
            fixups: Vec::new(),
        })
    }

    fn with_app(mut self, app: Option<App>) -> Self {
        self.app = app;
        self
    }

    fn with_fixups(mut self, fixups: Vec<String>) -> Self {
        self.fixups = fixups;
        self
    }

    /// The form fields a sender posts, in order.
    pub fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("fqdn", self.fqdn.clone()),
            ("key", self.key.clone()),
            (
                "email",
                serde_json::to_string(&self.email.portable())
                    .unwrap_or_else(|_| unreachable!("Email has only strings")),
            ),
        ];
        if let Some(id) = &self.id {
            form.push(("id", id.clone()));
        }
        if let Some(app) = &self.app {
            form.push((
                "app",
                serde_json::to_string(app).unwrap_or_else(|_| unreachable!("App has only strings")),
            ));
        }
        if !self.fixups.is_empty() {
            form.push((
                "fixups",
                serde_json::to_string(&self.fixups)
                    .unwrap_or_else(|_| unreachable!("a list of strings")),
            ));
        }
        form
    }
}

/// The body of a 200 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The queue id (the first one, for a repeated message id).
    pub id: String,
    /// True when this post repeated a message id already queued: nothing new was queued.
    #[serde(default)]
    pub duplicate: bool,
}

/// The body of every non-200 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        serde_urlencoded::to_string(pairs).unwrap().into_bytes()
    }

    #[test]
    fn raw_form_round_trip_keeps_bytes_exact() {
        let message =
            b"Subject: \xff\xfe 8-bit\r\n\r\nline\nbare lf \"q\" \\\r\n\x00end\r\n".to_vec();
        let header = RawHeader {
            fqdn: Some("web1.example.com".into()),
            key: None,
            mailfrom: "a@example.com".into(),
            rcpttos: vec!["b@example.org".into(), "c@example.org".into()],
            id: Some("m1".into()),
            app: Some(App {
                name: "web".into(),
                source: AppSource::Container,
                image: None,
                compose_project: None,
                compose_service: None,
                lane: None,
            }),
            fixups: vec!["date".into()],
        };
        let body = header.encode(&[&message[..5], &message[5..]]);
        // The key is not required of a signed post, and required of an unsigned one.
        assert!(matches!(
            Submission::from_raw_with(&body, true),
            Err(WireError::MissingField("key"))
        ));
        let s = Submission::from_raw_with(&body, false).unwrap();
        assert_eq!(s.fqdn, "web1.example.com");
        assert_eq!(s.id.as_deref(), Some("m1"));
        assert_eq!(s.app.as_ref().map(|a| a.name.as_str()), Some("web"));
        assert_eq!(s.fixups, ["date"]);
        assert_eq!(s.email.rcpttos, ["b@example.org", "c@example.org"]);
        assert_eq!(s.email.clone().into_message().unwrap(), message);
        // Re-encoded as a form (the raw message moved to data_b64), it is the same message.
        let form = serde_urlencoded::to_string(s.to_form()).unwrap();
        let again = Submission::from_form_with(form.as_bytes(), false).unwrap();
        assert_eq!(again.email.into_message().unwrap(), message);
        // An old client's names and a single recipient, as in the other forms.
        let body = b"{\"fqdn\":\"h\",\"secret\":\"k\",\"mailfrom\":\"\",\"rcpttos\":\"x@y\"}\n";
        let s = Submission::from_raw_with(body, true).unwrap();
        assert_eq!((s.key.as_str(), s.email.rcpttos.len()), ("k", 1));
        assert_eq!(s.email.into_message().unwrap(), b"");
    }

    #[test]
    fn raw_form_refusals() {
        assert!(matches!(
            Submission::from_raw_with(b"{\"fqdn\":\"h\"}", false),
            Err(WireError::RawNoHeader)
        ));
        assert!(matches!(
            Submission::from_raw_with(b"{not json\nSubject: x\r\n", false),
            Err(WireError::RawHeader(_))
        ));
        assert!(matches!(
            Submission::from_raw_with(b"{\"mailfrom\":\"a@b\"}\nx", false),
            Err(WireError::MissingField("fqdn"))
        ));
        assert!(matches!(
            Submission::from_raw_with(b"\xff\xfe\nx", false),
            Err(WireError::RawHeader(_))
        ));
    }

    #[test]
    fn old_hedwig_form_with_aliases() {
        let body = form(&[
            ("fqdn", "web1.example.com"),
            ("secret", "abc"),
            (
                "email",
                r#"{"from": "a@example.com", "to": ["b@example.org"], "data": "Subject: x\r\n\r\nhi\r\n"}"#,
            ),
        ]);
        let s = Submission::from_form(&body).unwrap();
        assert_eq!(s.fqdn, "web1.example.com");
        assert_eq!(s.key, "abc");
        assert_eq!(s.email.mailfrom, "a@example.com");
        assert_eq!(s.email.rcpttos, vec!["b@example.org"]);
        assert_eq!(s.id, None);
        assert_eq!(
            s.email.into_message().unwrap(),
            b"Subject: x\r\n\r\nhi\r\n".to_vec()
        );
    }

    #[test]
    fn single_string_recipient_and_json_body() {
        let body = br#"{"fqdn":"h.example","key":"k","id":"m1","email":{"mailfrom":"","rcpttos":"x@y.z","data":"d"}}"#;
        let s = Submission::from_json(body).unwrap();
        assert_eq!(s.email.rcpttos, vec!["x@y.z"]);
        assert_eq!(s.email.mailfrom, "");
        assert_eq!(s.id.as_deref(), Some("m1"));
        // email as a JSON string inside JSON, as a form-minded client might send
        let body = br#"{"fqdn":"h","key":"k","email":"{\"mailfrom\":\"a@b.c\",\"rcpttos\":[],\"data\":\"d\"}"}"#;
        assert!(Submission::from_json(body)
            .unwrap()
            .email
            .rcpttos
            .is_empty());
    }

    #[test]
    fn eight_bit_roundtrip_through_the_form() {
        let message = b"Subject: caf\xe9\r\n\r\nLatin-1 \xe9 and UTF-8 \xc3\xa9 \x00\r\n".to_vec();
        let sub = Submission {
            fqdn: "h.example".into(),
            key: "k".into(),
            email: Email::new("a@b.c".into(), vec!["d@e.f".into()], message.clone()),
            id: Some("mid".into()),
            app: None,
            fixups: Vec::new(),
        };
        assert!(sub.email.data.is_none());
        let body = form(
            &sub.to_form()
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        );
        let back = Submission::from_form(&body).unwrap();
        assert_eq!(back.id.as_deref(), Some("mid"));
        assert_eq!(back.email.into_message().unwrap(), message);
        let utf8 = Email::new(String::new(), vec![], "h\u{e9}".as_bytes().to_vec());
        assert_eq!(utf8.data.as_deref(), Some("h\u{e9}"));
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        assert!(matches!(
            Submission::from_form(&form(&[("fqdn", "h"), ("key", "k")])),
            Err(WireError::MissingField("email"))
        ));
        assert!(matches!(
            Submission::from_form(&form(&[("fqdn", "h"), ("key", "k"), ("email", "{nope")])),
            Err(WireError::EmailJson(_))
        ));
        assert!(matches!(
            Submission::from_form(&form(&[("key", "k"), ("email", r#"{"data":"x"}"#)])),
            Err(WireError::MissingField("fqdn"))
        ));
        assert!(matches!(
            Submission::from_json(b"{"),
            Err(WireError::Json(_))
        ));
        assert!(matches!(
            Submission::from_json(b"[1,2]"),
            Err(WireError::Json(_))
        ));
        let e: Email = serde_json::from_str(r#"{"mailfrom":"a@b"}"#).unwrap();
        assert!(matches!(e.into_message(), Err(WireError::NoData)));
        let e: Email = serde_json::from_str(r#"{"data":"a","data_b64":"YQ=="}"#).unwrap();
        assert!(matches!(e.into_message(), Err(WireError::BothData)));
        let e: Email = serde_json::from_str(r#"{"data_b64":"!!"}"#).unwrap();
        assert!(matches!(e.into_message(), Err(WireError::Base64(_))));
        // invalid UTF-8 in a form field is replaced, never a panic
        assert!(Submission::from_form(b"fqdn=%FF%FE&key=k&email=%7B%7D").is_ok());
    }

    #[test]
    fn app_identity_travels_in_form_and_json_and_is_optional() {
        let app = App {
            name: "shop-billing-1".into(),
            source: AppSource::Container,
            image: Some("shop/billing:4".into()),
            compose_project: Some("shop".into()),
            compose_service: Some("billing".into()),
            lane: Some("transactional".into()),
        };
        let sub = Submission {
            fqdn: "h.example".into(),
            key: "k".into(),
            email: Email::new("a@b.c".into(), vec!["d@e.f".into()], b"x".to_vec()),
            id: Some("mid".into()),
            app: Some(app.clone()),
            fixups: Vec::new(),
        };
        let body = serde_urlencoded::to_string(sub.to_form()).unwrap();
        assert_eq!(Submission::from_form(body.as_bytes()).unwrap(), sub);
        let body = br#"{"fqdn":"h","key":"k","email":{"mailfrom":"","rcpttos":[],"data":"d"},"app":{"name":"bob","source":"login"}}"#;
        let got = Submission::from_json(body).unwrap().app.unwrap();
        assert_eq!((got.name.as_str(), got.source), ("bob", AppSource::Login));
        assert_eq!(got.lane, None);
        // a bad `app` is refused with its own error, not taken as absent
        let bad = form(&[
            ("fqdn", "h"),
            ("key", "k"),
            ("email", r#"{"mailfrom":"","rcpttos":[],"data":"d"}"#),
            ("app", r#"{"name":"x","source":"telepathy"}"#),
        ]);
        assert!(matches!(
            Submission::from_form(&bad),
            Err(WireError::AppJson(_))
        ));
    }

    /// Issue 19: `fixups` travels in a form and in JSON; a post without it (an older mailman)
    /// has none; a malformed one is refused with its own error.
    #[test]
    fn fixups_travel_in_form_and_json_and_are_optional() {
        let sub = Submission {
            fqdn: "h.example".into(),
            key: "k".into(),
            email: Email::new("a@b.c".into(), vec!["d@e.f".into()], b"x".to_vec()),
            id: Some("mid".into()),
            app: None,
            fixups: vec!["date".into(), "message-id".into(), "bcc".into()],
        };
        let body = serde_urlencoded::to_string(sub.to_form()).unwrap();
        assert_eq!(Submission::from_form(body.as_bytes()).unwrap(), sub);
        let body = br#"{"fqdn":"h","key":"k","email":{"mailfrom":"","rcpttos":[],"data":"d"},"fixups":["from","to"]}"#;
        assert_eq!(Submission::from_json(body).unwrap().fixups, ["from", "to"]);
        // Without the field (an older mailman): none, in both forms; none is not sent.
        let old = form(&[
            ("fqdn", "h"),
            ("key", "k"),
            ("email", r#"{"mailfrom":"","rcpttos":[],"data":"d"}"#),
        ]);
        assert!(Submission::from_form(&old).unwrap().fixups.is_empty());
        let old = br#"{"fqdn":"h","key":"k","email":{"mailfrom":"","rcpttos":[],"data":"d"}}"#;
        assert!(Submission::from_json(old).unwrap().fixups.is_empty());
        let none = Submission {
            fixups: Vec::new(),
            ..sub.clone()
        };
        assert!(none.to_form().iter().all(|(k, _)| *k != "fixups"));
        // Not a list of strings: refused, not taken as absent.
        let bad = form(&[
            ("fqdn", "h"),
            ("key", "k"),
            ("email", r#"{"mailfrom":"","rcpttos":[],"data":"d"}"#),
            ("fixups", r#"{"date":true}"#),
        ]);
        assert!(matches!(
            Submission::from_form(&bad),
            Err(WireError::FixupsJson(_))
        ));
        let bad = br#"{"fqdn":"h","key":"k","email":{"mailfrom":"","rcpttos":[],"data":"d"},"fixups":[1]}"#;
        assert!(matches!(
            Submission::from_json(bad),
            Err(WireError::Json(_))
        ));
    }

    /// A post office from before `fixups` read posts with these fields (the structs above as
    /// they were, serde ignoring unknown fields): a post carrying `fixups` still reads there,
    /// in both forms, with everything else intact.
    #[test]
    fn post_offices_before_fixups_ignore_the_field() {
        #[derive(Deserialize)]
        struct OldForm {
            fqdn: Option<String>,
            #[serde(alias = "secret")]
            key: Option<String>,
            email: Option<String>,
            id: Option<String>,
            app: Option<String>,
        }
        #[derive(Deserialize)]
        struct OldJson {
            fqdn: Option<String>,
            #[serde(alias = "secret")]
            key: Option<String>,
            email: Option<serde_json::Value>,
            id: Option<String>,
            app: Option<App>,
        }
        let sub = Submission {
            fqdn: "h.example".into(),
            key: "k".into(),
            email: Email::new("a@b.c".into(), vec!["d@e.f".into()], b"x".to_vec()),
            id: Some("mid".into()),
            app: None,
            fixups: vec!["date".into(), "to".into()],
        };
        let body = serde_urlencoded::to_string(sub.to_form()).unwrap();
        assert!(body.contains("fixups="), "{body}");
        let old: OldForm = serde_urlencoded::from_bytes(body.as_bytes()).unwrap();
        assert_eq!(
            (old.fqdn.as_deref(), old.key.as_deref(), old.id.as_deref()),
            (Some("h.example"), Some("k"), Some("mid"))
        );
        assert!(old.app.is_none());
        let email: Email = serde_json::from_str(&old.email.unwrap()).unwrap();
        assert_eq!(email, sub.email);
        // mailman posts JSON; the same holds there.
        let body = serde_json::json!({
            "fqdn": "h.example", "id": "mid", "email": sub.email, "fixups": sub.fixups,
        });
        let old: OldJson = serde_json::from_value(body).unwrap();
        assert_eq!(old.fqdn.as_deref(), Some("h.example"));
        assert!(old.key.is_none() && old.app.is_none());
        assert_eq!(old.id.as_deref(), Some("mid"));
        assert!(old.email.is_some());
    }
}
