//! `mailman`: loads the config, sets up logging, and runs (or checks) the edge SMTP listener.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "hedwig mailman: local SMTP listener that forwards to the postoffice"
)]
struct Cli {
    /// YAML config file; every key can also be set as HEDWIG_<KEY>.
    #[arg(long, short, env = "HEDWIG_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SMTP listener (the default).
    Run,
    /// Check the configuration and the key against the postoffice; exit 1 on any problem.
    CheckConfig,
    /// GET this mailman's /health; exit 0 when healthy (for Docker HEALTHCHECK).
    HealthCheck,
    /// One of this host's messages as the post office's ledger has it, by mailman's message
    /// id or Message-ID; exit 1 when not found, another host's, or no answer.
    Status {
        /// mailman's message id (in the 250 reply) or the Message-ID.
        id: String,
        /// Print the post office's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What is still in the local spool (not yet handed to the post office) and why.
    Queue {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Reads a password (the first line of stdin) and prints the `auth.users_file` line of
    /// login NAME with its argon2 hash.
    Passwd {
        /// The login (printable ASCII, no `:` or space).
        name: String,
        /// The lane this login's mail asks for (appended as `:lane`).
        #[arg(long)]
        lane: Option<String>,
    },
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<mailman::Settings> {
    let config: mailman::Config = hedwig_core::config::load(path).context("config")?;
    config
        .check()
        .map_err(|errors| anyhow::anyhow!("config:\n  {}", errors.join("\n  ")))
}

#[tokio::main]
async fn main() -> ExitCode {
    hedwig_service::logging::init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cli.config).await,
        Command::CheckConfig => check_config(cli.config).await,
        Command::HealthCheck => health_check(cli.config).await,
        Command::Status { id, json } => status(cli.config, &id, json).await,
        Command::Queue { json } => queue(cli.config, json),
        Command::Passwd { name, lane } => passwd(&name, lane.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mailman: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = load(path.as_deref())?;
    let shutdown = CancellationToken::new();
    let running = mailman::start(settings, shutdown.clone())
        .await
        .context("start")?;
    hedwig_service::signal::cancel_on_signal(shutdown);
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

async fn check_config(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = match load(path.as_deref()) {
        Ok(s) => s,
        Err(err) => {
            println!("{err:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    print!("config: ok\n{}", settings.summary());
    let docker_ok = match &settings.docker {
        None => true,
        Some(d) => check_docker(d).await,
    };
    let poster = mailman::post::Poster::new(
        settings.postoffice.clone(),
        settings.fqdn.clone(),
        settings.key.clone(),
        settings.sign_posts,
        &settings.postoffice_roots,
        Duration::from_secs(5),
    )?;
    match poster.check_key(Duration::from_secs(10)).await {
        Ok(true) => {
            println!("key: the postoffice accepts the key for {}", settings.fqdn);
            Ok(if docker_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Ok(false) => {
            println!(
                "key: the postoffice REFUSES the key for {} (401): check fqdn and key",
                settings.fqdn
            );
            Ok(ExitCode::FAILURE)
        }
        Err(why) => {
            println!("key: cannot check against the postoffice: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Lists the containers once through `docker.socket` and says what was found.
async fn check_docker(settings: &mailman::docker::DockerSettings) -> bool {
    let metrics = mailman::docker::DockerMetrics::default();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let mut settings = settings.clone();
    // The first refresh is what is checked: give it the time a refresh may take.
    settings.lookup_timeout = Duration::from_secs(10);
    match mailman::docker::Resolver::start(settings.clone(), metrics.clone(), stop).await {
        Ok(resolver) if metrics.refreshes.get() > 0 => {
            println!(
                "docker: {} answers; {} container addresses known",
                settings.socket.display(),
                resolver.len()
            );
            true
        }
        Ok(_) => {
            println!(
                "docker: {} does not answer (see the log line above); clients would be known by address",
                settings.socket.display()
            );
            false
        }
        Err(err) => {
            println!("docker: {err}; clients would be known by address");
            false
        }
    }
}

async fn health_check(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // Only the HTTP address matters here: a health check must not fail because, say, the
    // key file is readable only by the running process.
    let config: mailman::Config = hedwig_core::config::load(path.as_deref()).context("config")?;
    if config.http_listen.trim().is_empty() {
        anyhow::bail!("http_listen is disabled: nothing to check");
    }
    let addr: std::net::SocketAddr = config
        .http_listen
        .trim()
        .parse()
        .with_context(|| format!("http_listen {:?} is not ip:port", config.http_listen))?;
    Ok(
        hedwig_service::health_check::run(&hedwig_service::health_check::local_url(addr, false))
            .await,
    )
}

async fn status(path: Option<PathBuf>, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    use mailman::status::Answer;
    let settings = load(path.as_deref())?;
    let poster = mailman::post::Poster::new(
        settings.postoffice.clone(),
        settings.fqdn.clone(),
        settings.key.clone(),
        settings.sign_posts,
        &settings.postoffice_roots,
        Duration::from_secs(5),
    )?;
    match poster.status(id, Duration::from_secs(10)).await {
        Answer::Timeline(timeline) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&timeline)?);
            } else {
                print!("{}", mailman::status::render(&timeline));
            }
            Ok(ExitCode::SUCCESS)
        }
        Answer::Refused { status, error } => {
            eprintln!("mailman: the post office answered {status}: {error}");
            Ok(ExitCode::FAILURE)
        }
        Answer::Failed(why) => {
            eprintln!("mailman: cannot ask the post office: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn queue(path: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    // Only the spool directory matters: listing must work while the post office (or the key
    // file) is out of reach.
    let config: mailman::Config = hedwig_core::config::load(path.as_deref()).context("config")?;
    let dir = &config.spool_dir;
    let (entries, problems) = mailman::queue::list(dir, hedwig_core::unix_now())
        .with_context(|| format!("cannot read the spool {}", dir.display()))?;
    if json {
        let out = serde_json::json!({ "messages": entries, "unreadable": problems });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", mailman::queue::render(&entries));
        for problem in &problems {
            println!("unreadable: {problem}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn passwd(name: &str, lane: Option<&str>) -> anyhow::Result<ExitCode> {
    use std::io::BufRead as _;
    mailman::auth::check_name(name).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(lane) = lane {
        mailman::auth::check_name(lane).map_err(|e| anyhow::anyhow!("lane: {e}"))?;
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("no password on stdin (give it as the first line)");
    }
    let hash = mailman::auth::hash_password(password).map_err(|e| anyhow::anyhow!(e))?;
    match lane {
        Some(lane) => println!("{name}:{hash}:{lane}"),
        None => println!("{name}:{hash}"),
    }
    Ok(ExitCode::SUCCESS)
}
