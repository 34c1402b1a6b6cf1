//! `Json<T>`: the body extractor every route uses. Unlike actix's own, a body that does not
//! deserialize becomes a 422 that names the field (`credential.kind`), and an oversized body a 413.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::http::AppState;

/// Fallback when no state is registered (unit tests of the extractor).
const DEFAULT_LIMIT: usize = 64 * 1024;

pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit =
            req.app_data::<web::Data<AppState>>().map(|s| s.settings.server.body_limit_bytes).unwrap_or(DEFAULT_LIMIT);
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::UnsupportedMediaType);
            }
            let bytes: Bytes = body.await.map_err(|err| {
                use actix_web::error::PayloadError;
                match err.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ApiError::PayloadTooLarge { limit },
                    _ => ApiError::field("body", "could not be read"),
                }
            })?;
            if bytes.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            parse(&bytes).map(Json)
        })
    }
}

/// Deserializes, reporting the path of the first offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (field, reason) = describe(&path, &inner);
        ApiError::Validation { fields: BTreeMap::from([(field, reason)]) }
    })?;
    de.end().map_err(|_| ApiError::field("body", "has trailing characters after the JSON value"))?;
    Ok(value)
}

/// Turns serde's message into a field name and a short reason without Rust type names.
fn describe(path: &str, err: &serde_json::Error) -> (String, String) {
    use serde_json::error::Category;
    let message = err.to_string();
    // serde_json appends " at line L column C"; the field name says more to a client.
    let message = message.split(" at line ").next().unwrap_or_default().to_owned();
    let parent = if path == "." { String::new() } else { path.to_owned() };
    let join = |name: &str| {
        if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
    };
    match err.classify() {
        Category::Syntax | Category::Eof => ("body".to_owned(), "is not valid JSON".to_owned()),
        Category::Io => ("body".to_owned(), "could not be read".to_owned()),
        Category::Data => {
            if let Some(name) = between(&message, "missing field `", "`") {
                (join(name), "is required".to_owned())
            } else if between(&message, "unknown field `", "`").is_some() {
                // Unlike a missing field, an unknown one is already the last segment of the path.
                (parent, "is not a known field".to_owned())
            } else {
                let field = if parent.is_empty() { "body".to_owned() } else { parent };
                (field, message)
            }
        }
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.split_once(start)?.1;
    Some(rest.split_once(end)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Credential {
        #[allow(dead_code)]
        kind: String,
        #[allow(dead_code)]
        value: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[allow(dead_code)]
        credential: Credential,
        #[allow(dead_code)]
        count: Option<u8>,
    }

    fn fields(body: &str) -> BTreeMap<String, String> {
        match parse::<Request>(body.as_bytes()) {
            Err(ApiError::Validation { fields }) => fields,
            other => BTreeMap::from([("unexpected".to_owned(), format!("{:?}", other.map(|_| ())))]),
        }
    }

    #[test]
    fn missing_nested_field_is_named_with_its_path() {
        let f = fields(r#"{"credential": {"kind": "qr"}}"#);
        assert_eq!(f.get("credential.value").map(String::as_str), Some("is required"), "{f:?}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let f = fields(r#"{"credential": {"kind": "qr", "value": "x"}, "count": 999}"#);
        assert!(f.contains_key("count"), "{f:?}");
    }

    #[test]
    fn unknown_field_is_named() {
        let f = fields(r#"{"credential": {"kind": "qr", "value": "x", "extra": 1}}"#);
        assert_eq!(f.get("credential.extra").map(String::as_str), Some("is not a known field"), "{f:?}");
    }

    #[test]
    fn broken_json_is_reported_on_the_body() {
        let f = fields(r#"{"credential": "#);
        assert_eq!(f.get("body").map(String::as_str), Some("is not valid JSON"), "{f:?}");
        let f = fields(r#"{"credential": {"kind": "qr", "value": "x"}} trailing"#);
        assert!(f.get("body").is_some_and(|r| r.contains("trailing")), "{f:?}");
    }
}
