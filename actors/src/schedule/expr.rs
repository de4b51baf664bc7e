//! Parsing cron expressions and matching them against local wall-clock time.
//!
//! herald parses cron itself rather than through the `cron` crate: that crate
//! needs a seconds field, numbers weekdays 1-7 from Sunday and requires both
//! day fields to match, so a crontab(5) expression would have to be rewritten
//! before it could be handed over, and the DST rules need to know how each
//! field was *written* (does it start with `*`?), which the crate discards.
//! A field here is a bitset; matching is a few bit tests.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// Which field of an expression an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    /// Inclusive bounds as written; day-of-week accepts 7 for Sunday.
    fn bounds(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        const MONTHS: &[&str] = &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        match self {
            Field::Month => MONTHS,
            Field::DayOfWeek => DAYS,
            _ => &[],
        }
    }

    /// Value of the first name in `names()`: months count from 1, days from 0.
    fn first_name_value(self) -> u32 {
        if self == Field::Month { 1 } else { 0 }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an expression was rejected. The message names the field and the value
/// at fault, e.g. `minute field: 61 is out of range 0-59`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "empty expression: expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds field, or a macro such as @daily"
    )]
    Empty,
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with a leading seconds field), found {found} in {expr:?}"
    )]
    FieldCount { found: usize, expr: String },
    #[error(
        "unknown macro {0:?}: expected one of @yearly @annually @monthly @weekly @daily @midnight @hourly"
    )]
    UnknownMacro(String),
    #[error("{field} field: {message}")]
    Field { field: Field, message: String },
}

impl CronError {
    fn field(field: Field, message: impl Into<String>) -> Self {
        CronError::Field {
            field,
            message: message.into(),
        }
    }
}

/// A parsed cron expression. Times are matched in local wall-clock time; the
/// time zone and its DST transitions are applied by [`super::Schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days_of_month: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, 0 = Sunday (7 is folded into 0 when parsing).
    days_of_week: u8,
    /// The day-of-month field starts with `*` (cronie's DOM_STAR).
    dom_star: bool,
    /// The day-of-week field starts with `*` (cronie's DOW_STAR).
    dow_star: bool,
    /// Neither the minute nor the hour field starts with `*`: cronie treats
    /// such a job as "fixed time" for DST (see `Schedule::next_after`).
    fixed_time: bool,
    source: String,
}

/// How many years ahead a local-time search looks before deciding an
/// expression never matches again. Any satisfiable month/day/weekday
/// combination recurs within 28 years (the Gregorian weekday cycle for a
/// given leap-day), 2100's missing leap day can stretch that to 40.
const SEARCH_YEARS: i32 = 50;

impl CronExpr {
    /// Parses a 5-field crontab(5) expression, a 6-field one with a leading
    /// seconds field, or a macro (`@hourly`, `@daily`, ...).
    pub fn parse(input: &str) -> Result<Self, CronError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        let expanded = if trimmed.starts_with('@') {
            expand_macro(trimmed)?
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (second_src, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            found => {
                return Err(CronError::FieldCount {
                    found,
                    expr: trimmed.to_string(),
                });
            }
        };
        let [minute_src, hour_src, dom_src, month_src, dow_src] = rest else {
            // Unreachable by the match above; kept as an error, not a panic.
            return Err(CronError::FieldCount {
                found: fields.len(),
                expr: trimmed.to_string(),
            });
        };

        let seconds = parse_field(second_src, Field::Second)?;
        let minutes = parse_field(minute_src, Field::Minute)?;
        let hours = parse_field(hour_src, Field::Hour)?;
        let days_of_month = parse_field(dom_src, Field::DayOfMonth)?;
        let months = parse_field(month_src, Field::Month)?;
        let dow_raw = parse_field(dow_src, Field::DayOfWeek)?;
        // 7 is Sunday too.
        let days_of_week = ((dow_raw | (dow_raw >> 7)) & 0x7f) as u8;

        let expr = CronExpr {
            seconds,
            minutes,
            hours: hours as u32,
            days_of_month: days_of_month as u32,
            months: months as u16,
            days_of_week,
            dom_star: dom_src.starts_with('*'),
            dow_star: dow_src.starts_with('*'),
            fixed_time: !minute_src.starts_with('*') && !hour_src.starts_with('*'),
            source: trimmed.to_string(),
        };
        expr.check_satisfiable(dom_src, month_src)?;
        Ok(expr)
    }

