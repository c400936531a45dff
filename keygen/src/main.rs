//! `keygen`: host keys, post office secrets, DKIM keys and DNS checks.
//!
//! Exit status: 0 success; 1 when `keygen dns` found a record missing or wrong; 2 for usage
//! errors and anything else that stops a command (bad input, unreadable files).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use hedwig_message::dkim::{Algorithm, DkimConfig};
use keygen::dkim::DkimRequest;
use keygen::dns_check::{self, settings, HickoryDns, Target};

#[derive(Parser)]
#[command(
    name = "keygen",
    version,
    about = "Provision hedwig: mailman host keys, the post office secret, DKIM keys, and a check of the DNS records",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  keygen secret > /etc/hedwig/secret\n  \
                  keygen --secret-file /etc/hedwig/secret web1.example.com\n  \
                  keygen --key-only --secret-file /etc/hedwig/secret web1.example.com\n  \
                  keygen dkim example.com --out-dir /etc/hedwig/dkim\n  \
                  keygen dns example.com --dkim-config /etc/hedwig/worker.yaml --sending-ip 192.0.2.25"
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
    /// Print only the host's key (one line), e.g. for `HEDWIG_KEY=$(keygen --key-only …)`.
    #[arg(long, requires = "fqdn")]
    key_only: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random 256-bit secret for the post office.
    Secret,
    /// Make a DKIM key pair: writes the private key (mode 0600) and prints the DNS TXT record
    /// to publish and the worker config lines.
    #[command(
        after_help = "Example:\n  keygen dkim example.com --algorithm ed25519 --out-dir /etc/hedwig/dkim"
    )]
    Dkim(DkimArgs),
    /// Check the DNS records of sending domains (MX, SPF, DKIM, PTR, DMARC) and print what to
    /// publish. Exit status 0: all required records are right; 1: something is missing or
    /// wrong (MX problems are only warnings); 2: usage error.
    #[command(after_help = "Examples:\n  \
        keygen dns --dkim-config /etc/hedwig/worker.yaml --sending-ip 192.0.2.25\n  \
        keygen dns example.com --dkim-key example.com:202611:/etc/hedwig/dkim/example.com.202611.rsa.pem \\\n      \
        --sending-ip 192.0.2.25 --ehlo mail.example.com --json")]
    Dns(DnsArgs),
}

