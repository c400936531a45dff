//! SMTP AUTH (RFC 4954) on the session's side: what the session offers a client, and the
//! decoding of the SASL mechanisms PLAIN (RFC 4616) and LOGIN, with no I/O.
//!
//! Not here: checking a password (slow on purpose, so the caller does it off the session, in
//! [`crate::auth`]), the credentials file and the slowing down of repeated failures.

use base64::Engine as _;

/// What the session offers this client, decided by the caller at accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthPolicy {
    /// AUTH is configured (a credentials file).
    pub offered: bool,
    /// The client's address is on a network the operator trusts with passwords in plain
    /// text (`auth.plaintext_networks`); elsewhere AUTH needs STARTTLS first.
    pub plaintext: bool,
    /// MAIL needs a successful AUTH first (`auth.require`).
    pub required: bool,
}

/// A login and password a client gave, for the caller to check.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("password", &"(not shown)")
            .finish()
    }
}

/// The caller's verdict on [`Credentials`], given to [`super::Session::auth_done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Right: the session is the login's, with the login's lane (if any).
    Accepted { lane: Option<String> },
    /// Wrong login or password: `535 5.7.8`.
    Refused,
    /// Too many failures from this client: `421 4.7.0` and close.
    Blocked,
    /// The credentials cannot be checked now (the file is unreadable): `454 4.7.0`.
    Unavailable,
}

/// Why a client's SASL response was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// Not base64 (RFC 4954 §4: 501).
    Base64,
    /// Base64, but not what the mechanism expects (RFC 4616 §2 message syntax).
    Malformed,
}

/// The server's LOGIN prompts: base64 of `Username:` and `Password:`.
pub const LOGIN_USERNAME: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

/// Decodes one base64 response (or initial response) line, CRLF already removed. An initial
/// response of `=` is an empty one (RFC 4954 §4).
pub fn decode(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_end_matches([' ', '\t']);
    if line == "=" {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(line)
        .map_err(|_| SaslError::Base64)
}

/// A PLAIN message: `[authzid] NUL authcid NUL passwd` (RFC 4616 §2). An authorization
/// identity other than the login itself is refused: a login acts only as itself.
pub fn plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(login), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if login.is_empty() || password.is_empty() || (!authzid.is_empty() && authzid != login) {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        login: text(login)?,
        password: text(password)?,
    })
}

/// One LOGIN answer (the user name or the password): non-empty UTF-8 without NUL.
pub fn login_part(decoded: &[u8]) -> Result<String, SaslError> {
    if decoded.is_empty() || decoded.contains(&0) {
        return Err(SaslError::Malformed);
    }
    text(decoded)
}

fn text(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = plain(&decode(&b64(b"\0billing\0s3cret")).unwrap()).unwrap();
        assert_eq!(ok.login, "billing");
        assert_eq!(ok.password, "s3cret");
        assert!(!format!("{ok:?}").contains("s3cret"));
        assert_eq!(
            plain(b"billing\0billing\0pw").unwrap().login,
            "billing",
            "an authzid equal to the login is the login"
        );
        for bad in [
            &b"other\0billing\0pw"[..],
            b"\0billing\0",
            b"\0\0pw",
            b"\0billing",
            b"\0billing\0pw\0more",
            b"\0bill\xffing\0pw",
            b"",
        ] {
            assert_eq!(plain(bad), Err(SaslError::Malformed), "{bad:?}");
        }
        assert_eq!(decode("=").unwrap(), b"");
        assert_eq!(decode("not base64!"), Err(SaslError::Base64));
        assert_eq!(login_part(b"u\0"), Err(SaslError::Malformed));
        assert_eq!(login_part(b"").unwrap_err(), SaslError::Malformed);
    }
}
