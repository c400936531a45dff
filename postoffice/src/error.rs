//! [`Reject`]: every non-200 answer, shown to the client as `{"error": "..."}`.
//!
//! Bad input is explained to the client; internal causes (a beanstalkd error) are logged with
//! their cause and shown only as "queue unavailable".

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hedwig_core::wire::Rejected;

/// A refused request.
#[derive(Debug)]
pub struct Reject {
    pub status: StatusCode,
    pub message: String,
    /// The host the request claimed to be (for the log; not proof of anything).
    pub host: Option<String>,
    /// The sender's message id, when it sent one.
    pub message_id: Option<String>,
}

impl Reject {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Reject {
        Reject {
            status,
            message: message.into(),
            host: None,
            message_id: None,
        }
    }

    /// Adds what the request claimed, for the log line.
    pub fn about(mut self, host: String, message_id: Option<String>) -> Reject {
        self.host = Some(host);
        self.message_id = message_id;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Reject {
        Reject::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 with no hint whether the host or the key was wrong.
    pub fn unauthorized() -> Reject {
        Reject::new(StatusCode::UNAUTHORIZED, "unknown host or wrong key")
    }

    pub fn unavailable() -> Reject {
        Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue unavailable: nothing was queued, retry later",
        )
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(Rejected {
                error: self.message,
            }),
        )
            .into_response()
    }
}
