//! Input rules written once: names, and field types for request bodies and queries whose range is
//! narrower than their Rust type's.
//!
//! chrono reads years from -262143 to 262142; PostgreSQL stores 4713 BC to 294276 AD, and nobody
//! issues a pass for the year 200000. Times and dates outside the years 1 to 9999 are a 422 naming
//! the field, before anything reaches the engine or the database.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Deserializer};

use crate::error::AppError;

/// Problems found in an input, by field path: the details of a `Validation` error.
pub type Fields = BTreeMap<String, String>;

/// The longest name of anything (an organization, a zone, a holder, a key).
pub const MAX_NAME_CHARS: usize = 200;

/// A name is 1 to 200 characters once trimmed.
pub fn check_name(fields: &mut Fields, field: &str, name: &str) {
    let chars = name.trim().chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        fields.insert(field.to_owned(), format!("must be 1 to {MAX_NAME_CHARS} characters"));
    }
}

/// `Ok` when nothing was found, else the whole list at once.
pub fn done(fields: Fields) -> Result<(), AppError> {
    if fields.is_empty() { Ok(()) } else { Err(AppError::Validation { fields }) }
}

pub const FIRST_YEAR: i32 = 1;
pub const LAST_YEAR: i32 = 9999;

fn in_range<E: serde::de::Error>(year: i32) -> Result<(), E> {
    if (FIRST_YEAR..=LAST_YEAR).contains(&year) {
        Ok(())
    } else {
        Err(E::custom(format!("must be between the years {FIRST_YEAR} and {LAST_YEAR}")))
    }
}

/// An RFC 3339 time within the supported years (`#[serde(deserialize_with = "timestamp")]`).
pub fn timestamp<'de, D: Deserializer<'de>>(de: D) -> Result<DateTime<Utc>, D::Error> {
    let t = DateTime::<Utc>::deserialize(de)?;
    in_range(t.year())?;
    Ok(t)
}

/// An optional [`timestamp`] (with `#[serde(default)]`).
pub fn opt_timestamp<'de, D: Deserializer<'de>>(de: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let t = Option::<DateTime<Utc>>::deserialize(de)?;
    if let Some(t) = t {
        in_range(t.year())?;
    }
    Ok(t)
}

/// An optional date (`YYYY-MM-DD`) within the supported years (with `#[serde(default)]`).
pub fn opt_date<'de, D: Deserializer<'de>>(de: D) -> Result<Option<NaiveDate>, D::Error> {
    let d = Option::<NaiveDate>::deserialize(de)?;
    if let Some(d) = d {
        in_range(d.year())?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::timestamp")]
        at: chrono::DateTime<chrono::Utc>,
        #[serde(default, deserialize_with = "super::opt_date")]
        on: Option<chrono::NaiveDate>,
    }

    #[test]
    fn times_outside_the_supported_years_are_refused() {
        assert!(serde_json::from_str::<Body>(r#"{"at": "2026-11-22T10:00:00Z"}"#).is_ok());
        assert!(serde_json::from_str::<Body>(r#"{"at": "-262143-01-01T00:00:00Z"}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"at": "+200000-01-01T00:00:00Z"}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"at": "2026-11-22T10:00:00Z", "on": "-0044-03-15"}"#).is_err());
        let ok = serde_json::from_str::<Body>(r#"{"at": "2026-11-22T10:00:00Z", "on": "2026-12-25"}"#);
        assert!(ok.is_ok_and(|b| b.on.is_some() && b.at.timestamp() > 0));
    }
}
