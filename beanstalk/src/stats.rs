//! The YAML replies of `stats`, `stats-tube`, `stats-job` and the `list-tubes*` commands.
//!
//! beanstalkd writes a flat YAML dictionary (`key: value` lines after `---`) or a flat list
//! (`- name` lines). That small subset is parsed here by hand; no YAML library, and nothing
//! beyond flat scalars is understood.

use std::collections::HashMap;

use crate::error::Error;

/// A `stats*` reply: every field as a string, with typed accessors for the ones hedwig uses.
/// Absent or unparsable fields read as `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    fields: HashMap<String, String>,
}

impl Stats {
    /// Parses the YAML body of an `OK` reply.
    pub fn parse(body: &[u8]) -> Result<Stats, Error> {
        let mut fields = HashMap::new();
        for line in yaml_lines(body)? {
            let Some((key, value)) = line.split_once(':') else {
                return Err(Error::Protocol(format!("stats line without ':': {line:?}")));
            };
            fields.insert(key.trim().to_owned(), unquote(value.trim()).to_owned());
        }
        Ok(Stats { fields })
    }

    /// A field as the server sent it (surrounding quotes removed).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A numeric field.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// All fields.
    pub fn fields(&self) -> &HashMap<String, String> {
        &self.fields
    }

    /// `current-jobs-ready` (server and tube stats).
    pub fn current_jobs_ready(&self) -> Option<u64> {
        self.get_u64("current-jobs-ready")
    }
    /// `current-jobs-delayed` (server and tube stats).
    pub fn current_jobs_delayed(&self) -> Option<u64> {
        self.get_u64("current-jobs-delayed")
    }
    /// `current-jobs-reserved` (server and tube stats).
    pub fn current_jobs_reserved(&self) -> Option<u64> {
        self.get_u64("current-jobs-reserved")
    }
    /// `current-jobs-buried` (server and tube stats).
    pub fn current_jobs_buried(&self) -> Option<u64> {
        self.get_u64("current-jobs-buried")
    }
    /// `total-jobs` (server and tube stats).
    pub fn total_jobs(&self) -> Option<u64> {
        self.get_u64("total-jobs")
    }
    /// `max-job-size` (server stats): the `-z` limit in bytes.
    pub fn max_job_size(&self) -> Option<u64> {
        self.get_u64("max-job-size")
    }
    /// `current-connections` (server stats).
    pub fn current_connections(&self) -> Option<u64> {
        self.get_u64("current-connections")
    }
    /// `id` (job stats).
    pub fn id(&self) -> Option<u64> {
        self.get_u64("id")
    }
    /// `tube` (job stats).
    pub fn tube(&self) -> Option<&str> {
        self.get("tube")
    }
    /// `state` (job stats): `ready`, `delayed`, `reserved` or `buried`.
    pub fn state(&self) -> Option<&str> {
        self.get("state")
    }
    /// `pri` (job stats).
    pub fn pri(&self) -> Option<u32> {
        self.get("pri")?.parse().ok()
    }
    /// `age` (job stats): seconds since the job was put.
    pub fn age(&self) -> Option<u64> {
        self.get_u64("age")
    }
    /// `reserves` (job stats): how many times the job was reserved.
    pub fn reserves(&self) -> Option<u64> {
        self.get_u64("reserves")
    }
    /// `releases` (job stats).
    pub fn releases(&self) -> Option<u64> {
        self.get_u64("releases")
    }
    /// `buries` (job stats).
    pub fn buries(&self) -> Option<u64> {
        self.get_u64("buries")
    }
    /// `kicks` (job stats).
    pub fn kicks(&self) -> Option<u64> {
        self.get_u64("kicks")
    }
    /// `timeouts` (job stats): how many times the job's TTR ran out while reserved.
    pub fn timeouts(&self) -> Option<u64> {
        self.get_u64("timeouts")
    }
}

/// Parses a YAML list reply (`list-tubes`, `list-tubes-watched`).
pub fn parse_list(body: &[u8]) -> Result<Vec<String>, Error> {
    yaml_lines(body)?
        .map(|line| {
            line.strip_prefix("- ")
                .map(|item| unquote(item.trim()).to_owned())
                .ok_or_else(|| Error::Protocol(format!("list line without '- ': {line:?}")))
        })
        .collect()
}

/// The non-empty lines after the `---` document marker.
fn yaml_lines(body: &[u8]) -> Result<impl Iterator<Item = &str>, Error> {
    let text =
        std::str::from_utf8(body).map_err(|_| Error::Protocol("YAML reply is not UTF-8".into()))?;
    let rest = text
        .strip_prefix("---")
        .ok_or_else(|| Error::Protocol("YAML reply does not start with ---".into()))?;
    Ok(rest.lines().map(str::trim_end).filter(|l| !l.is_empty()))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_stats() {
        let s = Stats::parse(
            b"---\ncurrent-jobs-ready: 3\ncurrent-jobs-buried: 0\nmax-job-size: 65535\nversion: \"1.12\"\ndraining: false\n",
        )
        .unwrap();
        assert_eq!(s.current_jobs_ready(), Some(3));
        assert_eq!(s.current_jobs_buried(), Some(0));
        assert_eq!(s.max_job_size(), Some(65535));
        assert_eq!(s.get("version"), Some("1.12"));
        assert_eq!(s.get("draining"), Some("false"));
        assert_eq!(s.current_jobs_delayed(), None);
    }

    #[test]
    fn job_stats() {
        let s = Stats::parse(b"---\nid: 1\ntube: mail.out\nstate: ready\npri: 100\nage: 5\nreserves: 2\nreleases: 1\n").unwrap();
        assert_eq!(s.id(), Some(1));
        assert_eq!(s.tube(), Some("mail.out"));
        assert_eq!(s.state(), Some("ready"));
        assert_eq!(s.pri(), Some(100));
        assert_eq!(s.age(), Some(5));
        assert_eq!(s.reserves(), Some(2));
        assert_eq!(s.releases(), Some(1));
    }

    #[test]
    fn lists() {
        let tubes = parse_list((b"---\n- default\n- a(b)\n").as_slice()).unwrap();
        assert_eq!(tubes, vec!["default", "a(b)"]);
        assert!(parse_list((b"---\nx\n").as_slice()).is_err());
        assert!(parse_list((b"- x\n").as_slice()).is_err());
        assert!(Stats::parse(b"---\nnocolon\n").is_err());
        assert!(Stats::parse(b"---\n\xff: 1\n").is_err());
    }
}