    /// The expression as written (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Neither minute nor hour starts with `*`: one fire for a time swallowed
    /// by a spring-forward gap and one for a time repeated by a fall-back.
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// Rejects day-of-month/month combinations that never occur (`31 2`),
    /// which would otherwise make every search run to its horizon. Only a
    /// restricted day-of-month with a `*` weekday can be impossible: under
    /// the OR rule any weekday matches some day, and a field starting with
    /// `*` always contains day 1.
    fn check_satisfiable(&self, dom_src: &str, month_src: &str) -> Result<(), CronError> {
        if !self.dow_star || self.dom_star {
            return Ok(());
        }
        const MAX_DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let possible = (1..=12).any(|m| {
            self.months & (1 << m) != 0
                && (1..=MAX_DAYS[m]).any(|d| self.days_of_month & (1 << d) != 0)
        });
        if possible {
            Ok(())
        } else {
            Err(CronError::field(
                Field::DayOfMonth,
                format!("{dom_src:?} never occurs in month {month_src:?}"),
            ))
        }
    }

    /// Does the calendar date match (month and the day rule of crontab(5))?
    pub fn matches_date(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        // cronie: if either field starts with '*', both must match; if both
        // are restricted, either may match.
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Does the local time of day match (hour, minute, second)?
    pub fn matches_time(&self, time: NaiveTime) -> bool {
        self.hours & (1 << time.hour()) != 0
            && self.minutes & (1 << time.minute()) != 0
            && self.seconds & (1 << time.second()) != 0
    }

    /// Does this local wall-clock time match the expression?
    pub fn matches(&self, local: NaiveDateTime) -> bool {
        self.matches_date(local.date()) && self.matches_time(local.time())
    }

    /// The first local time at or after `from` (whole seconds; any fraction
    /// is ignored) that matches, or `None` if there is none within the search
    /// horizon or the calendar ends.
    pub fn next_local_match(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let horizon = from.year().checked_add(SEARCH_YEARS)?;
        let mut date = from.date();
        let mut time = Some((from.hour(), from.minute(), from.second()));
        loop {
            if date.year() > horizon {
                return None;
            }
            if self.months & (1 << date.month()) == 0 {
                date = first_of_next_month(date)?;
                time = Some((0, 0, 0));
                continue;
            }
            if !self.matches_date(date) {
                date = date.succ_opt()?;
                time = Some((0, 0, 0));
                continue;
            }
            if let Some((h, m, s)) = time.and_then(|(h, m, s)| self.next_time_of_day(h, m, s)) {
                return date.and_hms_opt(h, m, s);
            }
            date = date.succ_opt()?;
            time = Some((0, 0, 0));
        }
    }

    /// The first matching (hour, minute, second) at or after the given one
    /// on the same day.
    fn next_time_of_day(&self, mut h: u32, mut m: u32, mut s: u32) -> Option<(u32, u32, u32)> {
        loop {
            let next_h = next_bit(self.hours as u64, h, 23)?;
            if next_h != h {
                (h, m, s) = (next_h, 0, 0);
            }
            let Some(next_m) = next_bit(self.minutes, m, 59) else {
                (h, m, s) = (h + 1, 0, 0);
                continue;
            };
            if next_m != m {
                (m, s) = (next_m, 0);
            }
            match next_bit(self.seconds, s, 59) {
                Some(next_s) => return Some((h, m, next_s)),
                None if m < 59 => (m, s) = (m + 1, 0),
                None => (h, m, s) = (h + 1, 0, 0),
            }
        }
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for CronExpr {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

fn expand_macro(input: &str) -> Result<&'static str, CronError> {
    Ok(match input.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return Err(CronError::UnknownMacro(input.to_string())),
    })
}

/// Smallest set bit of `bits` that is >= `from` and <= `max`.
fn next_bit(bits: u64, from: u32, max: u32) -> Option<u32> {
    if from > max {
        return None;
    }
    let masked = bits >> from;
    if masked == 0 {
        return None;
    }
    let found = from + masked.trailing_zeros();
    (found <= max).then_some(found)
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

/// Parses one field (a comma-separated list) into a bitset of the values it
/// allows.
fn parse_field(src: &str, field: Field) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for element in src.split(',') {
        if element.is_empty() {
            return Err(CronError::field(
                field,
                format!("empty list element in {src:?}"),
            ));
        }
        bits |= parse_element(element, field)?;
    }
    Ok(bits)
}

/// One list element: `*`, `*/n`, `a`, `a-b`, `a-b/n` or `a/n`.
fn parse_element(element: &str, field: Field) -> Result<u64, CronError> {
    let min = field.bounds().0;
    let (range, step) = match element.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step, element, field)?)),
        None => (element, None),
    };
    let (start, end) = if range == "*" {
        (min, max_for_star(field))
    } else if let Some((a, b)) = range.split_once('-') {
        let start = parse_value(a, field)?;
        let end = parse_value(b, field)?;
        if start > end {
            return Err(CronError::field(
                field,
                format!("range {range:?} runs backwards ({start} > {end})"),
            ));
        }
        (start, end)
    } else {
        let start = parse_value(range, field)?;
        // `a/n` means from a to the end of the field, every n.
        (
            start,
            if step.is_some() {
                max_for_star(field)
            } else {
                start
            },
        )
    };
    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v = match v.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(bits)
}

