//! When an access rule lets people in: ISO weekdays and time windows in the organization's time
//! zone, minus holidays. Local time is computed from the instant with the zone's rules, so windows
//! stay right across daylight-saving changes.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A wall-clock window `from`–`to` ("08:00"–"19:00"); `to` before `from` spans midnight, and
/// `to` = "24:00" means end of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Minutes after midnight, 0..1440.
    from: u16,
    /// Minutes after midnight, 1..=1440.
    to: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{0}` is not a time of day as HH:MM (00:00 to 24:00)")]
    BadTime(String),
    #[error("a window must not be empty (`from` equals `to`)")]
    EmptyWindow,
    #[error("weekday {0} is not between 1 (Monday) and 7 (Sunday)")]
    BadWeekday(i64),
}

fn parse_minutes(text: &str) -> Result<u16, ScheduleError> {
    let bad = || ScheduleError::BadTime(text.to_owned());
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (24, 0) => Ok(1440),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

fn format_minutes(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

impl TimeWindow {
    pub fn new(from: &str, to: &str) -> Result<Self, ScheduleError> {
        let (from, to) = (parse_minutes(from)?, parse_minutes(to)?);
        if from == 1440 {
            return Err(ScheduleError::BadTime("24:00".into()));
        }
        if from == to {
            return Err(ScheduleError::EmptyWindow);
        }
        Ok(TimeWindow { from, to: if to == 0 { 1440 } else { to } })
    }

    /// Whether a local time of day falls in the window.
    pub fn contains(&self, time: NaiveTime) -> bool {
        let minute = u16::try_from(time.hour() * 60 + time.minute()).unwrap_or(0);
        if self.from < self.to {
            self.from <= minute && minute < self.to
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", format_minutes(self.from), format_minutes(self.to))
    }
}

/// The JSON shape of a window: `{"from": "08:00", "to": "19:00"}`.
#[derive(Serialize, Deserialize)]
struct WindowJson {
    from: String,
    to: String,
}

impl utoipa::PartialSchema for TimeWindow {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let time =
            || ObjectBuilder::new().schema_type(Type::String).pattern(Some("^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("from", time())
            .property("to", time())
            .required("from")
            .required("to")
            .into()
    }
}

impl utoipa::ToSchema for TimeWindow {}

impl Serialize for TimeWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WindowJson { from: format_minutes(self.from), to: format_minutes(self.to) }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TimeWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WindowJson::deserialize(d)?;
        TimeWindow::new(&w.from, &w.to).map_err(serde::de::Error::custom)
    }
}

impl FromStr for TimeWindow {
    type Err = ScheduleError;

    /// `"08:00-19:00"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (from, to) = s.split_once('-').ok_or_else(|| ScheduleError::BadTime(s.to_owned()))?;
        TimeWindow::new(from, to)
    }
}

/// Weekdays (ISO 1..=7) and windows; no windows means all day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    weekdays: BTreeSet<u8>,
    windows: Vec<TimeWindow>,
}

impl Schedule {
    pub fn new(weekdays: impl IntoIterator<Item = i64>, windows: Vec<TimeWindow>) -> Result<Self, ScheduleError> {
        let weekdays = weekdays
            .into_iter()
            .map(|d| u8::try_from(d).ok().filter(|d| (1..=7).contains(d)).ok_or(ScheduleError::BadWeekday(d)))
            .collect::<Result<_, _>>()?;
        Ok(Schedule { weekdays, windows })
    }

    /// Every day, all day.
    pub fn always() -> Self {
        Schedule { weekdays: (1..=7).collect(), windows: Vec::new() }
    }

