//! RFC 9457 problem documents, as every HTTP answer of a refusal or a bad request carries them:
//! the document naming the field at fault, a refused credential (401 or 403), and the reading of
//! an optional JSON body. Shared by the public API, backend reports and the admin API.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{auth::AuthError, limiter::LimiterError};

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A 4xx/5xx answer as RFC 9457 problem details naming the field at fault.
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) field: &'static str,
    pub(crate) detail: String,
}

impl Problem {
    pub(crate) fn bad_request(field: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            field,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "field": self.field,
        });
        (
            self.status,
            [(header::CONTENT_TYPE, PROBLEM_JSON)],
            body.to_string(),
        )
            .into_response()
    }
}

/// A refused credential as problem JSON: 401 with a Bearer challenge for `realm` (no token,
/// or one the node does not know), or 403 (a known token whose role does not cover the call);
/// `needs` says what the call takes.
pub(crate) fn auth_refusal(err: &AuthError, realm: &'static str, needs: &str) -> Response {
    let forbidden = matches!(err, AuthError::Forbidden { .. });
    let mut response = Problem {
        status: if forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        },
        field: "authorization",
        detail: if needs.is_empty() {
            err.to_string()
        } else {
            format!("{err}; {needs}")
        },
    }
    .into_response();
    if !forbidden {
        let challenge = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\""))
            .expect("realms are ASCII names");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

impl From<LimiterError> for Problem {
    fn from(err: LimiterError) -> Self {
        match err {
            LimiterError::Invalid(err) => Problem::bad_request(err.field(), err.to_string()),
            LimiterError::Store(err) => Problem {
                status: StatusCode::SERVICE_UNAVAILABLE,
                field: "store",
                detail: err.to_string(),
            },
        }
    }
}

/// A request's optional JSON body: empty (or whitespace) is the default.
pub(crate) fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
    example: &str,
) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|err| {
        Problem::bad_request(
            "body",
            format!(
                "body is not a valid {what} request ({err}); send JSON like {example} or no body (the client key goes in X-API-Key)"
            ),
        )
    })
}
