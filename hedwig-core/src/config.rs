//! Configuration loading shared by the binaries.
//!
//! Each binary has one serde struct with defaults. [`load`] layers, lowest first: the struct's
//! defaults, the YAML file (if given), then environment variables `HEDWIG_<KEY>` (nested keys
//! joined with `__`, e.g. `HEDWIG_RATE_LIMIT__PER_MINUTE=60`). Only variables naming a top-level
//! key of that binary's config are read, so `HEDWIG_SECRET` meant for `keygen` does not upset
//! the worker. Unknown keys in a file are errors (binaries use `#[serde(deny_unknown_fields)]`),
//! and every error is reported at once, each with the key and where its value came from.
//!
//! Also the small shared pieces of the binaries' configs: [`OneOrMany`] with [`one_or_many`]
//! and [`comma_list`] (a key given as one value or a list; [`split_list`] its split of one
//! string), [`ByteSize`], [`read_secret`],
//! [`check_host_port`]. Each binary turns its config into checked, typed settings
//! (`check() -> Settings`) once at start.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Yaml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "HEDWIG_";

/// Configuration that could not be loaded: every problem found, one per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Loads `T` from its defaults, the YAML file at `path`, and `HEDWIG_…` variables.
pub fn load<T>(path: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_from_env(path, std::env::vars())
}

/// [`load`] with the environment given explicitly (for tests).
pub fn load_from_env<T, I, K, V>(path: Option<&Path>, vars: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let defaults = T::default();
    let known: Vec<String> = match serde_json::to_value(&defaults) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = path {
        // Figment silently ignores a missing file; a named file that cannot be read is an error.
        std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        figment = figment.merge(Yaml::file_exact(path));
    }
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let (k, v): (String, String) = (k.into(), v.into());
            let key = k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            let top = key.split("__").next().unwrap_or_default();
            known.iter().any(|k| k == top).then_some((key, v))
        })
        .collect();
    // Values are parsed the way figment's Env provider parses them ("5" is a number,
    // "[a, b]" a list); the snapshot is explicit so tests need not touch the process env.
    for (key, value) in vars {
        // Lists and maps ("[a, b]", "{k: v}") are parsed; scalars stay strings so that a key
        // of digits keeps its leading zeros, and `extract_lossy` turns "5" or "true" into a
        // number or bool only where the field is one.
        let value = match value.parse::<figment::value::Value>() {
            Ok(parsed @ (figment::value::Value::Array(..) | figment::value::Value::Dict(..))) => {
                parsed
            }
            _ => figment::value::Value::from(value),
        };
        figment = figment.merge(Serialized::global(&key.replace("__", "."), value));
    }
    figment
        .extract_lossy()
        .map_err(|err| ConfigError::Invalid(err.into_iter().map(|e| describe(&e)).collect()))
}

fn describe(err: &figment::Error) -> String {
    let key = if err.path.is_empty() {
        String::new()
    } else {
        format!("{}: ", err.path.join("."))
    };
    let origin = match &err.metadata {
        Some(meta) => match &meta.source {
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            _ if meta.name.contains("Serialized") || meta.name.contains("global") => {
                format!(
                    " (from {ENV_PREFIX}{})",
                    err.path.join("__").to_ascii_uppercase()
                )
            }
            _ => String::new(),
        },
        None => String::new(),
    };
    format!("{key}{}{origin}", err.kind)
}

/// A secret given inline or as a file (`*_file` keys): the file wins, surrounding whitespace is
/// dropped.
pub fn read_secret(inline: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(file) = file {
        return std::fs::read_to_string(file)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("cannot read secret file {}: {e}", file.display()));
    }
    Ok(inline
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// A secret setting `<key>` given inline (`secret`) or in a file (`secret_file`, which wins
/// and must not be readable by others when `require_safe_keys`), checked as the host-key
/// secret is (long enough); the problem names `key`.
pub fn checked_secret(
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
    require_safe_keys: bool,
) -> Result<String, String> {
    if let Some(path) = file {
        crate::keyfile::check("secret file", path, require_safe_keys)
            .map_err(|e| format!("{key}.secret_file: {e}"))?;
    }
    match read_secret(inline, file) {
        Ok(Some(s)) => crate::key::check_secret(&s)
            .map(str::to_owned)
            .map_err(|e| format!("{key}.secret: {e}")),
        Ok(None) => Err(format!("{key}.secret: not set (secret_file or secret)")),
        Err(e) => Err(format!("{key}.secret_file: {e}")),
    }
}

/// One value or a list of them: the single untagged shape every "string or list" key and
/// wire field is read through (see [`one_or_many`], [`comma_list`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    /// The values, in order.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(t) => vec![t],
        }
    }
}

/// `deserialize_with` for a list key that may also be given as one value.
pub fn one_or_many<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    OneOrMany::deserialize(de).map(OneOrMany::into_vec)
}

