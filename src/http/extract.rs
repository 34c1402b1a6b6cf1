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

use crate::app::App;
use crate::error::AppError;

/// Fallback when no state is registered (unit tests of the extractor).
const DEFAULT_LIMIT: usize = 64 * 1024;

pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit =
            req.app_data::<web::Data<App>>().map(|s| s.settings.server.body_limit_bytes).unwrap_or(DEFAULT_LIMIT);
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
                return Err(AppError::UnsupportedMediaType);
            }
            let bytes: Bytes = body.await.map_err(|err| {
                use actix_web::error::PayloadError;
                match err.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => AppError::PayloadTooLarge { limit },
                    _ => AppError::field("body", "could not be read"),
                }
            })?;
            if bytes.len() > limit {
                return Err(AppError::PayloadTooLarge { limit });
            }
            parse(&bytes).map(Json)
        })
    }
}

/// Deserializes, reporting the path of the first offending field. A body that deserializes is
/// read once, by serde_json alone; only one that does not is read again, tracking the path, to
/// say where it went wrong (the same outcome, at a fraction of a decision's cost per request).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if let Some(field) = find_nul(bytes) {
        return Err(AppError::field(field, NUL_REASON));
    }
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (field, reason) = describe(&path, &inner);
        AppError::Validation { fields: BTreeMap::from([(field, reason)]) }
    })?;
    de.end().map_err(|_| AppError::field("body", "has trailing characters after the JSON value"))?;
    Ok(value)
}

pub const NUL_REASON: &str = "must not contain NUL characters";

/// The path of the first string (or key) holding U+0000, which no field has a use for and
/// PostgreSQL text cannot store. In JSON it can only arrive escaped, so a body without `\u0000`
/// is not parsed twice.
fn find_nul(bytes: &[u8]) -> Option<String> {
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    nul_path(&value, "")
}

fn nul_path(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let named = |path: &str| if path.is_empty() { "body".to_owned() } else { path.to_owned() };
    match value {
        Value::String(s) => s.contains('\0').then(|| named(path)),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| nul_path(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some(named(path));
            }
            let inner = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            nul_path(item, &inner)
        }),
        _ => None,
    }
}

/// The query parameter (`query.<name>`) or `path` of a URI carrying an encoded NUL (`%00`).
pub fn nul_in_uri(uri: &actix_web::http::Uri) -> Option<String> {
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    if has_nul(uri.path()) {
        return Some("path".to_owned());
    }
    let query = uri.query()?;
    query.split('&').find(|pair| has_nul(pair)).map(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        let sane = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if sane { format!("query.{name}") } else { "query".to_owned() }
    })
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
            Err(AppError::Validation { fields }) => fields,
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
    fn a_nul_character_is_named_by_its_field() {
        let f = fields(r#"{"credential": {"kind": "qr", "value": "a\u0000b"}}"#);
        assert_eq!(f.get("credential.value").map(String::as_str), Some(NUL_REASON), "{f:?}");
        // An escaped backslash followed by `u0000` is text, not a NUL.
        let f = fields(r#"{"credential": {"kind": "qr", "value": "a\\u0000b"}, "count": 1}"#);
        assert!(f.is_empty() || !f.values().any(|r| r == NUL_REASON), "{f:?}");
        let uri: actix_web::http::Uri = "/x?gate_id=1&q=a%00b".parse().unwrap_or_default();
        assert_eq!(nul_in_uri(&uri).as_deref(), Some("query.q"));
        let uri: actix_web::http::Uri = "/x?q=ab".parse().unwrap_or_default();
        assert_eq!(nul_in_uri(&uri), None);
    }

    #[test]
    fn broken_json_is_reported_on_the_body() {
        let f = fields(r#"{"credential": "#);
        assert_eq!(f.get("body").map(String::as_str), Some("is not valid JSON"), "{f:?}");
        let f = fields(r#"{"credential": {"kind": "qr", "value": "x"}} trailing"#);
        assert!(f.get("body").is_some_and(|r| r.contains("trailing")), "{f:?}");
    }
}
