//! `worker`: the hedwig delivery worker binary (see the library for everything it does).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// hedwig delivery worker: beanstalkd → MX → recipients' mail servers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// YAML config file; every key can also be set as HEDWIG_<KEY>.
    #[arg(long, short, env = "HEDWIG_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Deliver mail until SIGTERM/SIGINT (the default).
    Run,
    /// Check the config, DKIM keys, IP pool addresses and beanstalkd; print what is wrong and
    /// exit 1 (warnings, such as a pool address whose reverse DNS does not name its EHLO
    /// name, are printed without failing).
    CheckConfig,
    /// GET this worker's /health (for Docker's HEALTHCHECK); exit 1 unless it answers 200.
    HealthCheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    hedwig_service::logging::init();
    let config = worker::config::load(cli.config.as_deref()).context("loading the config")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = CancellationToken::new();
            hedwig_service::signal::cancel_on_signal(shutdown.clone());
            worker::run(config, shutdown).await.context("worker")?;
        }
        Command::CheckConfig => {
            let problems = worker::check(&config).await;
            for w in worker::check_warnings(&config).await {
                eprintln!("warning: {w}");
            }
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("{p}");
                }
                bail!("{} problem(s) found", problems.len());
            }
            println!("config ok");
        }
        Command::HealthCheck => {
            let addr = config
                .http_listen
                .parse()
                .with_context(|| format!("http_listen {:?}", config.http_listen))?;
            let url = hedwig_service::health_check::local_url(addr, false);
            return Ok(hedwig_service::health_check::run(&url).await);
        }
    }
    Ok(ExitCode::SUCCESS)
}
