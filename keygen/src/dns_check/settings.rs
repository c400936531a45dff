//! Where `keygen dns` gets the keys and names to check: the worker's config file (its
//! `dkim:`, `hostname:` and `nameservers:` keys, with the worker's `HEDWIG_…` overrides), or
//! `--dkim-key domain:selector:keyfile` arguments.
//!
//! Keys are loaded with [`hedwig_message::dkim::Signer`], exactly as the worker loads them,
//! so a key the worker would refuse is refused here too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hedwig_message::dkim::{DkimConfig, DkimKey, KeyInfo, Signer};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The parts of the worker's config that `keygen dns` uses; other keys are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerSettings {
    pub dkim: DkimConfig,
    /// The worker's EHLO name.
    pub hostname: String,
    /// The worker's DNS servers (`ip` or `ip:port`).
    pub nameservers: Vec<String>,
}

/// Reads the worker config at `path` (YAML, plus `HEDWIG_DKIM…`, `HEDWIG_HOSTNAME`,
/// `HEDWIG_NAMESERVERS` from the environment, as the worker does).
pub fn load_worker_config(path: &Path) -> Result<WorkerSettings, Error> {
    hedwig_core::config::load(Some(path))
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Parses `--dkim-key domain:selector:keyfile` (the key file may contain `:`).
pub fn parse_key_arg(arg: &str) -> Result<DkimKey, Error> {
    let mut parts = arg.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(domain), Some(selector), Some(file))
            if !domain.is_empty() && !selector.is_empty() && !file.is_empty() =>
        {
            Ok(DkimKey {
                domain: domain.to_string(),
                selector: selector.to_string(),
                algorithm: None,
                key_file: PathBuf::from(file),
            })
        }
        _ => Err(Error::Config(format!(
            "--dkim-key {arg:?}: expected domain:selector:keyfile"
        ))),
    }
}

/// Loads every key of `config` (all problems at once) and returns what each must publish.
pub fn load_keys(config: &DkimConfig) -> Result<Vec<KeyInfo>, Error> {
    let config = DkimConfig {
        // The default domain only matters when signing.
        default_domain: None,
        ..config.clone()
    };
    Ok(Signer::new(&config)?.keys())
}

/// A nameserver as `ip`, `ip:port` or `[ipv6]:port`; the port defaults to 53
/// ([`hedwig_dns::parse_nameserver`], as the worker reads its `nameservers`).
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, Error> {
    hedwig_dns::parse_nameserver(s).map_err(|e| Error::Config(format!("nameserver {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_arguments_and_nameservers() {
        let key = parse_key_arg("example.com:s1:/etc/keys/a:b.pem").unwrap();
        assert_eq!(
            (key.domain.as_str(), key.selector.as_str()),
            ("example.com", "s1")
        );
        assert_eq!(key.key_file, PathBuf::from("/etc/keys/a:b.pem"));
        for bad in ["example.com", "example.com:s1", "example.com::x", ":s:x"] {
            assert!(parse_key_arg(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_nameserver("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_nameserver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(parse_nameserver("dns.example").is_err());
    }

    #[test]
    fn worker_config_keys_load_like_the_worker_loads_them() {
        let dir = tempfile::tempdir().unwrap();
        let generated =
            hedwig_message::dkim::generate(hedwig_message::dkim::Algorithm::Ed25519).unwrap();
        let key_file = dir.path().join("k.pem");
        std::fs::write(&key_file, &generated.private_pem).unwrap();
        let config = dir.path().join("worker.yaml");
        std::fs::write(
            &config,
            format!(
                "concurrency: 4\nhostname: mail.example.com\nnameservers: [\"127.0.0.1:5353\"]\n\
                 dkim:\n  keys:\n    - {{ domain: Example.com, selector: s1, key_file: {} }}\n",
                key_file.display()
            ),
        )
        .unwrap();
        let settings = load_worker_config(&config).unwrap();
        assert_eq!(settings.hostname, "mail.example.com");
        assert_eq!(settings.nameservers, ["127.0.0.1:5353"]);
        let keys = load_keys(&settings.dkim).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].domain, "example.com");
        assert_eq!(keys[0].txt, generated.txt);

        assert!(load_worker_config(&dir.path().join("missing.yaml")).is_err());
        let broken = DkimConfig {
            keys: vec![parse_key_arg("example.com:s1:/nonexistent.pem").unwrap()],
            default_domain: None,
        };
        assert!(load_keys(&broken)
            .unwrap_err()
            .to_string()
            .contains("nonexistent"));
    }
}
