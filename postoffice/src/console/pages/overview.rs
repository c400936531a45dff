//! `GET /console/`: does mail flow? Messages per minute over the last hour and per hour over
//! the last day by outcome (SVG), deferral and bounce rates per destination domain (the last
//! hour's recipients by status now), the queue per beanstalkd server and tube, the oldest
//! queued job, the connections waiting for outbound jobs (workers), and the stuck count. Reloads
//! itself every [`REFRESH`] seconds (a meta refresh: no script).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::html;

use crate::admin::stats::TubeStats;
use crate::console::auth::Operator;
use crate::console::chart::{self, Bar};
use crate::console::{view, Console, ConsoleError};
use crate::ledger::now_ms;

/// Seconds between reloads.
pub const REFRESH: u32 = 30;

/// Destination domains listed, most recipients first.
const DOMAINS: usize = 15;

/// Recipients read for the per-domain rates (the newest of the last hour).
const DOMAIN_ROWS: u32 = 20_000;

/// One destination domain's recipients of the last hour by status now.
#[derive(Default)]
struct Domain {
    name: String,
    total: u64,
    deferred: u64,
    bounced: u64,
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;

/// One server's queue, or why it could not be read.
struct Queue {
    server: String,
    tubes: Vec<TubeStats>,
    /// Connections watching the outbound tube (the workers' reservers).
    watching: Option<u64>,
    error: Option<String>,
}

async fn queue(console: &Console, addr: &str) -> Queue {
    let t = &console.target.tubes;
    let read = async {
        let mut client = crate::admin::connect(addr).await?;
        let mut tubes = Vec::new();
        for tube in [t.outbound(), t.held(), t.failed(), t.events()] {
            tubes.push(
                crate::admin::stats::tube_stats(&mut client, tube)
                    .await
                    .map_err(crate::admin::at(addr))?,
            );
        }
        let watching = match client.stats_tube(t.outbound()).await {
            Ok(s) => s.get_u64("current-watching"),
            Err(_) => None,
        };
        Ok::<_, crate::admin::AdminError>((tubes, watching))
    };
    match read.await {
        Ok((tubes, watching)) => Queue {
            server: addr.to_owned(),
            tubes,
            watching,
            error: None,
        },
        Err(e) => Queue {
            server: addr.to_owned(),
            tubes: Vec::new(),
            watching: None,
            error: Some(e.to_string()),
        },
    }
}

/// `GET /console/`.
pub async fn page(
    State(console): State<Arc<Console>>,
    operator: Operator,
) -> Result<Html<String>, ConsoleError> {
    let now = now_ms();
    let store = console.store.get().await?;
    let stuck = store.stuck_count(now, console.stuck_after).await?;
    let minute_now = now - now % MINUTE;
    let first_minute = minute_now - 59 * MINUTE;
    let mut minutes: Vec<Bar> = (0..60)
        .map(|i| Bar {
            label: view::time(first_minute + i * MINUTE)[11..16].to_owned(),
            counts: [0; 4],
        })
        .collect();
    for (minute, status, count) in store.per_minute(first_minute, now + 1).await? {
        if let Some(bar) =
            minutes.get_mut(((minute.saturating_sub(first_minute)) / MINUTE) as usize)
        {
            bar.counts[chart::group(&status)] += count;
        }
    }
    let hour_now = now - now % HOUR;
    let first_hour = hour_now - 23 * HOUR;
    let mut hours: Vec<Bar> = (0..24)
        .map(|i| Bar {
            label: view::time(first_hour + i * HOUR)[11..13].to_owned() + "h",
            counts: [0; 4],
        })
        .collect();
    let mut day = [0u64; 4];
    let mut queued_day = 0;
    for h in store.hourly_all(first_hour, now + 1).await? {
        if h.outcome == "queued" {
            // Messages queued; the bars count recipients' outcomes.
            queued_day += h.count;
            continue;
        }
        if let Some(bar) = hours.get_mut(((h.hour.saturating_sub(first_hour)) / HOUR) as usize) {
            bar.counts[chart::group(&h.outcome)] += h.count;
            day[chart::group(&h.outcome)] += h.count;
        }
    }
    let (by_domain, domains_cut) = store
        .domain_statuses(now.saturating_sub(HOUR), now + 1, DOMAIN_ROWS)
        .await?;
    let mut domains: Vec<Domain> = Vec::new();
    for (name, status, count) in by_domain {
        if domains.last().is_none_or(|d| d.name != name) {
            domains.push(Domain {
                name,
                ..Domain::default()
            });
        }
        if let Some(d) = domains.last_mut() {
            d.total += count;
            match chart::group(&status) {
                1 => d.deferred += count,
                2 => d.bounced += count,
                _ => {}
            }
        }
    }
    domains.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
    domains.truncate(DOMAINS);
    let mut queues = Vec::new();
    for addr in &console.target.servers {
        queues.push(queue(&console, addr).await);
    }
    let outbound = console.target.tubes.outbound();
    let oldest = queues
        .iter()
        .flat_map(|q| q.tubes.iter())
        .filter(|t| t.tube == outbound)
        .filter_map(|t| t.oldest_age)
        .max();
    let waiting: u64 = queues
        .iter()
        .flat_map(|q| q.tubes.iter())
        .filter(|t| t.tube == outbound)
        .map(|t| t.ready + t.delayed)
        .sum();
    let workers: u64 = queues.iter().filter_map(|q| q.watching).sum();
    let body = html! {
        h1 { "Overview" }
        div.cards {
            div.card { div.label { "Queued for delivery" } div.value #waiting { (waiting) } }
            div.card { div.label { "Oldest queued" } div.value {
                (oldest.map(|s| view::ago(s * 1000)).unwrap_or_else(|| "-".into())) } }
            div.card { div.label { "Reservers on the outbound tube (workers)" } div.value { (workers) } }
            div.card { div.label { "Stuck messages" } div.value #stuck {
                (stuck) } }
            div.card { div.label { "Last 24 h: queued / sent / bounced" } div.value {
                (queued_day) " / " (day[0]) " / " (day[2]) } }
        }
        h2 { "Messages queued per minute, last hour (by status now)" }
        (chart::bars("Messages per minute", &minutes, 10))
        h2 { "Recipient outcomes per hour, last 24 hours" }
        (chart::bars("Outcomes per hour", &hours, 3))
        (chart::legend())
        h2 { "Destination domains, messages of the last hour" }
        @if domains.is_empty() {
            p.muted { "No recipients in the last hour." }
        } @else {
            table.domains {
                thead { tr { th { "Domain" } th.num { "Recipients" } th.num { "Deferred or waiting" } th.num { "Bounced" } } }
                tbody {
                    @for d in &domains {
                        tr {
                            td.wrap { a href={ "/console/failed?" (view::query([("domain", d.name.as_str())])) } { (d.name) } }
                            td.num { (d.total) }
                            td.num { (percent(d.deferred, d.total)) }
                            td.num { (percent(d.bounced, d.total)) }
                        }
                    }
                }
            }
            @if domains_cut {
                p.muted { "From the newest " (DOMAIN_ROWS) " recipients of the hour." }
            }
        }
        h2 { "Queue" }
        table {
            thead { tr { th { "Server" } th { "Tube" } th.num { "Ready" } th.num { "Delayed" }
                th.num { "Reserved" } th.num { "Buried" } th { "Oldest" } } }
            tbody {
                @for q in &queues {
                    @if let Some(e) = &q.error {
                        tr { td { (q.server) } td.error colspan="6" { (e) } }
                    }
                    @for t in &q.tubes {
                        tr {
                            td { (q.server) } td { (t.tube) }
                            td.num { (t.ready) } td.num { (t.delayed) }
                            td.num { (t.reserved) } td.num { (t.buried) }
                            td { (t.oldest_age.map(|s| view::ago(s * 1000)).unwrap_or_else(|| "-".into())) }
                        }
                    }
                }
            }
        }
        p.muted { "Refreshes every " (REFRESH) " seconds. " (view::time(now)) " UTC." }
    };
    Ok(view::page(
        &operator,
        "Overview",
        "/console/",
        Some(REFRESH),
        body,
    ))
}
