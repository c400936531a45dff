//! `postoffice`: the central HTTP intake. See the crate docs and README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use postoffice::admin;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "postoffice",
    version,
    about = "hedwig's central post office: takes mail from mailman hosts over HTTP, checks each \
             host's key, and queues the message in beanstalkd for the workers"
)]
struct Cli {
    /// YAML config file; every key can also be set as HEDWIG_<KEY> in the environment.
    #[arg(long, short, env = "HEDWIG_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Run,
    /// Check the configuration and beanstalkd, print every problem, exit 1 if any.
    CheckConfig,
    /// GET this post office's /health; exit 0 when healthy (for container health checks).
    HealthCheck {
        /// Base URL; default: derived from `listen`.
        #[arg(long)]
        url: Option<String>,
    },
    /// Queue counts per tube, oldest message age, per sending host counts.
    Stats {
        #[command(flatten)]
        admin: AdminOpts,
        #[command(flatten)]
        args: admin::stats::StatsArgs,
    },
    /// List failed recipients (queue id, host, sender, recipient, code, response, time).
    Failed {
        #[command(flatten)]
        admin: AdminOpts,
        #[command(flatten)]
        args: admin::failed::FailedArgs,
    },
    /// Put failed recipients back for delivery (filters as for `failed`).
    Requeue {
        #[command(flatten)]
        admin: AdminOpts,
        #[command(flatten)]
        args: admin::requeue::RequeueArgs,
    },
    /// Show one message's envelope, headers and history by queue id.
    Show {
        #[command(flatten)]
        admin: AdminOpts,
        #[command(flatten)]
        args: admin::show::ShowArgs,
    },
    /// Delete failed records for good (filters as for `failed`); asks unless --yes.
    Purge {
        #[command(flatten)]
        admin: AdminOpts,
        #[command(flatten)]
        args: admin::purge::PurgeArgs,
    },
    /// Stop delivering a sending host's mail (kept in tube hedwig-held); no host: list.
    Hold {
        #[command(flatten)]
        admin: AdminOpts,
        #[command(flatten)]
        args: admin::hold::HoldArgs,
    },
    /// Resume delivery of a held host: its held mail goes back to the outbound tube.
    Release {
        #[command(flatten)]
        admin: AdminOpts,
        #[command(flatten)]
        args: admin::hold::ReleaseArgs,
    },
}

#[derive(clap::Args)]
struct AdminOpts {
    /// beanstalkd server(s) to act on, host:port (repeatable or comma-separated); default:
    /// `beanstalkd` from the config.
    #[arg(long = "beanstalkd", value_name = "HOST:PORT")]
    beanstalkd: Vec<String>,
}

fn main() -> ExitCode {
    hedwig_core::logging::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postoffice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postoffice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config: postoffice::Config = hedwig_core::config::load(cli.config.as_deref())
        .context("cannot load the configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal(shutdown.clone()));
            postoffice::serve(config, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            let mut problems = config.check().err().unwrap_or_default();
            for (_, result) in postoffice::queue::check_all(&config).await {
                if let Err(e) = result {
                    problems.push(format!("beanstalkd: {e}"));
                }
            }
            if problems.is_empty() {
                println!(
                    "configuration OK; beanstalkd at {} is ready",
                    config.beanstalkd
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("{p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::HealthCheck { url } => {
            let url = url.unwrap_or_else(|| {
                let mut addr = config.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip([127, 0, 0, 1].into());
                }
                let scheme = if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            });
            health_check(&url).await
        }
        Command::Stats { admin, args } => {
            let report = admin::stats::run(&target(&config, &admin), &args).await;
            let failed = report.servers.iter().any(|s| s.error.is_some());
            print!("{}", report.render(args.json));
            Ok(outcome(!failed))
        }
        Command::Failed { admin, args } => {
            let report =
                admin::failed::run(&target(&config, &admin), &args.filter, args.limit).await;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Requeue { admin, args } => {
            let report = admin::requeue::run(&target(&config, &admin), &args).await;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Show { admin, args } => {
            let report = admin::show::run(&target(&config, &admin), &args).await;
            print!("{}", report.render(args.json));
            let code = problems(&report.problems);
            Ok(if report.found.is_empty() {
                ExitCode::FAILURE
            } else {
                code
            })
        }
        Command::Purge { admin, args } => {
            use std::io::IsTerminal;
            let mut prompt = |rows: &[admin::failed::Row]| {
                eprint!("{}", admin::failed::render_rows(rows));
                eprint!("delete these {} failed recipients? [y/N] ", rows.len());
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer).is_ok()
                    && matches!(answer.trim(), "y" | "Y" | "yes")
            };
            let ask: Option<admin::purge::Ask> =
                std::io::stdin().is_terminal().then_some(&mut prompt);
            let report = admin::purge::run(&target(&config, &admin), &args, ask).await?;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Hold { admin, args } => {
            let report = admin::hold::hold(&target(&config, &admin), &args).await?;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Release { admin, args } => {
            let report = admin::hold::release(&target(&config, &admin), &args).await?;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
    }
}

fn target(config: &postoffice::Config, opts: &AdminOpts) -> admin::Target {
    admin::Target::new(config, &opts.beanstalkd)
}

fn outcome(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints problems to stderr; failure when there are any.
fn problems(list: &[String]) -> ExitCode {
    for p in list {
        eprintln!("postoffice: {p}");
    }
    outcome(list.is_empty())
}

/// A minimal HTTP/1.0 GET, so that container images need no curl. Over https the certificate
/// is not verified: this asks our own process whether it is alive, and sends nothing secret.
async fn health_check(base: &str) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    let (authority, tls) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => anyhow::bail!("health-check takes http:// or https:// URLs"),
    };
    let authority = authority.trim_end_matches('/');
    async fn get<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        authority: &str,
    ) -> std::io::Result<Vec<u8>> {
        stream
            .write_all(format!("GET /health HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut reply = Vec::new();
        // A TLS peer may close without close_notify after HTTP/1.0: keep what arrived.
        let _ = stream.take(64 * 1024).read_to_end(&mut reply).await;
        Ok(reply)
    }
    let io = async {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        if tls {
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate))
            .with_no_client_auth();
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, stream)
                .await?;
            get(stream, authority).await
        } else {
            get(stream, authority).await
        }
    };
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), io)
        .await
        .context("no answer within 5s")?
        .with_context(|| format!("cannot reach {authority}"))?;
    let text = String::from_utf8_lossy(&reply);
    let healthy = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    println!("{}", text.lines().last().unwrap_or_default());
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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

async fn signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}