/// `deserialize_with` for a list of strings that may also be one string with commas, the way
/// an environment variable gives it (`HEDWIG_BEANSTALKD=a:11300, b:11300`): items trimmed,
/// empty ones dropped.
pub fn comma_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::<String>::deserialize(de)? {
        OneOrMany::One(s) => split_list(&s),
        OneOrMany::Many(v) => v,
    })
}

/// `a:11300, b:11300` -> `["a:11300", "b:11300"]`: items trimmed, empty ones dropped. The
/// split [`comma_list`] makes of one string, for values that come from elsewhere (a command
/// line option, an item of a list that may hold commas itself).
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks a `host:port` server address (beanstalkd): a non-empty host and a port number.
/// The host is resolved when connecting, so a name is fine.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!("{addr:?} is not host:port")),
    }
}

/// A number of bytes, written in configs as `25MB`, `64 KiB`, `1000` (bytes).
///
/// `K`/`M`/`G` and `KB`/`MB`/`GB` are powers of 1000, `KiB`/`MiB`/`GiB` powers of 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes as a usize (saturating on 32-bit targets).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size (try 25MB, 64KiB or 1000)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit (B, KB, MB, GB, KiB, MiB, GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        listen: String,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        max_size: ByteSize,
        hosts: Vec<String>,
        limits: Limits,
        key: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        per_minute: u32,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits { per_minute: 60 }
        }
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                listen: "127.0.0.1:8025".into(),
                timeout: Duration::from_secs(30),
                max_size: ByteSize(25_000_000),
                hosts: vec![],
                limits: Limits::default(),
                key: String::new(),
            }
        }
    }

    #[test]
    fn defaults_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "timeout: 5m\nmax_size: 10MiB\nhosts: [a, b]\n").unwrap();
        let c: Sample = load_from_env(
            Some(&path),
            [
                ("HEDWIG_LISTEN", "0.0.0.0:80"),
                ("HEDWIG_LIMITS__PER_MINUTE", "5"),
                ("HEDWIG_SECRET", "ignored: not a key of Sample"),
                ("HEDWIG_KEY", "000123"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:80");
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.max_size, ByteSize(10 << 20));
        assert_eq!(c.hosts, vec!["a", "b"]);
        assert_eq!(c.limits.per_minute, 5);
        assert_eq!(c.key, "000123", "digits stay a string");
        let d: Sample = load_from_env(None, [("", ""); 0]).unwrap();
        assert_eq!(d, Sample::default());
    }

    #[test]
    fn all_errors_reported_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "timeout: soon\nmax_size: 3 parsecs\nbogus: 1\n").unwrap();
        let err = load_from_env::<Sample, _, _, _>(Some(&path), [("", ""); 0]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("timeout"), "{text}");
        assert!(text.contains("bogus"), "{text}");
        let missing =
            load_from_env::<Sample, _, _, _>(Some(&dir.path().join("nope.yaml")), [("", ""); 0]);
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
        let bad_env =
            load_from_env::<Sample, _, _, _>(None, [("HEDWIG_TIMEOUT", "never")]).unwrap_err();
        assert!(bad_env.to_string().contains("timeout"), "{bad_env}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("25MB".parse::<ByteSize>(), Ok(ByteSize(25_000_000)));
        assert_eq!("64 KiB".parse::<ByteSize>(), Ok(ByteSize(65_536)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("MB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "  sekrit\n").unwrap();
        assert_eq!(
            read_secret(Some("inline"), Some(&f)),
            Ok(Some("sekrit".into()))
        );
        assert_eq!(
            read_secret(Some(" inline "), None),
            Ok(Some("inline".into()))
        );
        assert_eq!(read_secret(Some(""), None), Ok(None));
        assert!(read_secret(None, Some(&dir.path().join("missing"))).is_err());
    }

    #[derive(Debug, Deserialize)]
    struct Lists {
        #[serde(deserialize_with = "one_or_many", default)]
        ports: Vec<u16>,
        #[serde(deserialize_with = "comma_list", default)]
        servers: Vec<String>,
    }

    #[test]
    fn one_value_or_a_list() {
        let l: Lists = serde_json::from_str(r#"{"ports": 25, "servers": "a:1, b:2,"}"#).unwrap();
        assert_eq!(l.ports, [25]);
        assert_eq!(l.servers, ["a:1", "b:2"]);
        let l: Lists = serde_json::from_str(r#"{"ports": [25, 587], "servers": ["a,1"]}"#).unwrap();
        assert_eq!(l.ports, [25, 587]);
        assert_eq!(l.servers, ["a,1"], "a list is taken as it is");
        assert!(serde_json::from_str::<Lists>(r#"{"ports": "x"}"#).is_err());
        assert_eq!(split_list(" a:1 ,, b:2 "), ["a:1", "b:2"]);
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn host_port() {
        assert!(check_host_port("beanstalkd:11300").is_ok());
        assert!(check_host_port("[::1]:11300").is_ok());
        for bad in ["nohost", ":11300", "h:port", "h:70000", "a b:1"] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
