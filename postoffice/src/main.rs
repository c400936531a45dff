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
    /// A message's whole history from the ledger, by queue id, Message-ID or recipient.
    Trace {
        #[command(flatten)]
        args: postoffice::ledger::cli::TraceArgs,
    },
    /// Messages without a final outcome long after they were queued (from the ledger).
    Stuck {
        #[command(flatten)]
        args: postoffice::ledger::cli::StuckArgs,
    },
    /// The suppression list: list, add, remove (in the ledger store).
    Suppress {
        #[command(subcommand)]
        command: postoffice::suppression::cli::SuppressCommand,
    },
    /// Webhook endpoints with their counts, recent deliveries, retry now (see
    /// docs/webhooks.md).
    Webhooks {
        #[command(flatten)]
        args: postoffice::webhooks::cli::WebhooksArgs,
    },
    /// Read a password from stdin (one line) and print its argon2id hash for
    /// `console.users[].password_hash` (docs/console.md).
    ConsoleHash,
}

#[derive(clap::Args)]
struct AdminOpts {
    /// beanstalkd server(s) to act on, host:port (repeatable or comma-separated); default:
    /// `beanstalkd` from the config.
    #[arg(long = "beanstalkd", value_name = "HOST:PORT")]
    beanstalkd: Vec<String>,
}

