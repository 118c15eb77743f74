//! The one place errors become HTTP responses: OpenAI-shaped JSON with the right status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use trestle_core::openai::{ErrorBody, ErrorDetail};

/// Every way a request can fail, each with a message that says what to fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request body or a parameter is wrong.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    #[error("{message}")]
    NotFound { message: String, code: &'static str },
    #[error(
        "request body is {size} bytes, over the limit of {limit} bytes (server.max_body_bytes)"
    )]
    PayloadTooLarge { size: usize, limit: usize },
    #[error(
        "the request body did not arrive within {timeout_ms} ms (server.body_read_timeout_ms); send it at once"
    )]
    RequestTimeout { timeout_ms: u64 },
    /// An upstream refused the request itself (its 400/422), relayed with its message.
    #[error("{message}")]
    UpstreamRejected { status: u16, message: String },
    /// Every target failed; `timed_out` picks 504 over 502.
    #[error("{message}")]
    UpstreamFailed { message: String, timed_out: bool },
    /// No target could take the request (breakers open, cooling down, at capacity).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unsupported(String),
    /// A guardrail blocked the request (`input`) or the answer.
    #[error("{message}")]
    Blocked {
        guardrail: String,
        input: bool,
        message: String,
    },
    #[error("the gateway is shutting down; retry against another instance")]
    ShuttingDown,
    /// No key, or one that is malformed, unknown, revoked or expired (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid key that may not do this: a route outside its list, an admin endpoint (403).
    #[error("{message}")]
    Forbidden { message: String, code: &'static str },
    /// A key's requests or tokens per minute are used up (429 with `Retry-After`).
    #[error("{message}")]
    RateLimited { message: String, retry_after_s: u64 },
    /// A key's spending budget for the period is used up (429 until `reset_at`).
    #[error("{message}")]
    BudgetExceeded {
        message: String,
        retry_after_s: u64,
        reset_at: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_string),
            code: "invalid_request",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest { .. } | GatewayError::Unsupported(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::NotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::Blocked { input: true, .. } => StatusCode::BAD_REQUEST,
            GatewayError::Blocked { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UpstreamRejected { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            GatewayError::UpstreamFailed {
                timed_out: true, ..
            } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::ShuttingDown | GatewayError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } | GatewayError::BudgetExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// The OpenAI `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::RequestTimeout { .. }
            | GatewayError::UpstreamRejected { .. }
            | GatewayError::Unsupported(_) => "invalid_request_error",
            GatewayError::NotFound { .. } => "not_found_error",
            GatewayError::Blocked { input: true, .. } => "invalid_request_error",
            GatewayError::Blocked { .. } => "guardrail_error",
            GatewayError::UpstreamFailed { .. } | GatewayError::Unavailable(_) => "upstream_error",
            GatewayError::ShuttingDown => "service_unavailable",
            GatewayError::Internal(_) => "server_error",
            GatewayError::Unauthorized(_) => "authentication_error",
            GatewayError::Forbidden { .. } => "permission_error",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::BudgetExceeded { .. } => "budget_exceeded",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { code, .. } | GatewayError::NotFound { code, .. } => code,
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::RequestTimeout { .. } => "request_timeout",
            GatewayError::UpstreamRejected { .. } => "upstream_rejected",
            GatewayError::UpstreamFailed {
                timed_out: true, ..
            } => "upstream_timeout",
            GatewayError::UpstreamFailed { .. } => "upstream_failed",
            GatewayError::Unavailable(_) => "targets_unavailable",
            GatewayError::Unsupported(_) => "unsupported",
            GatewayError::Blocked { .. } => "guardrail_blocked",
            GatewayError::ShuttingDown => "shutting_down",
            GatewayError::Internal(_) => "internal_error",
            GatewayError::Unauthorized(_) => "invalid_api_key",
            GatewayError::Forbidden { code, .. } => code,
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::BudgetExceeded { .. } => "budget_exceeded",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.kind().to_string(),
                code: Some(self.code().to_string()),
                param: match self {
                    GatewayError::InvalidRequest { param, .. } => param.clone(),
                    _ => None,
                },
            },
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            GatewayError::RateLimited { retry_after_s, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            GatewayError::BudgetExceeded {
                retry_after_s,
                reset_at,
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
                if let Ok(v) = HeaderValue::from_str(reset_at) {
                    headers.insert("x-trestle-budget-reset", v);
                }
            }
            GatewayError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"trestle\""),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_status_and_shape() {
        let e = GatewayError::invalid("messages: missing field", Some("messages"));
        assert_eq!(e.status(), 400);
        let body = serde_json::to_value(e.body()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "messages");
        let e = GatewayError::UpstreamFailed {
            message: "x".into(),
            timed_out: true,
        };
        assert_eq!(e.status(), 504);
        assert_eq!(
            GatewayError::PayloadTooLarge { size: 2, limit: 1 }.status(),
            413
        );
    }
}
