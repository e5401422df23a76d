//! How the admin API reads requests and writes errors: JSON bodies (strict:
//! unknown fields and repeated keys refused), path parameters, and the one
//! error shape `{"error": "..."}` every failure answers with.

use super::BODY_LIMIT;
use crate::api::ErrorBody;
use crate::control::ControlError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError::new(status_of(&e), e.to_string())
    }
}

/// The status a control-plane refusal answers with.
pub fn status_of(e: &ControlError) -> StatusCode {
    match e {
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        // a fleet's etcd is unreachable: the node serves, writes wait
        ControlError::Store(crate::store::StoreError::Unavailable(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ControlError::Store(crate::store::StoreError::Conflict(_)) => StatusCode::CONFLICT,
        ControlError::Store(crate::store::StoreError::ClaimLost { .. }) => StatusCode::CONFLICT,
        ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API path")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

/// A JSON body, whatever its Content-Type (so `curl -d` works), with errors
/// as JSON: bad JSON, unknown fields or a key given twice → 400 naming the
/// problem, too big → 413. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                let status = r.status();
                let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("request body is over the limit of {BODY_LIMIT} bytes")
                } else {
                    r.body_text()
                };
                ApiError::new(status, msg)
            })?;
        parse_body(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
    }
}

/// Parse a request body as `T`, refusing what serde alone would accept
/// silently: a key repeated in one object (the last would win, e.g.
/// `{"distribution": {"staging": 10, "staging": 90}}`).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // the key path of a bad value is named: on one line, "at line 1
    // column 40" alone does not say which of the body's values was wrong
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| {
            let path = e.path().to_string();
            match path.as_str() {
                "" | "." => format!("request body: {}", e.inner()),
                _ => format!("request body: {path}: {}", e.inner()),
            }
        })
        .and_then(|v| {
            de.end().map_err(|e| format!("request body: {e}"))?;
            Ok(v)
        })?;
    let mut de = serde_json::Deserializer::from_slice(text);
    NoRepeatedKeys
        .deserialize(&mut de)
        .map_err(|e| format!("request body: {e}"))?;
    Ok(value)
}

/// Walks any JSON value and fails on the first object that names a key twice.
struct NoRepeatedKeys;

impl<'de> DeserializeSeed<'de> for NoRepeatedKeys {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoRepeatedKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoRepeatedKeys)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("key {key:?} is given twice")));
            }
            map.next_value_seed(NoRepeatedKeys)?;
        }
        Ok(())
    }
}

/// Path parameters whose rejection (e.g. a segment that does not decode to
/// UTF-8) is a JSON error like every other, not axum's plain text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|r| ApiError::new(r.status(), format!("request path: {}", r.body_text())))
    }
}

/// A query string whose rejection (an unknown or malformed parameter) is
/// a JSON error naming it, like every other.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|r| ApiError::new(r.status(), format!("query string: {}", r.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Deploy, TrafficRouting};

    #[test]
    fn control_errors_map_to_statuses() {
        let s = |e: ControlError| ApiError::from(e).status;
        assert_eq!(s(ControlError::Invalid(vec![])), StatusCode::BAD_REQUEST);
        assert_eq!(s(ControlError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(s(ControlError::Conflict("x".into())), StatusCode::CONFLICT);
        let lost = crate::store::StoreError::ClaimLost {
            name: "swap/shop".into(),
            why: "its lease expired or was revoked".into(),
        };
        assert_eq!(s(ControlError::Store(lost)), StatusCode::CONFLICT);
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        let e =
            parse_body::<TrafficRouting>(br#"{"distribution": {"staging": 10, "staging": 90}}"#)
                .unwrap_err();
        assert!(e.contains("key \"staging\" is given twice"), "{e}");
        let e = parse_body::<Deploy>(
            br#"{"build_version": "v1", "instances": ["a:1"], "build_version": "v2"}"#,
        )
        .unwrap_err();
        assert!(e.contains("build_version"), "{e}");
        let ok = parse_body::<TrafficRouting>(br#"{"distribution": {"a": 1, "b": 2}}"#).unwrap();
        assert_eq!(ok.distribution.len(), 2);
        // the same key in two different objects is fine
        let v: serde_json::Value = parse_body(br#"[{"a": 1}, {"a": 2}]"#).unwrap();
        assert_eq!(v[1]["a"], 2);
        // an empty body is an empty object
        assert!(parse_body::<crate::api::CreateSlot>(b"  \n").is_ok());
    }

    #[test]
    fn a_bad_value_is_named_by_its_key_path() {
        let e =
            parse_body::<TrafficRouting>(br#"{"distribution": {"staging": "ten"}}"#).unwrap_err();
        assert!(
            e.starts_with("request body: distribution.staging: invalid type"),
            "{e}"
        );
        let e = parse_body::<Deploy>(br#"{"build_version": "v1", "instances": ["a:1", 2]}"#)
            .unwrap_err();
        assert!(
            e.starts_with("request body: instances[1]: invalid type"),
            "{e}"
        );
        // not a value at all: the position is all there is
        let e = parse_body::<Deploy>(b"{\"build_version\": }").unwrap_err();
        assert!(
            e.starts_with("request body: build_version: expected value"),
            "{e}"
        );
        let e = parse_body::<Deploy>(br#"{"build_version": "v1", "instances": []} x"#).unwrap_err();
        assert!(e.contains("trailing characters"), "{e}");
    }
}