/// `*` in day-of-week spans 0-6; 7 is only an alias for Sunday.
fn max_for_star(field: Field) -> u32 {
    if field == Field::DayOfWeek {
        6
    } else {
        field.bounds().1
    }
}

fn parse_step(step: &str, element: &str, field: Field) -> Result<u32, CronError> {
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CronError::field(
            field,
            format!("step {step:?} in {element:?} is not a positive number"),
        ));
    }
    match step.parse::<u32>() {
        Ok(0) => Err(CronError::field(
            field,
            format!("step 0 in {element:?} must be at least 1"),
        )),
        Ok(n) => Ok(n),
        // All digits but too large for u32: any step past the field's width
        // selects just the start, which is what a huge step means.
        Err(_) => Ok(u32::MAX),
    }
}

fn parse_value(src: &str, field: Field) -> Result<u32, CronError> {
    let (min, max) = field.bounds();
    if !src.is_empty() && src.bytes().all(|b| b.is_ascii_digit()) {
        return match src.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(CronError::field(
                field,
                format!("{src} is out of range {min}-{max}"),
            )),
        };
    }
    let names = field.names();
    if let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(src)) {
        return Ok(index as u32 + field.first_name_value());
    }
    let expected = match field {
        Field::Month => format!("a month {min}-{max} or a name jan-dec"),
        Field::DayOfWeek => format!("a weekday {min}-{max} or a name sun-sat"),
        _ => format!("a number {min}-{max}"),
    };
    if src.is_empty() {
        Err(CronError::field(
            field,
            format!("missing value, expected {expected}"),
        ))
    } else {
        Err(CronError::field(
            field,
            format!("{src:?} is not {expected}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(expr: &str) -> String {
        match CronExpr::parse(expr) {
            Ok(_) => panic!("{expr:?} should not parse"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_field_and_value() {
        assert_eq!(err("61 * * * *"), "minute field: 61 is out of range 0-59");
        assert_eq!(err("* 24 * * *"), "hour field: 24 is out of range 0-23");
        assert_eq!(
            err("* * 0 * *"),
            "day-of-month field: 0 is out of range 1-31"
        );
        assert_eq!(err("* * * 13 *"), "month field: 13 is out of range 1-12");
        assert_eq!(err("* * * * 8"), "day-of-week field: 8 is out of range 0-7");
        assert_eq!(err("60 * * * * *"), "second field: 60 is out of range 0-59");
        assert_eq!(
            err("* * * foo *"),
            "month field: \"foo\" is not a month 1-12 or a name jan-dec"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "minute field: step 0 in \"*/0\" must be at least 1"
        );
        assert_eq!(
            err("5-2 * * * *"),
            "minute field: range \"5-2\" runs backwards (5 > 2)"
        );
        assert_eq!(
            err("1,,2 * * * *"),
            "minute field: empty list element in \"1,,2\""
        );
        assert!(err("* * *").starts_with("expected 5 fields"));
        assert!(err("@reboot").starts_with("unknown macro \"@reboot\""));
        assert_eq!(
            err("0 0 30,31 feb *"),
            "day-of-month field: \"30,31\" never occurs in month \"feb\""
        );
        assert_eq!(
            err("99999999999999999999 * * * *"),
            "minute field: 99999999999999999999 is out of range 0-59"
        );
    }

    #[test]
    fn names_are_case_insensitive_and_sunday_is_0_and_7() {
        let a = CronExpr::parse("0 0 * JAN-mar Sun,wed").unwrap();
        let b = CronExpr::parse("0 0 * 1-3 0,3").unwrap();
        let c = CronExpr::parse("0 0 * 1-3 7,3").unwrap();
        assert_eq!(a.months, b.months);
        assert_eq!(a.days_of_week, b.days_of_week);
        assert_eq!(b.days_of_week, c.days_of_week);
        let full = CronExpr::parse("0 0 * * 0-7").unwrap();
        assert_eq!(full.days_of_week, 0x7f);
    }

    #[test]
    fn steps_and_ranges() {
        let e = CronExpr::parse("*/15 1-10/3 5/10 * *").unwrap();
        assert_eq!(e.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(e.hours, (1 << 1) | (1 << 4) | (1 << 7) | (1 << 10));
        assert_eq!(e.days_of_month, (1 << 5) | (1 << 15) | (1 << 25));
    }

    #[test]
    fn fixed_time_follows_how_fields_are_written() {
        assert!(CronExpr::parse("30 2 * * *").unwrap().is_fixed_time());
        assert!(CronExpr::parse("0-59 0-23 * * *").unwrap().is_fixed_time());
        assert!(CronExpr::parse("@daily").unwrap().is_fixed_time());
        assert!(!CronExpr::parse("@hourly").unwrap().is_fixed_time());
        assert!(!CronExpr::parse("30 * * * *").unwrap().is_fixed_time());
        assert!(!CronExpr::parse("*/5 2 * * *").unwrap().is_fixed_time());
    }
}
