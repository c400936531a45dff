//! Bounded label values for `prometheus-client` metrics.
//!
//! A label value is a time series: one taken from a message (a sending host, a domain) must be
//! bounded, or whoever writes the messages decides how much memory `/metrics` takes.
//! [`HostLabels`] keeps the sending hosts the operator configured and puts every other host
//! under [`OTHER`].

use std::collections::HashSet;

/// The label value of every host (or domain) that has no label of its own.
pub const OTHER: &str = "other";

/// The sending hosts that get their own `host` label; any other host is [`OTHER`].
#[derive(Debug, Clone, Default)]
pub struct HostLabels {
    known: HashSet<String>,
}

impl HostLabels {
    /// Labels for these hosts (fqdns, compared without regard to case).
    pub fn new<I, S>(hosts: I) -> HostLabels
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        HostLabels {
            known: hosts
                .into_iter()
                .map(|h| h.as_ref().trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// The label value for `host`: its lowercase name when configured, else [`OTHER`].
    pub fn label(&self, host: &str) -> String {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.known.contains(&host) {
            host
        } else {
            OTHER.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_hosts_get_a_label() {
        let labels = HostLabels::new(["Web1.Example.com", "web2.example.com.", " "]);
        assert_eq!(labels.label("web1.example.com"), "web1.example.com");
        assert_eq!(labels.label("WEB2.example.com"), "web2.example.com");
        assert_eq!(labels.label("web3.example.com"), OTHER);
        assert_eq!(labels.label("\"}\n evil"), OTHER);
        assert_eq!(labels.label(""), OTHER);
        assert_eq!(HostLabels::default().label("web1.example.com"), OTHER);
    }
}
