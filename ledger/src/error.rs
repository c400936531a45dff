//! [`StoreError`]: the crate's one error type, and the one place that decides whether a
//! failure means "the store is unavailable, try again later" ([`StoreError::is_unavailable`]).

/// What can go wrong with the store.
///
/// The variants that wrap a `sqlx::Error` print it in their message and do not also give it
/// as `source()`: a chain printer (`anyhow`'s `{:#}`) would print the database's words twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no store this build knows (`sqlite://PATH` or `postgres://...`).
    #[error("ledger store URL {0:?}: expected sqlite://PATH or postgres://USER@HOST/DATABASE")]
    Url(String),
    /// The store cannot take or answer requests now: connection refused or lost, server
    /// shutting down, disk full, read-only file system, database locked for too long, pool
    /// exhausted. Nothing was written; the same call may succeed later.
    #[error("ledger store unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The database holds a schema newer than this build knows (a newer hedwig migrated it).
    #[error("ledger store has schema version {found}; this build knows up to {known}")]
    Schema {
        /// The version in `schema_version`.
        found: i64,
        /// The newest version this build can migrate to.
        known: i64,
    },
    /// A stored row this build cannot read (e.g. an event's JSON).
    #[error("ledger store holds a row this build cannot read: {0}")]
    Corrupt(String),
    /// Any other database error (a bug, or a database that was changed by hand).
    #[error("ledger store error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// Whether this is [`StoreError::Unavailable`]: the caller should wait and retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLite primary result codes that mean "not now" rather than "wrong".
const SQLITE_UNAVAILABLE: [i64; 7] = [
    5,  // SQLITE_BUSY
    6,  // SQLITE_LOCKED
    8,  // SQLITE_READONLY (read-only file or directory)
    10, // SQLITE_IOERR
    13, // SQLITE_FULL (disk full)
    14, // SQLITE_CANTOPEN
    15, // SQLITE_PROTOCOL
];

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if unavailable(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// Whether `e` says the store is down, full or unreachable (as opposed to a bad query).
fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if let Ok(sqlite) = code.parse::<i64>() {
                // SQLite: the extended code; its low byte is the primary code.
                return SQLITE_UNAVAILABLE.contains(&(sqlite & 0xff));
            }
            // PostgreSQL SQLSTATE: 08 connection exceptions, 53 insufficient resources (disk
            // full, out of memory, too many connections), 57P01-57P03 shutting down or
            // starting, 58 system (I/O) errors, 25006 read-only transaction, 40001/40P01
            // serialization failure and deadlock (retrying helps).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code.starts_with("58")
                || code == "25006"
                || code == "40001"
                || code == "40P01"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(StoreError::from(io).is_unavailable());
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
    }
}
