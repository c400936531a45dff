//! Reading a request body with a size limit enforced while reading, a time limit, and byte
//! budgets: every body's bytes count against `max_bytes_in_flight`, an unsigned body's also
//! against the small `unauthenticated_bytes_in_flight` share. A signed (authenticated) body
//! waits for room; an unsigned one that does not fit is refused at once (503), so unsigned
//! traffic can neither fill the memory nor make a signed post wait.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::Reject;

/// The byte budgets a body is read under.
pub enum Budget<'a> {
    /// A signed request: waits for room in the global budget.
    Authenticated { total: &'a Arc<Semaphore> },
    /// An unsigned request: takes room in its own share and in the global budget, or is
    /// refused.
    Unauthenticated {
        total: &'a Arc<Semaphore>,
        share: &'a Arc<Semaphore>,
    },
}

/// A body read into memory. It holds its bytes' share of the budgets until dropped.
pub struct ReadBody {
    pub bytes: Vec<u8>,
    permits: Vec<OwnedSemaphorePermit>,
}

impl ReadBody {
    /// Keeps the budget taken while the body's contents live on in another form.
    pub fn into_permits(self) -> Vec<OwnedSemaphorePermit> {
        self.permits
    }
}

fn busy() -> Reject {
    Reject::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many unsigned posts in progress; retry later (signed posts are not limited by this)",
    )
}

/// Reads the whole body, refusing it (413) as soon as it passes `limit`.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    budget: Budget<'_>,
) -> Result<ReadBody, Reject> {
    let too_large = || {
        Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let collect = async {
        let mut body = body;
        let mut out = Vec::new();
        let mut permits = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Reject::bad_request(format!("the request body could not be read: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if out.len() + data.len() > limit {
                return Err(too_large());
            }
            let n = u32::try_from(data.len()).map_err(|_| too_large())?;
            if n > 0 {
                take(&budget, n, &mut permits).await?;
            }
            out.extend_from_slice(&data);
        }
        Ok(ReadBody {
            bytes: out,
            permits,
        })
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(result) => result,
        Err(_) => Err(Reject::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {timeout:?}"),
        )),
    }
}

async fn take(
    budget: &Budget<'_>,
    n: u32,
    permits: &mut Vec<OwnedSemaphorePermit>,
) -> Result<(), Reject> {
    let closed = || Reject::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    match budget {
        Budget::Authenticated { total } => {
            let permit = Arc::clone(total)
                .acquire_many_owned(n)
                .await
                .map_err(|_| closed())?;
            keep(permits, permit);
        }
        Budget::Unauthenticated { total, share } => {
            for semaphore in [share, total] {
                match Arc::clone(semaphore).try_acquire_many_owned(n) {
                    Ok(permit) => keep(permits, permit),
                    Err(TryAcquireError::NoPermits) => return Err(busy()),
                    Err(TryAcquireError::Closed) => return Err(closed()),
                }
            }
        }
    }
    Ok(())
}

/// Adds `permit` to the one already held from its semaphore (one permit per budget, however
/// many frames the body came in).
fn keep(permits: &mut Vec<OwnedSemaphorePermit>, permit: OwnedSemaphorePermit) {
    match permits
        .iter_mut()
        .find(|p| Arc::ptr_eq(p.semaphore(), permit.semaphore()))
    {
        Some(held) => held.merge(permit),
        None => permits.push(permit),
    }
}
