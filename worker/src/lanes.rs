//! The lanes as a worker applies them (issue 17, docs/lanes.md): each lane's retry schedule
//! and lifetime (its `retry` keys over the worker's `retry`), and the priority its retries
//! are put at (the back of the lane, `priority + spread`).
//!
//! A job names its lane (`Envelope::lane`); a job without one (from a post office before
//! lanes) is in `default_lane`. A lane this worker does not know (a post office with a newer
//! `lanes:` block) is delivered as the default lane, with one warning per lane name.
//!
//! Not here: the lanes' settings (`hedwig_queue::lane`), the choice of lane (the post office).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use hedwig_queue::job::Envelope;

use crate::config::{Config, Retry};

/// The priority of a lane without its own `priority`: the post office's default
/// `job_priority`, beanstalkd's usual default.
pub const DEFAULT_PRIORITY: u32 = 1024;

/// One lane, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    /// The retry schedule and lifetime.
    pub retry: Retry,
    /// The beanstalkd priority of the lane's retries.
    pub retry_priority: u32,
}

/// Every lane this worker knows.
#[derive(Debug)]
pub struct Lanes {
    lanes: BTreeMap<String, Resolved>,
    default: Resolved,
    warned: Mutex<HashSet<String>>,
}

impl Lanes {
    /// From a checked config (`default_lane` is one of `lanes`).
    pub fn new(config: &Config) -> Lanes {
        let lanes: BTreeMap<String, Resolved> = config
            .lanes
            .iter()
            .map(|(name, lane)| {
                let base = &config.retry;
                let retry = Retry {
                    first: lane.retry.first.unwrap_or(base.first),
                    max_delay: lane.retry.max_delay.unwrap_or(base.max_delay),
                    max_lifetime: lane.retry.max_lifetime.unwrap_or(base.max_lifetime),
                };
                let resolved = Resolved {
                    name: name.clone(),
                    retry,
                    retry_priority: lane.back(DEFAULT_PRIORITY),
                };
                (name.clone(), resolved)
            })
            .collect();
        let default = lanes
            .get(&config.default_lane)
            .cloned()
            .unwrap_or_else(|| Resolved {
                name: config.default_lane.clone(),
                retry: config.retry.clone(),
                retry_priority: DEFAULT_PRIORITY,
            });
        Lanes {
            lanes,
            default,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The lane of a job: its own, or the default one.
    pub fn of(&self, envelope: &Envelope) -> &Resolved {
        let Some(name) = envelope.lane.as_deref() else {
            return &self.default;
        };
        match self.lanes.get(name) {
            Some(lane) => lane,
            None => {
                let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
                if warned.len() < 1000 && warned.insert(name.to_owned()) {
                    tracing::warn!(
                        queue_id = %envelope.queue_id, lane = %name,
                        "lane {name:?} is not in this worker's lanes: delivered as the default lane \
                         {:?} (give the workers the post office's `lanes:`; logged once per lane)",
                        self.default.name
                    );
                }
                &self.default
            }
        }
    }

    /// The default lane.
    pub fn default_lane(&self) -> &Resolved {
        &self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lanes_take_the_workers_retry_for_what_they_leave_out() {
        let config = Config::default();
        let lanes = Lanes::new(&config);
        let mut env = Envelope::new("q".into(), "h".into(), "".into(), vec![]);
        // No lane: the default (bulk), which is the worker's `retry`.
        let bulk = lanes.of(&env);
        assert_eq!(bulk.name, "bulk");
        assert_eq!(bulk.retry.max_lifetime, config.retry.max_lifetime);
        assert_eq!(bulk.retry_priority, 1024 + 100_000);
        env.lane = Some("transactional".into());
        let t = lanes.of(&env);
        assert_eq!(t.retry.max_lifetime, Duration::from_secs(3600));
        assert_eq!(t.retry.first, Duration::from_secs(30));
        assert_eq!(t.retry_priority, 1000);
        // Unknown: the default.
        env.lane = Some("from-the-future".into());
        assert_eq!(lanes.of(&env).name, "bulk");
    }
}
