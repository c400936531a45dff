//! Held sending hosts: the tube names and the format of the hold list. No I/O.
//!
//! The hold list lives in beanstalkd itself, the only state every post office and worker
//! shares. On every beanstalkd server, tube [`TUBE_HOLDS`] holds one **buried** job whose body
//! is [`HoldList::encode`]: `{"v":1,"hosts":["web1.example.com"]}`. Anyone reads it with
//! `use hedwig-holds` + `peek-buried` (a buried job is never reserved, so reading it disturbs
//! nobody). No buried job means nothing is held. A writer puts the new list, buries it, then
//! deletes the older buried jobs; `peek-buried` answers the oldest buried job, so readers see
//! the old list until the old job is deleted, never an empty one.
//!
//! Mail of a held host waits in tube [`TUBE_HELD`], which no worker watches. Releasing a host
//! removes it from the list and moves its jobs from [`TUBE_HELD`] back to the outbound tube.
//!
//! The I/O (reading and writing the list, moving jobs) is in `postoffice::holds`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The tube whose one buried job is the hold list.
pub const TUBE_HOLDS: &str = "hedwig-holds";
/// The tube where mail of held hosts waits; no worker watches it.
pub const TUBE_HELD: &str = "hedwig-held";
/// How long readers may cache the list. `release` waits a little longer than this before its
/// second sweep of [`TUBE_HELD`], so mail queued by a post office with a stale cache is not
/// left behind.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// Format version written by this build.
pub const VERSION: u32 = 1;
/// Most hosts a list may hold (keeps the job small and the reader's memory bounded).
pub const MAX_HOSTS: usize = 10_000;

/// Why a hold list body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("hold list is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("hold list format version {0} is newer than this build understands")]
    Version(u32),
    #[error("hold list has {0} hosts; at most {MAX_HOSTS}")]
    TooMany(usize),
}

/// The set of held sending hosts (lowercase fqdns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldList {
    v: u32,
    hosts: BTreeSet<String>,
}

impl HoldList {
    /// An empty list.
    pub fn new() -> HoldList {
        HoldList {
            v: VERSION,
            hosts: BTreeSet::new(),
        }
    }

    /// Reads a job body written by [`HoldList::encode`].
    pub fn decode(body: &[u8]) -> Result<HoldList, HoldError> {
        let mut list: HoldList = serde_json::from_slice(body).map_err(HoldError::Json)?;
        if list.v > VERSION {
            return Err(HoldError::Version(list.v));
        }
        if list.hosts.len() > MAX_HOSTS {
            return Err(HoldError::TooMany(list.hosts.len()));
        }
        list.v = VERSION;
        list.hosts = list.hosts.iter().map(|h| normalize(h)).collect();
        Ok(list)
    }

    /// The job body to store (compact JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("HoldList serializes to JSON"))
    }

    /// Whether mail of `host` is held (case-insensitive, trailing dot ignored).
    pub fn is_held(&self, host: &str) -> bool {
        self.hosts.contains(&normalize(host))
    }

    /// Holds `host`; false when it was already held.
    pub fn hold(&mut self, host: &str) -> Result<bool, HoldError> {
        if self.hosts.len() >= MAX_HOSTS {
            return Err(HoldError::TooMany(self.hosts.len() + 1));
        }
        Ok(self.hosts.insert(normalize(host)))
    }

    /// Releases `host`; false when it was not held.
    pub fn release(&mut self, host: &str) -> bool {
        self.hosts.remove(&normalize(host))
    }

    /// The held hosts, sorted.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Every host held in either list (post offices read the list from each beanstalkd and
    /// treat a host as held if any server says so).
    pub fn union(&self, other: &HoldList) -> HoldList {
        HoldList {
            v: VERSION,
            hosts: self.hosts.union(&other.hosts).cloned().collect(),
        }
    }
}

/// The form hosts are compared in: lowercase, no trailing dot.
pub fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_lookup() {
        let mut list = HoldList::new();
        assert!(list.hold("Web1.Example.COM.").unwrap());
        assert!(!list.hold("web1.example.com").unwrap());
        list.hold("web2.example.com").unwrap();
        let body = list.encode();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"v":1,"hosts":["web1.example.com","web2.example.com"]}"#
        );
        let back = HoldList::decode(&body).unwrap();
        assert_eq!(back, list);
        assert!(back.is_held("WEB1.example.com"));
        assert!(!back.is_held("web3.example.com"));
        let mut back = back;
        assert!(back.release("web1.example.com"));
        assert!(!back.release("web1.example.com"));
        assert_eq!(back.hosts().collect::<Vec<_>>(), ["web2.example.com"]);
    }

    #[test]
    fn decode_normalizes_and_checks() {
        let list = HoldList::decode(br#"{"v":1,"hosts":["A.example.com."]}"#).unwrap();
        assert!(list.is_held("a.example.com"));
        assert!(matches!(
            HoldList::decode(br#"{"v":9,"hosts":[]}"#),
            Err(HoldError::Version(9))
        ));
        assert!(matches!(
            HoldList::decode(b"not json"),
            Err(HoldError::Json(_))
        ));
    }

    #[test]
    fn union_of_lists() {
        let mut a = HoldList::new();
        a.hold("a.example").unwrap();
        let mut b = HoldList::new();
        b.hold("b.example").unwrap();
        let u = a.union(&b);
        assert!(u.is_held("a.example") && u.is_held("b.example"));
        assert!(HoldList::new().is_empty());
    }
}
