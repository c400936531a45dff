//! `postoffice`: the central HTTP intake. See the crate docs and README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
            let mut problems = config.validate().err().unwrap_or_default();
            if let Err(e) = postoffice::queue::check(&config).await {
                problems.push(format!("beanstalkd: {e}"));
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
                format!("http://{addr}")
            });
            health_check(&url).await
        }
    }
}

/// A minimal HTTP/1.0 GET, so that container images need no curl.
async fn health_check(base: &str) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base
        .strip_prefix("http://")
        .context("health-check supports http:// URLs only")?
        .trim_end_matches('/');
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream
            .write_all(format!("GET /health HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut reply = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
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
