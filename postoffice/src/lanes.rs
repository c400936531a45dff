//! Which lane a message goes to, and at which beanstalkd priority (issue 17, docs/lanes.md).
//!
//! The lane, first match wins:
//! 1. the `X-Hedwig-Lane` header field, when the host's policy has `lane_header: true`;
//! 2. the app's lane (`app.lane` in the post: a container's `hedwig.lane` label or a login's
//!    lane at mailman);
//! 3. `sender_lanes`, by the envelope sender's domain;
//! 4. the host's `lane`;
//! 5. `default_lane`.
//!
//! 1 to 3 must name a defined lane the host's `allowed_lanes` allows (the host policy is the
//! ceiling); a request that does not is not refused: the next rule decides, and a warning is
//! logged once per host, lane and rule (a message refused for a wrong label would be mail
//! lost for a typo; a lane above the ceiling is simply not granted). The header field is
//! taken out of every message, allowed or not, before it is queued.
//!
//! Fairness inside a lane: the priority is the lane's base plus an offset that grows with
//! how many messages the host queued in the lane recently (a counter per host and lane that
//! halves every `lane_fairness_half_life`), capped at the lane's `spread`. beanstalkd serves
//! the lowest priority first, so a quiet host's message overtakes the thousandth message of a
//! host in a burst. The counters are per post office process.
//!
//! Not here: the lanes' settings (`hedwig_queue::lane`), what a worker does with a lane.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hedwig_core::wire::App;
use hedwig_queue::lane::Lane;

use crate::config::{Config, HostPolicy};

/// The header field a sending host may set to choose its message's lane.
pub const LANE_HEADER: &str = "X-Hedwig-Lane";

/// Counters above this many (host, lane) pairs are pruned of the ones that decayed away.
const PRUNE_AT: usize = 4096;

/// Which rule chose a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Header,
    App,
    SenderDomain,
    Host,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Header => "header",
            Source::App => "app",
            Source::SenderDomain => "sender_domain",
            Source::Host => "host",
            Source::Default => "default",
        }
    }
}

/// What a message asks for.
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    /// The `X-Hedwig-Lane` value, if the message had one.
    pub header: Option<&'a str>,
    pub app: Option<&'a App>,
    /// The envelope sender's domain (None: the null sender).
    pub sender_domain: Option<&'a str>,
}

/// The lanes as the post office uses them, with the fairness counters.
pub struct Lanes {
    lanes: BTreeMap<String, Lane>,
    default: String,
    sender_lanes: Vec<(String, String)>,
    job_priority: u32,
    half_life: Duration,
    counters: Mutex<HashMap<(String, String), Count>>,
    warned: Mutex<HashSet<(String, String, Source)>>,
}

struct Count {
    value: f64,
    at: Instant,
}

