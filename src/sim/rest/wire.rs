//! The restJson1 conventions every operation shares: the AWS error shape (`X-Amzn-ErrorType`
//! header plus `{"__type","Message"}` body) and its codes, the OK answer, the per-call frame
//! (count, injected fault, run), and reading requests (bearer token, JSON body, length rules).

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::sim::model::chat::Denied;
use crate::sim::model::operation::{FaultKind, Operation};
use crate::sim::model::registry::Shared;

/// An AWS error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// Participant-service bad request.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }

    /// Connect-service bad parameter value.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            message,
        )
    }

    /// Connect-service malformed or inconsistent request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequestException", message)
    }

    pub fn quota(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "ServiceQuotaExceededException",
            message,
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ConflictException", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// The error an injected fault produces for that operation.
    pub fn fault(op: Operation, kind: FaultKind) -> Self {
        match (kind, op.is_connect_service()) {
            (FaultKind::Throttling, _) => Self::new(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "Rate exceeded"),
            (FaultKind::InternalServer, true) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServiceException",
                "Request processing failed because of an error or failure with the service",
            ),
            (FaultKind::InternalServer, false) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                "This exception occurs when there is an internal failure in the Amazon Connect service",
            ),
            (FaultKind::AccessDenied, _) => Self::access_denied("You do not have sufficient access to perform this action"),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        ApiError::access_denied(d.0)
    }
}

fn request_id() -> (HeaderName, HeaderValue) {
    let id = uuid::Uuid::new_v4().to_string();
    (
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0")),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.code, "Message": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(self.code),
        );
        let (name, value) = request_id();
        headers.insert(name, value);
        resp
    }
}

pub fn ok(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (name, value) = request_id();
    headers.insert(name, value);
    resp
}

/// Count the call, apply a fault, run the operation.
pub fn run(
    shared: &Shared,
    op: Operation,
    f: impl FnOnce() -> Result<Value, ApiError>,
) -> Response {
    let _span = tracing::debug_span!("operation", name = op.name()).entered();
    if let Some(kind) = shared.begin(op) {
        return ApiError::fault(op, kind).into_response();
    }
    match f() {
        Ok(body) => ok(body),
        Err(err) => {
            tracing::debug!(code = err.code, message = %err.message, "operation failed");
            err.into_response()
        }
    }
}

/// `X-Amz-Bearer` (header names are case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-amz-bearer").and_then(|v| v.to_str().ok())
}

pub fn parse<T: DeserializeOwned>(body: &[u8], err: fn(String) -> ApiError) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| err(format!("Invalid request body: {e}")))
}

/// Length rule of the model, counted in characters.
pub fn check_len(name: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        if min == max {
            return Err(format!("{name} must be exactly {min} characters"));
        }
        return Err(format!("{name} must be between {min} and {max} characters"));
    }
    Ok(())
}

pub fn required<'a>(
    name: &str,
    value: &'a Option<String>,
    min: usize,
    max: usize,
) -> Result<&'a str, String> {
    let v = value
        .as_deref()
        .ok_or_else(|| format!("{name} is required"))?;
    check_len(name, v, min, max)?;
    Ok(v)
}

pub fn optional(name: &str, value: &Option<String>, min: usize, max: usize) -> Result<(), String> {
    match value {
        Some(v) => check_len(name, v, min, max),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn length_messages_name_the_member() {
        assert_eq!(
            check_len("Content", "", 1, 16384),
            Err("Content must be between 1 and 16384 characters".to_owned())
        );
        assert_eq!(
            check_len("SessionId", "x", 36, 36),
            Err("SessionId must be exactly 36 characters".to_owned())
        );
        assert_eq!(check_len("Content", "é", 1, 1), Ok(()));
    }

    #[test]
    fn empty_body_reads_as_empty_object() {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct ClientTokenOnly {
            client_token: Option<String>,
        }
        let r: ClientTokenOnly = parse(b"", ApiError::validation).unwrap();
        assert!(r.client_token.is_none());
        assert!(parse::<ClientTokenOnly>(b"[1]", ApiError::validation).is_err());
    }

    #[test]
    fn faults_map_to_service_codes() {
        assert_eq!(
            ApiError::fault(Operation::StartChatContact, FaultKind::InternalServer).code,
            "InternalServiceException"
        );
        assert_eq!(
            ApiError::fault(Operation::SendMessage, FaultKind::InternalServer).code,
            "InternalServerException"
        );
        assert_eq!(
            ApiError::fault(Operation::SendMessage, FaultKind::Throttling).status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
