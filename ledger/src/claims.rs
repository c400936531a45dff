//! The duplicate-id window kept in the store, so that the post offices sharing one store
//! recognise a mailman retry that reaches another post office than the first post did
//! (docs/ledger.md, "The shared duplicate-id window").
//!
//! A post office *claims* a (sending host, mailman message id) before it queues the message:
//! one statement inserts the claim, or takes over a claim that is past the window, left
//! pending by a claimer gone silent (`stale_after`), or left pending by this same claimer
//! (which no longer queues it: its own in-process window would have said so). Exactly one of
//! several concurrent claimers wins: the insert and the takeover are one atomic upsert on the
//! primary key. The winner queues the message and then [`Store::complete_claim`]s it with the
//! queue id, or [`Store::release_claim`]s it when queueing failed. The others read the row:
//! queued (answer with its queue id) or still pending (wait and claim again).
//!
//! Times are Unix milliseconds from the claimers' clocks (the same SQL runs on both stores,
//! and their clock functions differ); a few seconds of skew are nothing next to the window.
//!
//! Not here: when a post office asks, the fallback to its own window when the store is down or
//! slow (`postoffice::ledger::claims`).

use std::time::Duration;

use sqlx::Row;

use crate::error::StoreError;
use crate::store::Store;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The claimer holds the id now: queue the message, then complete or release the claim.
    Won,
    /// The message is queued already, under this queue id.
    Queued(String),
    /// Another claimer is queueing it now: ask again a little later.
    Pending {
        /// Who holds the claim.
        claimed_by: String,
        /// Since when (Unix ms).
        claimed_at: u64,
    },
}

/// A claim's row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    pub host: String,
    pub message_id: String,
    /// The queue id; `None` while the claimer queues the message.
    pub queue_id: Option<String>,
    /// Unix ms.
    pub claimed_at: u64,
    pub claimed_by: String,
}

/// The limits of one claim: what counts as gone from the window, and as abandoned.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// Claims older than this are forgotten (the post office's `duplicate_window`).
    pub window: Duration,
    /// A claim still pending this long after it was made was abandoned (its claimer died
    /// between claiming and queueing): another claimer takes it over.
    pub stale_after: Duration,
}

/// Inserts the claim, or takes over one that is expired, abandoned, or the claimer's own
/// pending one. Returns the claimer on success (one row), nothing otherwise.
const CLAIM: &str = "INSERT INTO claims (host, message_id, queue_id, claimed_at, claimed_by) \
     VALUES ($1, $2, NULL, $3, $4) \
     ON CONFLICT (host, message_id) DO UPDATE SET queue_id = NULL, \
     claimed_at = excluded.claimed_at, claimed_by = excluded.claimed_by \
     WHERE claims.claimed_at < $5 \
     OR (claims.queue_id IS NULL AND (claims.claimed_by = excluded.claimed_by \
     OR claims.claimed_at < $6)) \
     RETURNING claimed_by";

/// Completes the claimer's pending claim, or inserts a completed one where there is none.
const COMPLETE: &str = "INSERT INTO claims (host, message_id, queue_id, claimed_at, claimed_by) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (host, message_id) DO UPDATE SET queue_id = excluded.queue_id \
     WHERE claims.claimed_by = excluded.claimed_by AND claims.queue_id IS NULL";

const READ: &str = "SELECT host, message_id, queue_id, claimed_at, claimed_by FROM claims \
     WHERE host = $1 AND message_id = $2";

/// Rows deleted per statement by [`Store::prune_claims`].
const PRUNE: &str = "DELETE FROM claims WHERE (host, message_id) IN (SELECT host, message_id \
     FROM claims WHERE claimed_at < $1 ORDER BY claimed_at LIMIT $2)";

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn before(now: u64, d: Duration) -> i64 {
    ms(now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

impl Store {
    /// Claims `(host, message_id)` for `claimer` at `now` (Unix ms). See the module docs.
    pub async fn claim(
        &self,
        host: &str,
        message_id: &str,
        claimer: &str,
        now: u64,
        limits: ClaimLimits,
    ) -> Result<Claimed, StoreError> {
        // A claim released between our insert and our read is claimed again; twice more at
        // most, then reported as pending (the caller asks again).
        for _ in 0..3 {
            let won = sqlx::query(CLAIM)
                .bind(host.to_owned())
                .bind(message_id.to_owned())
                .bind(ms(now))
                .bind(claimer.to_owned())
                .bind(before(now, limits.window))
                .bind(before(now, limits.stale_after))
                .fetch_optional(&self.pool)
                .await?;
            if won.is_some() {
                return Ok(Claimed::Won);
            }
            match self.claimed(host, message_id).await? {
                Some(ClaimRow {
                    queue_id: Some(queue_id),
                    ..
                }) => return Ok(Claimed::Queued(queue_id)),
                Some(row) => {
                    return Ok(Claimed::Pending {
                        claimed_by: row.claimed_by,
                        claimed_at: row.claimed_at,
                    })
                }
                None => continue,
            }
        }
        Ok(Claimed::Pending {
            claimed_by: String::new(),
            claimed_at: now,
        })
    }

    /// Records the queue id of `claimer`'s pending claim, or, when there is no claim (its
    /// claim statement timed out before it was carried out, or was never sent), a completed
    /// claim made at `now`. `false`: another claimer holds the id, or it is completed already.
    pub async fn complete_claim(
        &self,
        host: &str,
        message_id: &str,
        claimer: &str,
        queue_id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(COMPLETE)
            .bind(host.to_owned())
            .bind(message_id.to_owned())
            .bind(queue_id.to_owned())
            .bind(ms(now))
            .bind(claimer.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes `claimer`'s pending claim (queueing failed: the sender's retry must be
    /// queued). `false`: there was none.
    pub async fn release_claim(
        &self,
        host: &str,
        message_id: &str,
        claimer: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM claims WHERE host = $1 AND message_id = $2 AND claimed_by = $3 \
             AND queue_id IS NULL",
        )
        .bind(host.to_owned())
        .bind(message_id.to_owned())
        .bind(claimer.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The claim of `(host, message_id)`, if any.
    pub async fn claimed(
        &self,
        host: &str,
        message_id: &str,
    ) -> Result<Option<ClaimRow>, StoreError> {
        let row = sqlx::query(READ)
            .bind(host.to_owned())
            .bind(message_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(ClaimRow {
                host: row.try_get(0)?,
                message_id: row.try_get(1)?,
                queue_id: row.try_get(2)?,
                claimed_at: u64::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
                claimed_by: row.try_get(4)?,
            })
        })
        .transpose()
    }

    /// Deletes claims made before `older_than` (Unix ms), `batch` per statement; returns how
    /// many. Claims past the window are ignored by [`Store::claim`] anyway: this only keeps
    /// the table small.
    pub async fn prune_claims(&self, older_than: u64, batch: u32) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        let mut total = 0;
        // Bounded: a table of claims made faster than they are pruned is pruned again on the
        // next call.
        for _ in 0..1000 {
            let deleted = sqlx::query(PRUNE)
                .bind(ms(older_than))
                .bind(i64::from(batch))
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < u64::from(batch) {
                break;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_saturate() {
        assert_eq!(before(10_000, Duration::from_secs(3)), 7_000);
        assert_eq!(before(1_000, Duration::from_secs(3)), 0);
        assert_eq!(ms(u64::MAX), i64::MAX);
    }
}
