//! The client side of `<daemon> health-check`: `GET /health` of the running process over
//! HTTP/1.0, with a 5 s bound, so a container's HEALTHCHECK needs no curl in the image.
//!
//! Over https (the post office with `tls`) the certificate is not verified: this asks our own
//! process whether it is alive, and sends nothing secret.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long the whole check may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of the answer that is read.
const MAX_ANSWER: u64 = 64 * 1024;

/// What `/health` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status 200.
    pub healthy: bool,
    /// `HTTP/1.1 503 Service Unavailable`, say.
    pub status_line: String,
    pub body: String,
}

/// Why no answer was read.
#[derive(Debug)]
pub enum Error {
    /// Not `http://host:port` or `https://host:port`.
    Url(String),
    Io {
        authority: String,
        source: std::io::Error,
    },
    Timeout(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(url) => write!(f, "{url:?}: health-check takes http:// or https:// URLs"),
            Error::Io { authority, source } => write!(f, "cannot reach {authority}: {source}"),
            Error::Timeout(authority) => {
                write!(f, "{authority}: no answer within {}s", TIMEOUT.as_secs())
            }
        }
    }
}

impl std::error::Error for Error {}

/// The URL of a daemon listening on `listen`: an unspecified address (`0.0.0.0`, `::`) means
/// this host, asked on loopback.
pub fn local_url(listen: SocketAddr, tls: bool) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

/// `GET <base>/health`.
pub async fn get(base: &str) -> Result<Answer, Error> {
    let (authority, tls) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(Error::Url(base.to_string())),
    };
    let authority = authority.trim_end_matches('/');
    let io = async {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        if tls {
            let name = authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(any_certificate()?))
                .connect(name, stream)
                .await?;
            ask(stream, authority).await
        } else {
            ask(stream, authority).await
        }
    };
    let reply = tokio::time::timeout(TIMEOUT, io)
        .await
        .map_err(|_| Error::Timeout(authority.to_string()))?
        .map_err(|source| Error::Io {
            authority: authority.to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default().trim().to_string();
    Ok(Answer {
        healthy: status_line.split(' ').nth(1) == Some("200"),
        status_line,
        body: body.to_string(),
    })
}

/// `<daemon> health-check`: asks `base`, prints the body (or the status line when there is
/// none) on stdout, a failure on stderr; success only for a 200.
pub async fn run(base: &str) -> ExitCode {
    match get(base).await {
        Ok(answer) => {
            let body = answer.body.trim();
            println!(
                "{}",
                if body.is_empty() {
                    &answer.status_line
                } else {
                    body
                }
            );
            if answer.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    authority: &str,
) -> std::io::Result<Vec<u8>> {
    stream
        .write_all(format!("GET /health HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut reply = Vec::new();
    // A TLS peer may close without close_notify after HTTP/1.0: keep what arrived.
    let _ = (&mut stream).take(MAX_ANSWER).read_to_end(&mut reply).await;
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without an answer",
        ));
    }
    Ok(reply)
}

fn any_certificate() -> std::io::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth())
}

/// Accepts any server certificate (health-check of our own process only).
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_asked_on_loopback() {
        assert_eq!(
            local_url("0.0.0.0:8026".parse().unwrap(), false),
            "http://127.0.0.1:8026"
        );
        assert_eq!(
            local_url("[::]:8025".parse().unwrap(), true),
            "https://[::1]:8025"
        );
        assert_eq!(
            local_url("127.0.170.4:9".parse().unwrap(), false),
            "http://127.0.170.4:9"
        );
    }

    #[tokio::test]
    async fn statuses_and_failures() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.170.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
                "HTTP/1.1 503 Service Unavailable\r\n\r\n{\"status\":\"draining\"}",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let url = format!("http://{addr}");
        let ok = get(&url).await.unwrap();
        assert!(ok.healthy, "{ok:?}");
        assert_eq!(ok.body, "ok\n");
        let draining = get(&url).await.unwrap();
        assert!(!draining.healthy);
        assert_eq!(draining.status_line, "HTTP/1.1 503 Service Unavailable");
        server.await.unwrap();
        assert!(matches!(get(&url).await, Err(Error::Io { .. })));
        assert!(matches!(get("ftp://x").await, Err(Error::Url(_))));
    }
}