fn main() -> ExitCode {
    hedwig_service::logging::init();
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
    if let Some(Command::ConsoleHash) = cli.command {
        // Needs no configuration: an operator makes hashes before writing one.
        return console_hash();
    }
    let config: postoffice::Config = hedwig_core::config::load(cli.config.as_deref())
        .context("cannot load the configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let listener = postoffice::server::bind(config.listen)
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let shutdown = CancellationToken::new();
            hedwig_service::signal::cancel_on_signal(shutdown.clone());
            postoffice::serve(config, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            for warning in config.renamed_keys() {
                println!("warning: {warning}");
            }
            let mut problems = config.check().err().unwrap_or_default();
            let servers = &config.beanstalkd;
            for (_, result) in
                postoffice::queue::check_all(servers, config.max_message_size.0).await
            {
                if let Err(e) = result {
                    problems.push(format!("beanstalkd: {e}"));
                }
            }
            // The ledger's store, when this post office uses it.
            if let Ok(ledger) = postoffice::ledger::LedgerSettings::check(&config) {
                if ledger.writer || ledger.api_listen.is_some() || ledger.suppression.intake {
                    match check_ledger(&ledger.url).await {
                        Ok(Some(note)) => println!("{note}"),
                        Ok(None) => {}
                        Err(e) => problems.push(format!(
                            "ledger.url ({}): {e}",
                            postoffice::ledger::redact(&ledger.url)
                        )),
                    }
                }
            }
            if problems.is_empty() {
                println!(
                    "configuration OK; beanstalkd at {} is ready",
                    config.beanstalkd.join(",")
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
                hedwig_service::health_check::local_url(config.listen, config.tls.is_some())
            });
            Ok(hedwig_service::health_check::run(&url).await)
        }
        Command::Stats { admin, args } => {
            let mut report = admin::stats::run(&target(&config, &admin)?, &args).await;
            if args.hours > 0 {
                report.ledger = Some(ledger_counts(&config, args.hours).await);
            }
            let failed = report.servers.iter().any(|s| s.error.is_some());
            print!("{}", report.render(args.json));
            Ok(outcome(!failed))
        }
        Command::Failed { admin, args } => {
            let report =
                admin::failed::run(&target(&config, &admin)?, &args.filter, args.limit).await;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Requeue { admin, args } => {
            let report = admin::requeue::run(&target(&config, &admin)?, &args).await;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Show { admin, args } => {
            let report = admin::show::run(&target(&config, &admin)?, &args).await;
            if report.found.is_empty() {
                // Gone from beanstalkd (delivered, bounced, purged): the ledger may have it.
                if let Some(timeline) = ledger_timeline(&config, &args.id).await {
                    if args.json {
                        let body = serde_json::json!({
                            "found": [],
                            "problems": report.problems,
                            "ledger": timeline,
                        });
                        println!("{}", serde_json::to_string_pretty(&body)?);
                    } else {
                        println!(
                            "{} is not in beanstalkd; the ledger has its history:",
                            args.id.trim()
                        );
                        print!("{}", postoffice::ledger::cli::render_timelines(&[timeline]));
                    }
                    return Ok(problems(&report.problems));
                }
            }
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
            let report = admin::purge::run(&target(&config, &admin)?, &args, ask).await?;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Hold { admin, args } => {
            let report = admin::hold::hold(&target(&config, &admin)?, &args).await?;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Release { admin, args } => {
            let report = admin::hold::release(&target(&config, &admin)?, &args).await?;
            print!("{}", report.render(args.json));
            Ok(problems(&report.problems))
        }
        Command::Trace { args } => {
            use postoffice::ledger::cli;
            let store = ledger_store(&config).await?;
            let timelines = cli::trace(&store, &args.what)
                .await
                .context("cannot read the ledger")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&timelines)?);
            } else if timelines.is_empty() {
                eprintln!("postoffice: the ledger has no message for {:?}", args.what);
            } else {
                print!("{}", cli::render_timelines(&timelines));
            }
            Ok(outcome(!timelines.is_empty()))
        }
        Command::Suppress { command } => suppress(&config, &command).await,
        Command::Stuck { args } => {
            use postoffice::ledger::{cli, now_ms};
            let settings = postoffice::ledger::LedgerSettings::check(&config)
                .map_err(|p| anyhow::anyhow!("configuration:\n{}", p.join("\n")))?;
            let store = ledger_store(&config).await?;
            let now = now_ms();
            let count = store
                .stuck_count(now, settings.stuck_after)
                .await
                .context("cannot read the ledger")?;
            let messages = store
                .stuck(now, settings.stuck_after, args.limit)
                .await
                .context("cannot read the ledger")?;
            if args.json {
                let body = serde_json::json!({
                    "count": count,
                    "stuck_after_ms": settings.stuck_after.as_millis() as u64,
                    "messages": messages,
                });
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!(
                    "{}",
                    cli::render_stuck(count, &messages, settings.stuck_after)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks { args } => webhooks(&config, args).await,
        Command::ConsoleHash => console_hash(),
    }
}

/// `postoffice console-hash`: one line of stdin (the password) to an argon2id PHC string.
fn console_hash() -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprint!("password (echoed; pipe it in to keep it off the screen): ");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        anyhow::bail!("the password must be at least 8 characters");
    }
    let hash = postoffice::console::auth::hash_password(password)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// `postoffice suppress ...`.
async fn suppress(
    config: &postoffice::Config,
    command: &postoffice::suppression::cli::SuppressCommand,
) -> anyhow::Result<ExitCode> {
    use postoffice::suppression::cli::{self, CliError};
    let store = ledger_store(config).await?;
    match cli::run(&store, command).await {
        Ok((out, ok)) => {
            print!("{out}");
            Ok(outcome(ok))
        }
        Err(CliError::Usage(why)) => {
            eprintln!("postoffice suppress: {why}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot use the suppression list")),
    }
}

/// The ledger's per-host counts of the last `hours` hours, or why they cannot be read.
async fn ledger_counts(config: &postoffice::Config, hours: u64) -> admin::stats::LedgerCounts {
    let to = postoffice::ledger::now_ms();
    let from = to.saturating_sub(hours.saturating_mul(3_600_000));
    // The hour that `from` falls in counts whole.
    let from = from - from % 3_600_000;
    let read = async {
        let store = ledger_store(config).await?;
        store
            .hourly_totals(from, to.saturating_add(1))
            .await
            .context("cannot read the ledger")
    };
    match read.await {
        Ok(rows) => admin::stats::LedgerCounts::from_rows(hours, rows),
        Err(e) => admin::stats::LedgerCounts {
            hours,
            error: Some(format!("{e:#}")),
            ..Default::default()
        },
    }
}

/// `postoffice webhooks [list | deliveries | retry]`.
async fn webhooks(
    config: &postoffice::Config,
    args: postoffice::webhooks::cli::WebhooksArgs,
) -> anyhow::Result<ExitCode> {
    use postoffice::webhooks::cli::{self, WebhooksCommand};
    let store = ledger_store(config).await?;
    match args
        .command
        .unwrap_or(WebhooksCommand::List { json: false })
    {
        WebhooksCommand::List { json } => {
            let counts = store
                .webhook_counts()
                .await
                .context("cannot read the ledger")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "endpoints": counts }))?
                );
            } else {
                print!("{}", cli::render_list(&config.webhooks, &counts));
            }
        }
        WebhooksCommand::Deliveries {
            endpoint,
            status,
            limit,
            json,
        } => {
            if let Some(s) = &status {
                cli::check_status(s).map_err(anyhow::Error::msg)?;
            }
            let rows = store
                .webhook_deliveries(endpoint.as_deref(), status.as_deref(), limit)
                .await
                .context("cannot read the ledger")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "deliveries": rows }))?
                );
            } else {
                print!("{}", cli::render_deliveries(&rows));
            }
        }
        WebhooksCommand::Retry { endpoint, status } => {
            cli::check_status(&status).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                status != "done",
                "only failed or pending deliveries are retried"
            );
            let n = store
                .retry_webhooks(endpoint.as_deref(), &status, postoffice::ledger::now_ms())
                .await
                .context("cannot write to the ledger")?;
            println!("{n} deliveries due now");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The ledger's timeline of `queue_id`, when the config names a store that exists and has it.
