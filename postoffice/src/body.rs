//! Reading a request body with a size limit enforced while reading, a time limit, and a cap on
//! how many large bodies are held in memory at once.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Reject;

/// Bodies above this size need one of the "large body" permits.
pub const LARGE_BODY: usize = 1 << 20;

/// A body read into memory. A large one holds its permit until dropped, so the cap covers the
/// whole time the request keeps the bytes, not just the reading.
pub struct ReadBody {
    pub bytes: Vec<u8>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Reads the whole body, refusing it (413) as soon as it passes `limit`.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    large_permits: &Arc<Semaphore>,
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
        let mut out = Vec::with_capacity(declared.map_or(0, |l| l as usize).min(LARGE_BODY));
        let mut permit = None;
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
            if permit.is_none() && out.len() + data.len() > LARGE_BODY {
                permit =
                    Some(large_permits.clone().acquire_owned().await.map_err(|_| {
                        Reject::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                    })?);
            }
            out.extend_from_slice(&data);
        }
        Ok(ReadBody {
            bytes: out,
            _permit: permit,
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
