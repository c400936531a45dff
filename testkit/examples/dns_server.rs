//! The testkit's authoritative DNS server as a process, for scripts (`bench/run` points the
//! worker's `nameservers` at it so that every delivery does a real MX and A lookup).
//!
//! `dns_server ADDR ZONE_FILE MAX_SECS` serves `ZONE_FILE` (the format of
//! [`hedwig_testkit::dns::Zone::parse`]) on `ADDR` (UDP and TCP) and exits on SIGTERM/SIGINT or
//! after `MAX_SECS`, whichever comes first. It prints `listening on ADDR` once it answers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, zone_file, max_secs] = args.as_slice() else {
        eprintln!("usage: dns_server ADDR ZONE_FILE MAX_SECS");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ADDR {addr:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let max_secs: u64 = match max_secs.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("MAX_SECS {max_secs:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let zone = match std::fs::read_to_string(zone_file)
        .map_err(|e| e.to_string())
        .and_then(|text| Zone::parse(&text).map_err(|e| e.to_string()))
    {
        Ok(z) => z,
        Err(e) => {
            eprintln!("{zone_file}: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match DnsServer::start_on(addr, zone).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.addr());
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = tokio::time::sleep(Duration::from_secs(max_secs)) => {
            eprintln!("dns_server: {max_secs} s elapsed, stopping");
        }
    }
    drop(server);
    ExitCode::SUCCESS
}
