//! `keygen`: host keys and post office secrets. Errors exit with status 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keygen",
    version,
    about = "Provision hedwig: derive a mailman host's key from the post office secret, or make a new secret",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  keygen secret > /etc/hedwig/secret\n  \
                  keygen --secret-file /etc/hedwig/secret web1.example.com"
)]
struct Cli {
    /// The host's fully qualified name; prints its key and a mailman config.
    fqdn: Option<String>,
    /// File holding the post office secret (else the HEDWIG_SECRET environment variable).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// The post office URL to put in the printed mailman config.
    #[arg(
        long,
        env = "HEDWIG_POSTOFFICE_URL",
        default_value = "http://postoffice.example.com:8025/"
    )]
    postoffice: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random 256-bit secret for the post office.
    Secret,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keygen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<String, String> {
    match (cli.command, cli.fqdn) {
        (Some(Command::Secret), _) => Ok(format!("{}\n", keygen::new_secret())),
        (None, Some(fqdn)) => {
            let secret = match &cli.secret_file {
                Some(path) => hedwig_core::config::read_secret(None, Some(path))?,
                None => std::env::var("HEDWIG_SECRET").ok(),
            }
            .filter(|s| !s.trim().is_empty())
            .ok_or("no secret: pass --secret-file FILE or set HEDWIG_SECRET")?;
            keygen::host_config(&secret, &fqdn, &cli.postoffice)
        }
        (None, None) => {
            Err("give a host name (keygen web1.example.com) or `keygen secret`; see --help".into())
        }
    }
}
