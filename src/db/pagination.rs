//! Cursor pagination: `?cursor=&limit=` → `{items, next_cursor}`. Cursors are opaque to clients
//! (URL-safe base64 of the last item's sort key).

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// `?cursor=&limit=`: the query of every list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// One page of a list: `next_cursor` is absent on the last page.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The page size asked for, checked.
pub fn limit(limit: Option<u32>) -> Result<i64, AppError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(i64::from(n)),
        _ => Err(AppError::field("limit", format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

/// The sort key a cursor stands for.
pub fn decode<T: FromStr>(cursor: Option<&str>) -> Result<Option<T>, AppError> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else { return Ok(None) };
    let invalid = || AppError::field("cursor", "is not a cursor this API returned");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.parse().map(Some).map_err(|_| invalid())
}

pub fn encode(key: impl ToString) -> String {
    URL_SAFE_NO_PAD.encode(key.to_string())
}

/// A row listed in id order: its id is the cursor.
pub trait Identified {
    fn id(&self) -> uuid::Uuid;
}

/// A page of rows ordered by a UUIDv7 column, each read into `T`. `select` is a query whose last
/// clause is a `WHERE` (its parameters are `params`); the cursor condition, order and limit are
/// appended here.
pub async fn by_id<T: serde::de::DeserializeOwned + Identified>(
    client: &impl deadpool_postgres::GenericClient,
    select: &str,
    id_column: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    cursor: Option<&str>,
    limit_asked: Option<u32>,
) -> Result<Page<T>, AppError> {
    let limit = limit(limit_asked)?;
    let after: Option<uuid::Uuid> = decode(cursor)?;
    let fetch = limit + 1;
    let mut all: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.to_vec();
    all.push(&after);
    all.push(&fetch);
    let (a, l) = (params.len() + 1, params.len() + 2);
    let sql = format!("{select} AND (${a}::uuid IS NULL OR {id_column} > ${a}) ORDER BY {id_column} LIMIT ${l}");
    let rows = crate::db::query_as(client, &sql, &all).await?;
    Ok(page(rows, limit, |row: &T| Some(row.id().to_string())))
}

/// Builds a page from up to `limit + 1` rows fetched in order: the extra row only says there is more.
pub fn page<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Option<String>) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more { rows.last().and_then(key).map(encode) } else { None };
    Page { items: rows, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(decode::<uuid::Uuid>(Some(&encode(id))).ok().flatten(), Some(id));
        assert!(decode::<uuid::Uuid>(Some("%%%")).is_err());
        assert!(decode::<i64>(Some(&encode("not a number"))).is_err());
        assert_eq!(decode::<i64>(None).ok().flatten(), None);
    }

    #[test]
    fn a_page_knows_whether_there_is_more() {
        let p = page(vec![1, 2, 3], 2, |n| Some(n.to_string()));
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next_cursor.as_deref().map(|c| decode::<i32>(Some(c)).ok().flatten()), Some(Some(2)));
        let p = page(vec![1, 2], 2, |n| Some(n.to_string()));
        assert!(p.next_cursor.is_none());
        assert!(limit(Some(0)).is_err() && limit(Some(201)).is_err() && limit(None).is_ok());
    }
}
