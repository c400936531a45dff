//! What every hedwig tier shares.
//!
//! Layout:
//! - [`wire`]: the mailman → postoffice HTTP protocol (compatible with the original Python
//!   hedwig): the `fqdn`/`key`/`email` submission and the JSON answers.
//! - [`key`]: host keys, `hex(HMAC-SHA256(secret, lowercase(fqdn)))`, checked in constant time.
//! - [`address`]: RFC 5321 / RFC 6531 mailbox syntax (UTF-8 local parts, IDN domains), and
//!   [`Recipient`](address::Recipient), a job's recipient: its text and its mailbox, parsed once.
//! - [`from`]: the From: fields of a raw message (count, addresses, domains).
//! - [`summary`]: what the delivery ledger keeps of a message's header block (Message-ID,
//!   decoded Subject, the client address in mailman's `Received:` field).
//! - [`config`]: YAML files with `HEDWIG_…` environment overrides, byte sizes, secrets from files,
//!   the "one value or a list" helpers, `host:port` checks.
//! - [`list_id`]: the `List-Id:` of a message (RFC 2919), for list-scoped suppression.
//! - [`keyfile`]: key files readable by their owner only (warn, or refuse with
//!   `require_safe_keys`).
//!
//! Nothing here does network I/O. Not here: the queue schema (tube names, the job format, the
//! hold list), in the `hedwig-queue` crate.

pub mod address;
pub mod config;
pub mod from;
pub mod key;
pub mod keyfile;
pub mod list_id;
pub mod signing;
pub mod summary;
pub mod unsubscribe;
pub mod verp;
pub mod wire;

/// A new queue id: 12 hex digits of milliseconds since the epoch, then 12 random hex digits.
///
/// Sorts by time, and is unique enough that two postoffices never collide in practice
/// (48 random bits per millisecond).
pub fn new_queue_id() -> String {
    use rand::Rng;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random: u64 = rand::thread_rng().gen::<u64>() & 0xFFFF_FFFF_FFFF;
    format!("{millis:012X}{random:012X}")
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_ids_are_unique_and_sortable() {
        let a = super::new_queue_id();
        let b = super::new_queue_id();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
