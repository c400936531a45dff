//! Lanes (issue 17): classes of mail, each with its own beanstalkd priority, fairness spread,
//! retry schedule and lifetime, so that a password reset never waits behind a newsletter and
//! is not retried for five days.
//!
//! All lanes share the outbound tube: a lane is a band of beanstalkd priorities (lower is
//! served first, across the whole tube), not a tube of its own. So every admin command
//! (`requeue`, `release`, `hold`, the failed and held tubes) works as before, and a worker
//! needs no second `watch`. A job names its lane in [`Envelope::lane`](crate::job::Envelope);
//! absent (a job from a post office before lanes) is the default lane.
//!
//! The post office and the workers read the same `lanes:` block (this struct, so that one
//! block can be copied into both files): the post office uses `priority` and `spread`, the
//! worker `retry` (and `priority` + `spread` for the retries it puts).
//!
//! Not here: how the post office picks a lane (`postoffice::lanes`), how a worker applies a
//! lane's schedule (`worker::plan`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The lane for mail that must arrive now or not at all (password resets, receipts).
pub const TRANSACTIONAL: &str = "transactional";
/// The lane for everything that can wait (newsletters, digests); the default lane.
pub const BULK: &str = "bulk";

/// One lane's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lane {
    /// The beanstalkd priority of the lane's fresh jobs (0 is served first). Absent: the post
    /// office's `job_priority` (1024).
    pub priority: Option<u32>,
    /// The largest offset fairness adds to `priority` for a host that queued much in this
    /// lane recently (docs/lanes.md); 0 turns fairness off in the lane. Retries go to
    /// `priority + spread`, the back of the lane.
    pub spread: u32,
    /// The lane's retry schedule and lifetime; each absent key is the worker's `retry`.
    pub retry: LaneRetry,
}

impl Lane {
    /// The priority of a fresh job with fairness offset 0.
    pub fn base(&self, job_priority: u32) -> u32 {
        self.priority.unwrap_or(job_priority)
    }

    /// The priority of a fresh job whose host has `offset` (capped at `spread`).
    pub fn priority_with(&self, job_priority: u32, offset: u32) -> u32 {
        self.base(job_priority)
            .saturating_add(offset.min(self.spread))
    }

    /// The priority of the lane's retries: its back.
    pub fn back(&self, job_priority: u32) -> u32 {
        self.base(job_priority).saturating_add(self.spread)
    }
}

/// A lane's retry schedule; an absent key takes the worker's `retry` value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaneRetry {
    /// Delay before the first retry.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub first: Option<Duration>,
    /// Longest delay between two attempts.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Duration>,
    /// How long after it was queued a message may still be tried; then it fails with reason
    /// `expired` (and a bounce, where bounces are on).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<Duration>,
}

/// The lane every tier uses for mail nobody classified, and for jobs without a lane.
pub fn default_lane() -> String {
    BULK.into()
}

/// The lanes defined when the config names none: `transactional` (served first, retried
/// every few minutes for an hour) and `bulk` (today's priority and the worker's `retry`).
pub fn default_lanes() -> BTreeMap<String, Lane> {
    BTreeMap::from([
        (
            TRANSACTIONAL.to_owned(),
            Lane {
                priority: Some(0),
                spread: 1000,
                retry: LaneRetry {
                    first: Some(Duration::from_secs(30)),
                    max_delay: Some(Duration::from_secs(300)),
                    max_lifetime: Some(Duration::from_secs(3600)),
                },
            },
        ),
        (
            BULK.to_owned(),
            Lane {
                priority: None,
                spread: 100_000,
                retry: LaneRetry::default(),
            },
        ),
    ])
}

/// Whether `name` can be a lane's name: 1 to 64 of `a-z 0-9 - _`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The problems of a `lanes` map and its `default_lane`, each naming its key.
pub fn check(lanes: &BTreeMap<String, Lane>, default: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, lane) in lanes {
        if !valid_name(name) {
            problems.push(format!(
                "lanes.{name}: a lane's name is 1 to 64 of a-z, 0-9, - and _"
            ));
        }
        if lane.retry.first.is_some_and(|d| d.is_zero()) {
            problems.push(format!("lanes.{name}.retry.first: must be more than 0s"));
        }
        if lane.retry.max_lifetime.is_some_and(|d| d.is_zero()) {
            problems.push(format!(
                "lanes.{name}.retry.max_lifetime: must be more than 0s"
            ));
        }
    }
    if !lanes.contains_key(default) {
        problems.push(format!(
            "default_lane: {default:?} is not one of the lanes ({})",
            lanes.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ordered() {
        let lanes = default_lanes();
        assert!(check(&lanes, &default_lane()).is_empty());
        let t = &lanes[TRANSACTIONAL];
        let b = &lanes[BULK];
        // Every transactional job, retries included, is served before any bulk job.
        assert!(t.back(1024) < b.base(1024));
        assert_eq!(b.base(1024), 1024);
        assert_eq!(t.priority_with(1024, 5), 5);
        assert_eq!(t.priority_with(1024, 50_000), 1000);
    }

    #[test]
    fn bad_names_and_default_are_reported() {
        let mut lanes = default_lanes();
        lanes.insert("Bad Name".into(), Lane::default());
        let problems = check(&lanes, "nope").join("\n");
        assert!(problems.contains("lanes.Bad Name"), "{problems}");
        assert!(problems.contains("default_lane: \"nope\""), "{problems}");
        assert!(valid_name("news-2"));
        assert!(!valid_name(""));
    }

    #[test]
    fn yaml_keys_are_checked() {
        let lane: Lane =
            serde_json::from_str(r#"{"priority":5,"retry":{"max_lifetime":"1h"}}"#).unwrap();
        assert_eq!(lane.retry.max_lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(lane.retry.first, None);
        assert!(serde_json::from_str::<Lane>(r#"{"prio":5}"#).is_err());
    }
}
