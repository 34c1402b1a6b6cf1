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
    if let Err(reason) = Name::parse(name) {
        fields.insert(field.to_owned(), reason);
    }
}

/// A text value parsed into its domain type as the request is read. The request type holds
/// `Checked<T>`, so no use case can take the raw text by mistake; a bad value is not an error at
/// reading time but a reason noted under its field by [`Checked::take`], so that every bad field
/// of a request is reported at once.
#[derive(Debug, Clone)]
pub struct Checked<T>(Result<T, String>);

/// How a domain value is read from text.
pub trait Parse: Sized {
    fn parse(text: &str) -> Result<Self, String>;
}

impl<'de, T: Parse> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        Ok(Checked(T::parse(&text)))
    }
}

impl<T> Checked<T> {
    /// The value, or `None` with the reason noted under `field`.
    pub fn take(self, fields: &mut Fields, field: &str) -> Option<T> {
        match self.0 {
            Ok(value) => Some(value),
            Err(reason) => {
                fields.insert(field.to_owned(), reason);
                None
            }
        }
    }
}

/// A name: 1 to 200 characters, kept trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Parse for Name {
    fn parse(text: &str) -> Result<Self, String> {
        let name = text.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
        }
        Ok(Name(name.to_owned()))
    }
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, trimmed and lower-cased (how accounts are looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Parse for Email {
    fn parse(text: &str) -> Result<Self, String> {
        let email = text.trim().to_lowercase();
        let valid = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !email.contains(char::is_whitespace);
        if valid { Ok(Email(email)) } else { Err("is not an email address".to_owned()) }
    }
}

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An organization's slug: 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Parse for Slug {
    fn parse(text: &str) -> Result<Self, String> {
        let valid = text.len() <= 63
            && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Slug(text.to_owned()))
        } else {
            Err("must be 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit".to_owned())
        }
    }
}

impl Slug {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone (`Europe/Berlin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl Parse for TimeZone {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse::<chrono_tz::Tz>()
            .map(TimeZone)
            .map_err(|_| format!("`{text}` is not an IANA time zone (e.g. Europe/Berlin)"))
    }
}

impl TimeZone {
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// Optional free text: trimmed, empty taken as absent, at most `max` characters (else `field` is
/// named in `fields`).
pub fn optional_text(fields: &mut Fields, field: &str, value: Option<&str>, max: usize) -> Option<String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    if value.chars().count() > max {
        fields.insert(field.to_owned(), format!("must be at most {max} characters"));
        return None;
    }
    Some(value.to_owned())
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
    fn domain_values_are_parsed_once_and_every_bad_field_is_named() {
        use super::{Checked, Email, Fields, Name, Slug, TimeZone};
        #[derive(Debug, Deserialize)]
        struct Org {
            name: Checked<Name>,
            slug: Checked<Slug>,
            timezone: Checked<TimeZone>,
            email: Checked<Email>,
        }
        let bad: Result<Org, _> =
            serde_json::from_str(r#"{"name": " ", "slug": "-x", "timezone": "Mars/Base", "email": "no"}"#);
        let mut fields = Fields::new();
        let parsed = bad.map(|o| {
            (
                o.name.take(&mut fields, "name"),
                o.slug.take(&mut fields, "slug"),
                o.timezone.take(&mut fields, "timezone"),
                o.email.take(&mut fields, "email"),
            )
        });
        assert!(parsed.is_ok_and(|p| p.0.is_none() && p.1.is_none() && p.2.is_none() && p.3.is_none()));
        assert_eq!(fields.len(), 4, "{fields:?}");
        let good: Result<Org, _> = serde_json::from_str(
            r#"{"name": " Acme ", "slug": "acme-1", "timezone": "Europe/Berlin", "email": " Ada@Example.TEST "}"#,
        );
        let mut fields = Fields::new();
        let org = good.ok().map(|o| {
            (o.name.take(&mut fields, "name"), o.email.take(&mut fields, "email"), o.timezone.take(&mut fields, "tz"))
        });
        assert!(fields.is_empty());
        let (name, email, tz) = org.unwrap_or((None, None, None));
        assert_eq!(name.map(|n| n.as_str().to_owned()).as_deref(), Some("Acme"));
        assert_eq!(email.map(|e| e.as_str().to_owned()).as_deref(), Some("ada@example.test"));
        assert_eq!(tz.map(|t| t.name()), Some("Europe/Berlin"));
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
