//! The recurrence subset appointments accept (RFC 5545 RRULE): `FREQ=DAILY` or `FREQ=WEEKLY`,
//! `INTERVAL`, `BYDAY` (weekly only), and `UNTIL` or `COUNT`. Occurrences keep the first one's
//! local time of day in the organization's zone (so 09:00 stays 09:00 across a DST change).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// The most occurrences one appointment expands to.
pub const MAX_OCCURRENCES: usize = 200;
/// How far after its start a recurrence may run.
const MAX_SPAN_DAYS: i64 = 731;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    weekly: bool,
    interval: u32,
    by_day: Vec<Weekday>,
    until: Option<DateTime<Utc>>,
    count: Option<usize>,
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

/// `UNTIL=20261231` (the end of that local day) or `UNTIL=20261231T170000Z`.
fn until(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ") {
        return Ok(at.and_utc());
    }
    let date =
        NaiveDate::parse_from_str(text, "%Y%m%d").map_err(|_| format!("UNTIL `{text}` is not YYYYMMDD[THHMMSSZ]"))?;
    let end = date.and_hms_opt(23, 59, 59).ok_or("UNTIL is out of range")?;
    tz.from_local_datetime(&end)
        .latest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| "UNTIL is out of range".to_owned())
}

impl Rule {
    /// Parses the subset; the error names what is outside it.
    pub fn parse(text: &str, tz: Tz) -> Result<Rule, String> {
        let text = text.trim().strip_prefix("RRULE:").unwrap_or(text.trim());
        let mut freq = None;
        let mut rule = Rule { weekly: false, interval: 1, by_day: Vec::new(), until: None, count: None };
        for part in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("`{part}` is not KEY=VALUE"))?;
            match key.to_ascii_uppercase().as_str() {
                "FREQ" => {
                    freq = Some(match value.to_ascii_uppercase().as_str() {
                        "DAILY" => false,
                        "WEEKLY" => true,
                        other => return Err(format!("FREQ `{other}` is not supported (DAILY or WEEKLY)")),
                    })
                }
                "INTERVAL" => {
                    rule.interval = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=52).contains(n))
                        .ok_or_else(|| format!("INTERVAL `{value}` must be 1 to 52"))?
                }
                "BYDAY" => {
                    rule.by_day = value
                        .split(',')
                        .map(|d| weekday(&d.to_ascii_uppercase()).ok_or_else(|| format!("BYDAY `{d}` is not MO..SU")))
                        .collect::<Result<_, _>>()?
                }
                "UNTIL" => rule.until = Some(until(value, tz)?),
                "COUNT" => {
                    rule.count = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|n| (1..=MAX_OCCURRENCES).contains(n))
                            .ok_or_else(|| format!("COUNT `{value}` must be 1 to {MAX_OCCURRENCES}"))?,
                    )
                }
                other => return Err(format!("`{other}` is not supported (FREQ, INTERVAL, BYDAY, UNTIL, COUNT)")),
            }
        }
        rule.weekly = freq.ok_or("FREQ is required")?;
        if !rule.weekly && !rule.by_day.is_empty() {
            return Err("BYDAY is supported with FREQ=WEEKLY only".into());
        }
        if rule.until.is_some() && rule.count.is_some() {
            return Err("UNTIL and COUNT cannot both be given".into());
        }
        if rule.until.is_none() && rule.count.is_none() {
            return Err("UNTIL or COUNT is required".into());
        }
        Ok(rule)
    }

    /// The occurrences' starts, the first being `start` itself (when it matches the rule).
    pub fn starts(&self, start: DateTime<Utc>, tz: Tz) -> Result<Vec<DateTime<Utc>>, String> {
        let local = start.with_timezone(&tz);
        let (first_day, time) = (local.date_naive(), local.time());
        let limit = start + Duration::days(MAX_SPAN_DAYS);
        if self.until.is_some_and(|u| u > limit) {
            return Err(format!("UNTIL may be at most {MAX_SPAN_DAYS} days after the start"));
        }
        let days: Vec<Weekday> = if self.by_day.is_empty() { vec![first_day.weekday()] } else { self.by_day.clone() };
        let week_start = first_day - Duration::days(i64::from(first_day.weekday().num_days_from_monday()));
        let mut out = Vec::new();
        let mut day = first_day;
        while out.len() < self.count.unwrap_or(MAX_OCCURRENCES) {
            let matches = if self.weekly {
                let weeks = (day - week_start).num_days() / 7;
                weeks % i64::from(self.interval) == 0 && days.contains(&day.weekday())
            } else {
                (day - first_day).num_days() % i64::from(self.interval) == 0
            };
            if matches && let Some(at) = tz.from_local_datetime(&day.and_time(time)).earliest() {
                let at = at.with_timezone(&Utc);
                if at > limit || self.until.is_some_and(|u| at > u) {
                    break;
                }
                out.push(at);
            }
            day = day.succ_opt().ok_or("the recurrence runs out of the calendar")?;
            if day.and_time(time).and_utc() > limit + Duration::days(2) {
                break;
            }
        }
        if self.until.is_some() && out.len() >= MAX_OCCURRENCES && self.count.is_none() {
            return Err(format!("the recurrence has more than {MAX_OCCURRENCES} occurrences"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn weekly_on_chosen_days_keeps_the_local_time_across_dst() -> Result<(), String> {
        let tz: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
        // Friday 2026-10-23 09:00 CEST; Berlin leaves summer time on Sunday 2026-10-25.
        let rule = Rule::parse("FREQ=WEEKLY;BYDAY=MO,FR;COUNT=4", tz)?;
        let starts = rule.starts(at("2026-10-23T07:00:00Z"), tz)?;
        let expected =
            ["2026-10-23T07:00:00Z", "2026-10-26T08:00:00Z", "2026-10-30T08:00:00Z", "2026-11-02T08:00:00Z"].map(at);
        assert_eq!(starts, expected);
        Ok(())
    }

    #[test]
    fn daily_with_an_interval_until_a_day() -> Result<(), String> {
        let tz = Tz::UTC;
        let rule = Rule::parse("FREQ=DAILY;INTERVAL=2;UNTIL=20261130", tz)?;
        let starts = rule.starts(at("2026-11-24T10:00:00Z"), tz)?;
        let expected = ["2026-11-24T10:00:00Z", "2026-11-26T10:00:00Z", "2026-11-28T10:00:00Z", "2026-11-30T10:00:00Z"];
        assert_eq!(starts, expected.map(at));
        Ok(())
    }

    #[test]
    fn what_is_outside_the_subset_is_named() -> Result<(), String> {
        let tz = Tz::UTC;
        for (rule, says) in [
            ("FREQ=MONTHLY;COUNT=2", "FREQ"),
            ("FREQ=DAILY", "UNTIL or COUNT"),
            ("FREQ=DAILY;BYDAY=MO;COUNT=2", "BYDAY"),
            ("FREQ=WEEKLY;BYDAY=XX;COUNT=2", "BYDAY"),
            ("FREQ=WEEKLY;COUNT=2;UNTIL=20270101", "both"),
            ("FREQ=DAILY;COUNT=1000", "COUNT"),
            ("FREQ=DAILY;BYMONTH=1;COUNT=2", "BYMONTH"),
        ] {
            let err = Rule::parse(rule, tz).err().unwrap_or_default();
            assert!(err.contains(says), "{rule}: {err}");
        }
        let far = Rule::parse("FREQ=DAILY;UNTIL=20300101", tz)?;
        assert!(far.starts(at("2026-11-24T10:00:00Z"), tz).is_err());
        Ok(())
    }
}