    pub fn weekdays(&self) -> impl Iterator<Item = u8> + '_ {
        self.weekdays.iter().copied()
    }

    pub fn windows(&self) -> &[TimeWindow] {
        &self.windows
    }

    /// Whether `now` is inside the schedule in `tz`, holidays excluded.
    pub fn is_open(&self, now: DateTime<Utc>, tz: Tz, holidays: &BTreeSet<NaiveDate>) -> bool {
        let local = now.with_timezone(&tz);
        let weekday = u8::try_from(local.weekday().number_from_monday()).unwrap_or(0);
        if holidays.contains(&local.date_naive()) || !self.weekdays.contains(&weekday) {
            return false;
        }
        self.windows.is_empty() || self.windows.iter().any(|w| w.contains(local.time()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap_or_default()
    }

    fn office() -> Schedule {
        let windows = vec![TimeWindow::new("08:00", "19:00").unwrap_or(TimeWindow { from: 0, to: 1 })];
        Schedule::new([1, 2, 3, 4, 5], windows).unwrap_or_else(|_| Schedule::always())
    }

    #[test]
    fn windows_parse_and_reject_nonsense() {
        assert!(TimeWindow::new("08:00", "19:00").is_ok());
        assert!(TimeWindow::new("22:00", "06:00").is_ok());
        assert!(TimeWindow::new("00:00", "24:00").is_ok());
        for (a, b) in
            [("8:00", "19:00"), ("08:60", "19:00"), ("25:00", "01:00"), ("08:00", "08:00"), ("24:00", "01:00")]
        {
            assert!(TimeWindow::new(a, b).is_err(), "{a}-{b}");
        }
        assert!(Schedule::new([0], vec![]).is_err());
        assert!(Schedule::new([8], vec![]).is_err());
    }

    #[test]
    fn office_hours_in_berlin_follow_local_time() {
        let (tz, none) = (chrono_tz::Europe::Berlin, BTreeSet::new());
        // Monday 2026-03-02: Berlin is UTC+1. 07:30 UTC = 08:30 local: open.
        assert!(office().is_open(utc(2026, 3, 2, 7, 30), tz, &none));
        // 06:30 UTC = 07:30 local: closed.
        assert!(!office().is_open(utc(2026, 3, 2, 6, 30), tz, &none));
        // Saturday.
        assert!(!office().is_open(utc(2026, 3, 7, 10, 0), tz, &none));
    }

    #[test]
    fn daylight_saving_moves_the_utc_edges_of_a_window() {
        let (tz, none) = (chrono_tz::Europe::Berlin, BTreeSet::new());
        // Summer time began 2026-03-29. Monday 2026-03-30: Berlin is UTC+2.
        // 06:30 UTC = 08:30 local: open (it was closed at 06:30 UTC a month earlier).
        assert!(office().is_open(utc(2026, 3, 30, 6, 30), tz, &none));
        // 17:30 UTC = 19:30 local: closed (it was open at 17:30 UTC in winter).
        assert!(!office().is_open(utc(2026, 3, 30, 17, 30), tz, &none));
        assert!(office().is_open(utc(2026, 3, 2, 17, 30), tz, &none));
        // New York changes on another date (2026-03-08): on Monday 2026-03-09 08:30 EDT = 12:30 UTC.
        let ny = chrono_tz::America::New_York;
        assert!(office().is_open(utc(2026, 3, 9, 12, 30), ny, &none));
        assert!(!office().is_open(utc(2026, 3, 9, 11, 30), ny, &none), "07:30 EDT");
    }

    #[test]
    fn a_holiday_closes_the_day_in_local_terms() {
        let tz = chrono_tz::Asia::Tokyo;
        let holidays = BTreeSet::from([NaiveDate::from_ymd_opt(2026, 5, 5).unwrap_or_default()]);
        // 2026-05-05 10:00 in Tokyo is 01:00 UTC the same day; a Tuesday.
        assert!(!office().is_open(utc(2026, 5, 5, 1, 0), tz, &holidays));
        assert!(office().is_open(utc(2026, 5, 6, 1, 0), tz, &holidays));
    }

    #[test]
    fn overnight_windows_span_midnight() {
        let night = TimeWindow::new("22:00", "06:00").unwrap_or(TimeWindow { from: 0, to: 1 });
        let at = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default();
        assert!(night.contains(at(23, 0)) && night.contains(at(2, 0)));
        assert!(!night.contains(at(12, 0)) && !night.contains(at(6, 0)));
    }
}
