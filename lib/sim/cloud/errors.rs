//! Outscale-style API errors: `{"Errors":[{"Code","Type","Details"}],"ResponseContext":{"RequestId"}}`
//! with an HTTP status.
//!
//! Codes taken from Outscale's published error list: 1 (authentication failed, 401), 2 (method
//! not allowed, 405), 6 (platform throttling, 503), 24/25 (account/call throttling, 429), 4105
//! (malformed id, 400). The others are the simulator's choice within Outscale's documented
//! *Types*; callers must branch on the HTTP status and `Type`, never on a code alone.
//! IncorrectState and ResourceConflict answer 409, which the official SDKs retry.

use serde_json::{json, Value};

/// One API error, rendered by [`ApiError::body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Outscale error code (a number as a string).
    pub code: String,
    /// Outscale error type (`InvalidParameterValue`, `IncorrectState`…).
    pub kind: String,
    /// Human explanation naming the objects involved.
    pub details: String,
}

impl ApiError {
    /// Any error.
    pub fn new(status: u16, code: &str, kind: &str, details: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            kind: kind.into(),
            details: details.into(),
        }
    }

    /// A parameter has a value the call refuses.
    pub fn invalid_value(details: impl Into<String>) -> Self {
        Self::new(400, "4045", "InvalidParameterValue", details)
    }

    /// An id is not of the form its resource uses (`vol-…`, `i-…`).
    pub fn malformed_id(id: &str, what: &str) -> Self {
        Self::new(
            400,
            "4105",
            "InvalidParameterValue",
            format!("the {what} id '{id}' is malformed"),
        )
    }

    /// A required parameter is absent.
    pub fn missing(param: &str) -> Self {
        Self::new(
            400,
            "7000",
            "MissingParameter",
            format!("parameter '{param}' is required"),
        )
    }

    /// The request carries a parameter the call does not know (or the simulator does not
    /// implement: silently ignoring a filter would return too much).
    pub fn invalid_parameter(details: impl Into<String>) -> Self {
        Self::new(400, "3001", "InvalidParameter", details)
    }

    /// The named VM does not exist.
    pub fn no_such_vm(id: &str) -> Self {
        Self::new(
            400,
            "5063",
            "InvalidResource",
            format!("the VmId '{id}' does not exist"),
        )
    }

    /// The named volume does not exist.
    pub fn no_such_volume(id: &str) -> Self {
        Self::new(
            400,
            "5064",
            "InvalidResource",
            format!("the VolumeId '{id}' does not exist"),
        )
    }

    /// The resource is not in a state that allows the call.
    pub fn incorrect_state(details: impl Into<String>) -> Self {
        Self::new(409, "6003", "IncorrectState", details)
    }

    /// The call conflicts with another resource or an earlier call.
    pub fn conflict(details: impl Into<String>) -> Self {
        Self::new(409, "9058", "ResourceConflict", details)
    }

    /// A per-VM or per-resource limit is reached.
    pub fn too_many(details: impl Into<String>) -> Self {
        Self::new(400, "10023", "TooManyResources", details)
    }

    /// The call or option is valid Outscale but not simulated.
    pub fn not_supported(details: impl Into<String>) -> Self {
        Self::new(400, "8018", "OperationNotSupported", details)
    }

    /// Authentication failed (unknown key, bad signature, stale timestamp).
    pub fn auth(details: impl Into<String>) -> Self {
        Self::new(401, "1", "AccessDenied", details)
    }

    /// An internal failure (also the default injected fault).
    pub fn internal(details: impl Into<String>) -> Self {
        Self::new(500, "2000", "InternalError", details)
    }

    /// The JSON body, with the request id.
    pub fn body(&self, request_id: &str) -> Value {
        json!({
            "Errors": [{"Code": self.code, "Type": self.kind, "Details": self.details}],
            "ResponseContext": {"RequestId": request_id},
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.status, self.code, self.kind, self.details
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_parses_as_the_sdk_error_model() {
        let e = ApiError::incorrect_state("volume vol-1 is in-use");
        let v = e.body("req-1");
        let parsed: outscale_api::models::ErrorResponse = serde_json::from_value(v).unwrap();
        let err = &parsed.errors.unwrap()[0];
        assert_eq!(err.code.as_deref(), Some("6003"));
        assert_eq!(err._type.as_deref(), Some("IncorrectState"));
        assert_eq!(
            parsed.response_context.unwrap().request_id.as_deref(),
            Some("req-1")
        );
    }
}