impl Lanes {
    pub fn new(config: &Config) -> Lanes {
        Lanes {
            lanes: config.lanes.clone(),
            default: config.default_lane.clone(),
            sender_lanes: config
                .sender_lanes
                .iter()
                .map(|(d, l)| (d.clone(), l.clone()))
                .collect(),
            job_priority: config.job_priority,
            half_life: config.lane_fairness_half_life,
            counters: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The lane for a message of `host` (lowercase) under `policy`, and the rule that chose it.
    pub fn choose(
        &self,
        host: &str,
        policy: &HostPolicy,
        request: Request<'_>,
    ) -> (String, Source) {
        let mut asked: Vec<(Source, &str)> = Vec::new();
        if policy.lane_header {
            if let Some(h) = request.header {
                asked.push((Source::Header, h.trim()));
            }
        }
        if let Some(lane) = request.app.and_then(|a| a.lane.as_deref()) {
            asked.push((Source::App, lane.trim()));
        }
        if let Some(domain) = request.sender_domain {
            let by_domain = self.sender_lanes.iter().find(|(pattern, _)| {
                crate::policy::domain_allowed(std::slice::from_ref(pattern), domain)
            });
            if let Some((_, lane)) = by_domain {
                asked.push((Source::SenderDomain, lane));
            }
        }
        for (source, lane) in asked {
            let lane = lane.to_ascii_lowercase();
            let allowed = policy.allowed_lanes.is_empty() || policy.allowed_lanes.contains(&lane);
            if self.lanes.contains_key(&lane) && allowed {
                return (lane, source);
            }
            self.warn_once(host, &lane, source, self.lanes.contains_key(&lane));
        }
        match &policy.lane {
            Some(lane) => (lane.clone(), Source::Host),
            None => (self.default.clone(), Source::Default),
        }
    }

    fn warn_once(&self, host: &str, lane: &str, source: Source, defined: bool) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a host cycling through made-up names is logged for the first 1000.
        if warned.len() < 1000 && warned.insert((host.to_owned(), lane.to_owned(), source)) {
            let why = if defined {
                "not in the host's allowed_lanes"
            } else {
                "not a defined lane"
            };
            tracing::warn!(
                host = %host, lane = %lane, by = source.as_str(),
                "lane {lane:?} asked by {} is {why}; the next rule chooses \
                 (logged once per host, lane and rule)",
                source.as_str()
            );
        }
    }

    /// The priority of the next message of `host` in `lane` (counting it).
    pub fn priority(&self, host: &str, lane: &str) -> u32 {
        self.priority_at(host, lane, Instant::now())
    }

    fn priority_at(&self, host: &str, lane: &str, now: Instant) -> u32 {
        let Some(settings) = self.lanes.get(lane) else {
            return self.job_priority;
        };
        if settings.spread == 0 {
            return settings.base(self.job_priority);
        }
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.len() >= PRUNE_AT {
            let half_life = self.half_life;
            counters.retain(|_, c| decayed(c, now, half_life) >= 1.0);
        }
        let count = counters
            .entry((host.to_owned(), lane.to_owned()))
            .or_insert(Count {
                value: 0.0,
                at: now,
            });
        let value = decayed(count, now, self.half_life);
        count.value = value + 1.0;
        count.at = now;
        // `as` saturates: a huge count is the lane's spread.
        settings.priority_with(self.job_priority, value.round() as u32)
    }

    /// The priority of the lane's retries (its back), for a lane that may be unknown.
    pub fn back(&self, lane: &str) -> u32 {
        self.lanes
            .get(lane)
            .map_or(self.job_priority, |l| l.back(self.job_priority))
    }
}

fn decayed(count: &Count, now: Instant, half_life: Duration) -> f64 {
    let elapsed = now.saturating_duration_since(count.at).as_secs_f64();
    if half_life.is_zero() {
        return 0.0;
    }
    count.value * 0.5f64.powf(elapsed / half_life.as_secs_f64())
}

/// Takes every `X-Hedwig-Lane` field out of the message's header section; returns the first
/// one's value (unfolded). The message is untouched when it has none.
pub fn take_lane_header(message: &mut Vec<u8>) -> Option<String> {
    let name = LANE_HEADER.as_bytes();
    let mut value: Option<String> = None;
    // The byte ranges of the lane fields (with their continuation lines) to take out: the
    // message is copied only when there is one.
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    // Inside a lane field, and whether it is the first (its value is kept).
    let (mut skipping, mut first) = (false, false);
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // RFC 5322 §2.2.3: a folded continuation of the field above.
            if skipping {
                if let (Some(v), true) = (value.as_mut(), first) {
                    v.push_str(&String::from_utf8_lossy(line));
                }
                cut.push((pos, end));
            }
        } else {
            skipping = line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name)
                && line[name.len()..].trim_ascii_start().first() == Some(&b':');
            first = skipping && value.is_none();
            if first {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(name.len());
                value = Some(String::from_utf8_lossy(&line[colon + 1..]).into_owned());
            }
            if skipping {
                cut.push((pos, end));
            }
        }
        pos = end;
    }
    let value = value?;
    let mut out = Vec::with_capacity(message.len());
    let mut from = 0;
    for (start, end) in cut {
        out.extend_from_slice(&message[from..start]);
        from = end;
    }
    out.extend_from_slice(&message[from..]);
    *message = out;
    Some(value.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig_core::wire::AppSource;

    fn config() -> Config {
        let mut c = Config::default();
        c.sender_lanes
            .insert("news.example.com".into(), "bulk".into());
        c.sender_lanes
            .insert("*.auth.example.com".into(), "transactional".into());
        c
    }

    fn app(lane: &str) -> App {
        App {
            name: "shop-billing-1".into(),
            source: AppSource::Container,
            image: None,
            compose_project: None,
            compose_service: None,
            lane: Some(lane.into()),
        }
    }

    #[test]
    fn the_order_of_the_rules() {
        let lanes = Lanes::new(&config());
        let open = HostPolicy {
            lane_header: true,
            ..HostPolicy::default()
        };
        let req = |header, app, domain| Request {
            header,
            app,
            sender_domain: domain,
        };
        let a = app("transactional");
        let b = app("bulk");
        assert_eq!(
            lanes.choose("h", &open, req(Some(" Bulk "), Some(&a), None)),
            ("bulk".into(), Source::Header)
        );
        assert_eq!(
            lanes.choose("h", &open, req(None, Some(&b), Some("x.auth.example.com"))),
            ("bulk".into(), Source::App)
        );
        assert_eq!(
            lanes.choose("h", &open, req(None, None, Some("x.auth.example.com"))),
            ("transactional".into(), Source::SenderDomain)
        );
        assert_eq!(
            lanes.choose("h", &open, req(Some("nope"), None, Some("other.test"))),
            ("bulk".into(), Source::Default)
        );
        // The header counts only where the policy allows it.
        let closed = HostPolicy {
            lane: Some("transactional".into()),
            ..HostPolicy::default()
        };
        assert_eq!(
            lanes.choose("h", &closed, req(Some("bulk"), None, None)),
            ("transactional".into(), Source::Host)
        );
        // allowed_lanes is the ceiling: an app asking above it gets the host's lane.
        let ceiling = HostPolicy {
            allowed_lanes: vec!["bulk".into()],
            lane: Some("bulk".into()),
            ..HostPolicy::default()
        };
        assert_eq!(
            lanes.choose(
                "h",
                &ceiling,
                req(None, Some(&a), Some("a.auth.example.com"))
            ),
            ("bulk".into(), Source::Host)
        );
    }

    #[test]
    fn fairness_offsets_grow_with_a_burst_and_decay() {
        let lanes = Lanes::new(&config());
        let t0 = Instant::now();
        let burst: Vec<u32> = (0..5).map(|_| lanes.priority_at("a", "bulk", t0)).collect();
        assert_eq!(burst, [1024, 1025, 1026, 1027, 1028]);
        // Another host starts at the lane's base; so does another lane.
        assert_eq!(lanes.priority_at("b", "bulk", t0), 1024);
        assert_eq!(lanes.priority_at("a", "transactional", t0), 0);
        // Two half-lives later a's count of 5 is 1.25.
        let later = t0 + 2 * Duration::from_secs(60);
        assert_eq!(lanes.priority_at("a", "bulk", later), 1025);
        // Capped at the spread.
        for _ in 0..2000 {
            lanes.priority_at("c", "transactional", t0);
        }
        assert_eq!(lanes.priority_at("c", "transactional", t0), 1000);
        assert_eq!(lanes.back("transactional"), 1000);
        assert_eq!(lanes.back("unknown"), 1024);
    }

    #[test]
    fn spread_zero_is_fairness_off() {
        let mut c = config();
        for lane in c.lanes.values_mut() {
            lane.spread = 0;
        }
        let lanes = Lanes::new(&c);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(lanes.priority_at("a", "bulk", t0), 1024);
        }
    }

    #[test]
    fn the_lane_header_is_taken_out() {
        let mut m = b"From: a@b\r\nX-Hedwig-Lane: transactional\r\nSubject: x\r\n\r\nX-Hedwig-Lane: body\r\n".to_vec();
        assert_eq!(take_lane_header(&mut m).as_deref(), Some("transactional"));
        assert_eq!(m, b"From: a@b\r\nSubject: x\r\n\r\nX-Hedwig-Lane: body\r\n");
        // Folded, repeated, any case, LF line ends: all taken out, the first one counts.
        let mut m =
            b"x-hedwig-lane :\n bulk\nX-Hedwig-Lane: transactional\nSubject: y\n\nbody\n".to_vec();
        assert_eq!(take_lane_header(&mut m).as_deref(), Some("bulk"));
        assert_eq!(m, b"Subject: y\n\nbody\n");
        let mut m = b"X-Hedwig-Lanes: no\r\n\r\n".to_vec();
        assert_eq!(take_lane_header(&mut m), None);
        assert_eq!(m, b"X-Hedwig-Lanes: no\r\n\r\n");
        let mut none = b"Subject: z\r\n\r\nb".to_vec();
        assert_eq!(take_lane_header(&mut none), None);
        assert_eq!(none, b"Subject: z\r\n\r\nb");
    }
}
