//! `postoffice show ID`: one message's envelope, headers and history, wherever it is.
//!
//! Looks in the failed tube of every server (reserved, then released), then among the most
//! recent `--scan` job ids of every server with `peek` (outbound, held, delayed retries,
//! jobs a worker holds). A message older than that window in the outbound tube is not found
//! there; `stats` tells how long the queue is.

use serde::Serialize;

use hedwig_queue::job::{Envelope, Job};

use super::{at, connect, format_time, headers, AdminError, Target};
use hedwig_queue::scan::{peek_recent, Batch, DEFAULT_LIMIT};

/// Most header bytes shown.
const MAX_HEADERS: usize = 64 * 1024;

/// Options of `show`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// The queue id (as in the logs and in `failed`).
    pub id: String,
    /// How many of the most recent job ids to peek at per server.
    #[arg(long, default_value_t = 10_000)]
    pub scan: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep up to this many bytes of each found message's body (the console with
    /// `console.show_bodies`; the command shows headers only).
    #[arg(skip)]
    pub body: usize,
}

/// One place the message was found.
#[derive(Debug, Serialize)]
pub struct Found {
    pub server: String,
    pub tube: String,
    pub state: String,
    pub job: u64,
    pub envelope: Envelope,
    pub headers: String,
    /// The body (lossy UTF-8, cut at [`ShowArgs::body`] bytes), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// What `show` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub found: Vec<Found>,
    pub problems: Vec<String>,
}

/// Looks for queue id `args.id` on every server.
pub async fn run(target: &Target, args: &ShowArgs) -> Report {
    let mut report = Report::default();
    for addr in &target.servers {
        if let Err(e) = search_server(target, addr, args, &mut report.found).await {
            report.problems.push(e.to_string());
        }
    }
    report
}

async fn search_server(
    target: &Target,
    addr: &str,
    args: &ShowArgs,
    found: &mut Vec<Found>,
) -> Result<(), AdminError> {
    let mut batch = Batch::reserve(addr, target.tubes.failed(), DEFAULT_LIMIT).await?;
    let ids: Vec<u64> = batch
        .entries
        .iter()
        .filter(|e| e.envelope.as_ref().is_ok_and(|e| e.queue_id == args.id))
        .map(|e| e.id)
        .collect();
    let mut result = Ok(());
    for id in ids {
        match batch.fetch(id).await {
            Ok(job) => found.push(describe(
                addr,
                target.tubes.failed(),
                "failed",
                id,
                job,
                args.body,
            )),
            Err(e) => result = Err(e),
        }
    }
    batch.finish().await;
    result?;
    let recent = peek_recent(addr, &target.tubes, args.scan, &[]).await?;
    let mut client = connect(addr).await?;
    for p in recent
        .into_iter()
        .filter(|p| p.envelope.queue_id == args.id)
    {
        if p.tube == target.tubes.failed() {
            continue; // seen above
        }
        match client.peek(p.id).await {
            Ok(job) => {
                if let Ok(job) = Job::decode(&job.body) {
                    found.push(describe(addr, &p.tube, &p.state, p.id, job, args.body));
                }
            }
            Err(beanstalk::Error::NotFound) => {} // delivered meanwhile
            Err(e) => return Err(at(addr)(e)),
        }
    }
    Ok(())
}

fn describe(server: &str, tube: &str, state: &str, job: u64, j: Job, body: usize) -> Found {
    let body = (body > 0).then(|| {
        // After the first empty line (CRLF or LF, whichever comes first).
        let m = &j.message;
        let crlf = m.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        let lf = m.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
        let start = crlf.into_iter().chain(lf).min().unwrap_or(m.len());
        let rest = &m[start..];
        String::from_utf8_lossy(&rest[..rest.len().min(body)]).replace("\r\n", "\n")
    });
    Found {
        server: server.to_owned(),
        tube: tube.to_owned(),
        state: state.to_owned(),
        job,
        headers: headers(&j.message, MAX_HEADERS),
        body,
        envelope: j.envelope,
    }
}

impl Report {
    /// Text, or JSON with `json`.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        }
        let mut out = String::new();
        for f in &self.found {
            let e = &f.envelope;
            out.push_str(&format!(
                "queue id:    {}\nwhere:       {} tube {} ({}), job {}\nhost:        {}{}\n",
                e.queue_id,
                f.server,
                f.tube,
                f.state,
                f.job,
                e.host,
                e.client_ip
                    .as_deref()
                    .map(|ip| format!(" [{ip}]"))
                    .unwrap_or_default()
            ));
            if let Some(m) = &e.message_id {
                out.push_str(&format!("message id:  {m}\n"));
            }
            if let Some(app) = &e.app {
                // Named by mailman: printed escaped, as a terminal must not take it for input.
                out.push_str(&format!("app:         {}\n", app.name.escape_debug()));
            }
            if let Some(lane) = &e.lane {
                out.push_str(&format!("lane:        {}\n", lane.escape_debug()));
            }
            if !e.fixups.is_empty() {
                // Checked at intake (a-z, 0-9, -); escaped anyway, as for the app.
                out.push_str(&format!(
                    "fix-ups:     {}\n",
                    e.fixups.join(",").escape_debug()
                ));
            }
            out.push_str(&format!(
                "received:    {}\nfrom:        <{}>\nto:          {}\n",
                format_time(e.received_at),
                e.mail_from,
                e.rcpt_to.join(", ")
            ));
            if let Some(fail) = &e.failure {
                out.push_str(&format!(
                    "failed:      {} {} {}{} {}\n",
                    format_time(fail.at),
                    fail.reason,
                    fail.code.map(|c| c.to_string()).unwrap_or_default(),
                    fail.dsn
                        .as_deref()
                        .map(|d| format!(" {d}"))
                        .unwrap_or_default(),
                    fail.response
                ));
            }
            out.push_str("history:\n");
            if e.history.is_empty() {
                out.push_str("  (no attempts yet)\n");
            }
            for a in &e.history {
                out.push_str(&format!(
                    "  {} {} {} {}{} {}{}\n",
                    format_time(a.at),
                    a.status,
                    a.recipients.join(","),
                    a.code.map(|c| c.to_string()).unwrap_or_default(),
                    a.dsn
                        .as_deref()
                        .map(|d| format!(" {d}"))
                        .unwrap_or_default(),
                    a.response,
                    a.relay
                        .as_deref()
                        .map(|r| format!(" via {r}"))
                        .unwrap_or_default()
                ));
            }
            out.push_str("headers:\n");
            for line in f.headers.lines() {
                out.push_str(&format!("  {line}\n"));
            }
            out.push('\n');
        }
        if self.found.is_empty() {
            out.push_str("not found\n");
        }
        out
    }
}