#[derive(Args)]
struct DkimArgs {
    /// The signing domain (the d= of signatures, usually the From: domain).
    domain: String,
    /// The selector (default: the current month, e.g. 202611).
    #[arg(long)]
    selector: Option<String>,
    /// rsa (2048 bits, understood everywhere) or ed25519 (RFC 8463; sign with both).
    #[arg(long, default_value = "rsa")]
    algorithm: Algorithm,
    /// Directory to write <domain>.<selector>.<algorithm>.pem into.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// Replace an existing key file of the same name.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct DnsArgs {
    /// Sending domains to check (default: every domain with a configured DKIM key).
    domains: Vec<String>,
    /// The public address the workers send from.
    #[arg(long)]
    sending_ip: IpAddr,
    /// The name the workers send in EHLO (default: `hostname` of --dkim-config).
    #[arg(long)]
    ehlo: Option<String>,
    /// The worker's config file: its dkim keys, hostname and nameservers are used.
    #[arg(long, value_name = "WORKER_YAML")]
    dkim_config: Option<PathBuf>,
    /// A DKIM key to check, as domain:selector:keyfile (repeatable).
    #[arg(long, value_name = "DOMAIN:SELECTOR:KEYFILE")]
    dkim_key: Vec<String>,
    /// DNS server to ask, ip or ip:port (repeatable; default: the worker config's, else
    /// /etc/resolv.conf).
    #[arg(long, value_name = "IP[:PORT]")]
    nameserver: Vec<String>,
    /// Timeout of each DNS query attempt.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keygen: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each said once: a cause whose text the line already
/// holds (an `Io` error prints its OS error and also returns it as its source) is skipped.
fn describe(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match (cli.command, cli.fqdn) {
        (Some(Command::Secret), _) => println!("{}", keygen::new_secret()),
        (Some(Command::Dkim(args)), _) => dkim(args)?,
        (Some(Command::Dns(args)), _) => return dns(args),
        (None, Some(fqdn)) => {
            let secret = match &cli.secret_file {
                Some(path) => hedwig_core::config::read_secret(None, Some(path))
                    .map_err(anyhow::Error::msg)?,
                None => std::env::var("HEDWIG_SECRET").ok(),
            }
            .filter(|s| !s.trim().is_empty())
            .context("no secret: pass --secret-file FILE or set HEDWIG_SECRET")?;
            if cli.key_only {
                let key = keygen::host_key(&secret, &fqdn).map_err(anyhow::Error::msg)?;
                println!("{key}");
            } else {
                let text = keygen::host_config(&secret, &fqdn, &cli.postoffice)
                    .map_err(anyhow::Error::msg)?;
                print!("{text}");
            }
        }
        (None, None) => {
            bail!("give a host name (keygen web1.example.com) or `keygen secret`; see --help")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dkim(args: DkimArgs) -> anyhow::Result<()> {
    let request = DkimRequest {
        domain: args.domain,
        selector: args.selector,
        algorithm: args.algorithm,
        out_dir: args.out_dir,
        force: args.force,
    };
    let key = keygen::dkim::create_key(&request, hedwig_core::unix_now()).map_err(|e| {
        let denied = matches!(&e, keygen::Error::Io { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied);
        if denied {
            // The usual case: `docker run -v DIR:/out` as the image's user (uid 10025).
            anyhow::anyhow!(
                "{e}; keygen may not write there: choose a folder this user may write (with \
                 Docker and a bind-mounted folder, run as yourself: docker run --user \
                 \"$(id -u):$(id -g)\" …)"
            )
        } else {
            e.into()
        }
    })?;
    print!("{}", key.instructions());
    Ok(())
}

fn dns(args: DnsArgs) -> anyhow::Result<ExitCode> {
    let worker = match &args.dkim_config {
        Some(path) => settings::load_worker_config(path)?,
        None => settings::WorkerSettings::default(),
    };
    let mut dkim = DkimConfig {
        keys: worker.dkim.keys.clone(),
        default_domain: None,
    };
    for arg in &args.dkim_key {
        dkim.keys.push(settings::parse_key_arg(arg)?);
    }
    let keys = settings::load_keys(&dkim).context("DKIM keys")?;

    let ehlo = match args
        .ehlo
        .as_deref()
        .or(Some(worker.hostname.as_str()).filter(|h| !h.is_empty()))
    {
        Some(name) => keygen::normalize_domain(name).context("--ehlo")?,
        None => {
            bail!("give --ehlo NAME (the workers' EHLO name), or --dkim-config with a hostname")
        }
    };
    let mut domains = Vec::new();
    for domain in &args.domains {
        domains.push(keygen::normalize_domain(domain)?);
    }
    if domains.is_empty() {
        for key in &keys {
            if !domains.contains(&key.domain) {
                domains.push(key.domain.clone());
            }
        }
    }
    if domains.is_empty() {
        bail!("give the sending domains to check, or DKIM keys (--dkim-config, --dkim-key) whose domains are checked");
    }
    let nameservers = if args.nameserver.is_empty() {
        &worker.nameservers
    } else {
        &args.nameserver
    };
    let nameservers = nameservers
        .iter()
        .map(|s| settings::parse_nameserver(s))
        .collect::<Result<Vec<_>, _>>()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let resolver = HickoryDns::new(&nameservers, args.timeout)?;
        let target = Target {
            sending_ip: args.sending_ip,
            ehlo,
            keys,
        };
        // Every query has its timeout; this bounds the whole run as well.
        let limit = args.timeout * 60;
        tokio::time::timeout(limit, dns_check::check_all(&resolver, &domains, &target))
            .await
            .with_context(|| {
                format!(
                    "the DNS checks did not finish within {}",
                    humantime::format_duration(limit)
                )
            })
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
