//! The names of hedwig's tubes, from one prefix.
//!
//! Every tier reads one setting, `tube_prefix` (default `hedwig`), and names its tubes from it
//! with [`Tubes::new`]:
//!
//! | tube | name | who puts | who reserves |
//! | --- | --- | --- | --- |
//! | [`Tube::Outbound`] | `<prefix>` | postoffice intake, worker (retries, bounces), `requeue`, `release` | workers |
//! | [`Tube::Failed`] | `<prefix>-failed` | workers (permanent failures) | admin commands only |
//! | [`Tube::Held`] | `<prefix>-held` | intake and workers, for held hosts | `release` only |
//! | [`Tube::Holds`] | `<prefix>-holds` | `hold` / `release` (one buried job: the hold list) | nobody (`peek-buried`) |
//! | [`Tube::Probe`] | `<prefix>-admin` | admin commands (a probe job, deleted at once) | nobody |
//! | [`Tube::Events`] | `<prefix>-events` | post office, workers, admin commands ([`crate::event`] batches) | the ledger writer |
//!
//! Not here: what a job body holds ([`crate::job`]), the hold list ([`crate::hold`]).

use std::fmt;

/// The default prefix, and so the name of the outbound tube.
pub const DEFAULT_PREFIX: &str = "hedwig";

/// The tube names under the default prefix, for tests and tools that look at a default
/// installation. Services take their names from a configured [`Tubes`].
pub const TUBE_OUTBOUND: &str = "hedwig";
/// See [`TUBE_OUTBOUND`].
pub const TUBE_FAILED: &str = "hedwig-failed";
/// See [`TUBE_OUTBOUND`].
pub const TUBE_HELD: &str = "hedwig-held";
/// See [`TUBE_OUTBOUND`].
pub const TUBE_HOLDS: &str = "hedwig-holds";

/// One of hedwig's tubes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tube {
    /// Messages to deliver (workers reserve from it).
    Outbound,
    /// Recipients that failed for good, with the reason; for operators.
    Failed,
    /// Mail of held hosts; no worker watches it.
    Held,
    /// The hold list: one buried job.
    Holds,
    /// The admin commands' probe job (learns the newest job id).
    Probe,
    /// Ledger events on their way to the store.
    Events,
}

impl Tube {
    /// What follows the prefix.
    fn suffix(self) -> &'static str {
        match self {
            Tube::Outbound => "",
            Tube::Failed => "-failed",
            Tube::Held => "-held",
            Tube::Holds => "-holds",
            Tube::Probe => "-admin",
            Tube::Events => "-events",
        }
    }
}

/// A prefix that does not make valid tube names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tube prefix {0:?}: beanstalkd tube names are 1 to 200 bytes of letters, digits and \
     -+/;.$_() (not starting with -), and the prefix gets up to 7 more"
)]
pub struct PrefixError(pub String);

/// The tube names of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tubes {
    outbound: String,
    failed: String,
    held: String,
    holds: String,
    probe: String,
    events: String,
}

impl Tubes {
    /// The names made from `prefix`; an error when any would not be a valid tube name.
    pub fn new(prefix: &str) -> Result<Tubes, PrefixError> {
        let name = |tube: Tube| {
            let name = format!("{prefix}{}", tube.suffix());
            beanstalk::proto::validate_tube(&name)
                .map(|()| name)
                .map_err(|_| PrefixError(prefix.to_owned()))
        };
        Ok(Tubes {
            outbound: name(Tube::Outbound)?,
            failed: name(Tube::Failed)?,
            held: name(Tube::Held)?,
            holds: name(Tube::Holds)?,
            probe: name(Tube::Probe)?,
            events: name(Tube::Events)?,
        })
    }

    /// The name of `tube`.
    pub fn name(&self, tube: Tube) -> &str {
        match tube {
            Tube::Outbound => &self.outbound,
            Tube::Failed => &self.failed,
            Tube::Held => &self.held,
            Tube::Holds => &self.holds,
            Tube::Probe => &self.probe,
            Tube::Events => &self.events,
        }
    }

    /// The prefix the names are made from (the outbound tube's name).
    pub fn prefix(&self) -> &str {
        &self.outbound
    }

    /// Messages to deliver.
    pub fn outbound(&self) -> &str {
        &self.outbound
    }

    /// Permanent failures.
    pub fn failed(&self) -> &str {
        &self.failed
    }

    /// Mail of held hosts.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// The hold list.
    pub fn holds(&self) -> &str {
        &self.holds
    }

    /// The admin probe.
    pub fn probe(&self) -> &str {
        &self.probe
    }

    /// Ledger events.
    pub fn events(&self) -> &str {
        &self.events
    }
}

impl Default for Tubes {
    fn default() -> Tubes {
        Tubes::new(DEFAULT_PREFIX).unwrap_or_else(|_| unreachable!("the default prefix is valid"))
    }
}

impl fmt::Display for Tubes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.outbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let t = Tubes::default();
        assert_eq!(
            [t.outbound(), t.failed(), t.held(), t.holds(), t.probe()],
            [
                TUBE_OUTBOUND,
                TUBE_FAILED,
                TUBE_HELD,
                TUBE_HOLDS,
                "hedwig-admin"
            ]
        );
        assert_eq!(t.name(Tube::Failed), TUBE_FAILED);
        assert_eq!(t.prefix(), DEFAULT_PREFIX);
    }

    #[test]
    fn prefix_makes_every_name() {
        let t = Tubes::new("acme.mail").unwrap();
        assert_eq!(t.outbound(), "acme.mail");
        assert_eq!(t.failed(), "acme.mail-failed");
        assert_eq!(t.held(), "acme.mail-held");
        assert_eq!(t.holds(), "acme.mail-holds");
        assert_eq!(t.events(), "acme.mail-events");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "-x", "a b", "a\nb", "ü", &"x".repeat(195)] {
            assert_eq!(Tubes::new(bad), Err(PrefixError(bad.to_owned())), "{bad:?}");
        }
        assert!(Tubes::new(&"x".repeat(193)).is_ok());
    }
}
