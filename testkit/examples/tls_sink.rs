//! A counting SMTP sink with STARTTLS, and the MTA-STS policy host of its domain, as one
//! process for `bench/run`'s `mta-sts` measurement (issue 16: delivery throughput with a policy
//! cached, against the same sink without one).
//!
//! `tls_sink SMTP_ADDR COUNT MAX_SECS CERT_DER_OUT POLICY_ADDR POLICY_FILE NAME...` accepts
//! mail on `SMTP_ADDR` (the testkit receiver: STARTTLS with a self-signed certificate for the
//! `NAME`s, messages counted, not kept), writes that certificate (DER) to `CERT_DER_OUT` for
//! the worker's `tls.ca_file`, and answers `GET /.well-known/mta-sts.txt` over HTTPS on
//! `POLICY_ADDR` with `POLICY_FILE`'s text, presenting the same certificate (so one `NAME`
//! should be `mta-sts.<domain>`). It prints `listening` once both listen, and `mesg=COUNT`
//! and exits 0 when COUNT messages arrived (smtp-sink's `-M` and its count line); exit 1 after
//! `MAX_SECS` without them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(smtp), Some(count), Some(max_secs), Some(cert_out), Some(policy_addr), Some(file)) = (
        args.first(),
        args.get(1),
        args.get(2),
        args.get(3),
        args.get(4),
        args.get(5),
    ) else {
        eprintln!(
            "usage: tls_sink SMTP_ADDR COUNT MAX_SECS CERT_DER_OUT POLICY_ADDR POLICY_FILE NAME..."
        );
        return ExitCode::from(2);
    };
    let names: Vec<&str> = args[6..].iter().map(String::as_str).collect();
    let parsed = (
        smtp.parse::<SocketAddr>(),
        count.parse::<usize>(),
        max_secs.parse::<u64>(),
        policy_addr.parse::<SocketAddr>(),
        std::fs::read_to_string(file),
    );
    let (Ok(smtp), Ok(count), Ok(max_secs), Ok(policy_addr), Ok(policy)) = parsed else {
        eprintln!("tls_sink: bad arguments {args:?}");
        return ExitCode::from(2);
    };
    let behaviour = Behaviour::new()
        .starttls()
        .cert_names(&names)
        .remember(0)
        .idle_timeout(Duration::from_secs(max_secs));
    let receiver = match SmtpReceiver::start(smtp, behaviour).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tls_sink: {smtp}: {e}");
            return ExitCode::from(1);
        }
    };
    let cert = receiver.cert().clone();
    if let Err(e) = std::fs::write(cert_out, cert.certificate_der().as_ref()) {
        eprintln!("tls_sink: {cert_out}: {e}");
        return ExitCode::from(1);
    }
    let listener = match tokio::net::TcpListener::bind(policy_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tls_sink: {policy_addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{policy}",
        policy.len()
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let response = response.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await
                else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    println!("listening");
    match receiver
        .wait_for(count, Duration::from_secs(max_secs))
        .await
    {
        Some(_) => {
            println!("mesg={count}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("tls_sink: fewer than {count} messages within {max_secs} s");
            ExitCode::from(1)
        }
    }
}