async fn ledger_timeline(
    config: &postoffice::Config,
    queue_id: &str,
) -> Option<hedwig_ledger::Timeline> {
    let store = ledger_store(config).await.ok()?;
    store.timeline(queue_id.trim()).await.ok().flatten()
}

/// `check-config`'s look at the ledger store: reachable, and at a schema this build can
/// migrate. Changes nothing: a SQLite file that does not exist yet is not made (the post
/// office makes it at start), an older schema is not migrated (it is at start). `Some`: a
/// line to print about what start-up will do.
async fn check_ledger(url: &str) -> Result<Option<String>, hedwig_ledger::StoreError> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        if !path.exists() {
            return Ok(Some(format!(
                "ledger: {} does not exist yet; the post office creates it at start",
                path.display()
            )));
        }
    }
    let options = hedwig_ledger::Options {
        create: false,
        migrate: false,
        ..Default::default()
    };
    let store = hedwig_ledger::Store::open_with(url, options).await?;
    let found = store.schema_version().await.unwrap_or(0);
    store.close().await;
    Ok((found < hedwig_ledger::schema::VERSION).then(|| {
        format!(
            "ledger: schema version {found}; the post office migrates it to {} at start",
            hedwig_ledger::schema::VERSION
        )
    }))
}

/// The ledger store the config names. A SQLite file that does not exist is an error, not
/// made: the post office that writes the ledger makes it.
async fn ledger_store(config: &postoffice::Config) -> anyhow::Result<hedwig_ledger::Store> {
    let settings = postoffice::ledger::LedgerSettings::check(config)
        .map_err(|p| anyhow::anyhow!("configuration:\n{}", p.join("\n")))?;
    if let Some(path) = settings.url.strip_prefix("sqlite://") {
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        if !path.exists() {
            anyhow::bail!(
                "no ledger at {}: the post office that runs the ledger writer (ledger.writer) \
                 creates it in its data_dir; run this where it runs, with its config, or set \
                 ledger.url",
                path.display()
            );
        }
    }
    let options = hedwig_ledger::Options {
        create: false,
        ..Default::default()
    };
    hedwig_ledger::Store::open_with(&settings.url, options)
        .await
        .with_context(|| {
            format!(
                "cannot open the ledger store {}",
                postoffice::ledger::redact(&settings.url)
            )
        })
}

fn target(
    config: &postoffice::Config,
    opts: &AdminOpts,
) -> Result<admin::Target, admin::AdminError> {
    for warning in config.renamed_keys() {
        eprintln!("postoffice: warning: {warning}");
    }
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
