//! Cron schedules in a time zone: when does a job fire next?
//!
//! [`CronExpr`] (in `expr`) parses crontab(5) expressions and matches local
//! wall-clock time; [`Schedule`] pairs one with an IANA zone and turns local
//! matches into instants with cronie's DST rules:
//!
//! * **fixed-time** jobs (neither the minute nor the hour field starts with
//!   `*`) fire once for local times a spring-forward gap swallowed, at the
//!   first instant after the gap, and once (the first occurrence) for local
//!   times a fall-back repeats;
//! * **wildcard** jobs (minute or hour starts with `*`) fire on real instants
//!   only: in both copies of a repeated hour and not at all for a gap.
//!
//! All instants are whole seconds; a fire time is always strictly after the
//! instant it was asked about.

mod expr;
mod zone;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub use expr::{CronError, CronExpr, Field};

/// How far ahead [`Schedule::next_after`] searches before answering `None`.
/// Every expression [`CronExpr::parse`] accepts matches within 40 years.
const HORIZON_SECONDS: i64 = 60 * 366 * 86_400;

/// A cron expression evaluated in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expr: CronExpr,
    tz: Tz,
}

/// A time zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time zone: {0:?} is not a known IANA time zone (e.g. UTC, Europe/Berlin, Asia/Tehran)")]
pub struct UnknownZone(pub String);

/// Parses an IANA zone name such as `Asia/Tehran`.
pub fn parse_zone(name: &str) -> Result<Tz, UnknownZone> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| UnknownZone(name.to_string()))
}

impl Schedule {
    pub fn new(expr: CronExpr, tz: Tz) -> Self {
        Schedule { expr, tz }
    }

    /// Parses an expression for a zone.
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, CronError> {
        Ok(Schedule::new(CronExpr::parse(expr)?, tz))
    }

    pub fn expr(&self) -> &CronExpr {
        &self.expr
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after`, or `None` if the schedule
    /// never fires again (only at the end of chrono's calendar).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds; `timestamp()` floors, so +1 is the
        // first whole second strictly after `after`.
        let first = after.timestamp().checked_add(1)?;
        let horizon = first.saturating_add(HORIZON_SECONDS);
        // A gap ending exactly at `first` belongs to the stretch before it,
        // which the walk below never visits.
        if self.expr.is_fixed_time() {
            let before_first = i64::from(zone::offset_at(self.tz, first.checked_sub(1)?)?);
            if self.fires_for_gap_ending_at(first, before_first)? {
                return DateTime::from_timestamp(first, 0);
            }
        }
        let mut cur = first;
        // Walk stretches of constant UTC offset. Inside one, local time is
        // the instant plus that offset, so a local match maps to one instant.
        while cur < horizon {
            let offset = i64::from(zone::offset_at(self.tz, cur)?);
            let end = zone::stretch_end(self.tz, cur);
            if let Some(fire) = self.first_fire_in_stretch(cur, end, offset)? {
                return DateTime::from_timestamp(fire, 0);
            }
            if self.fires_for_gap_ending_at(end, offset)? {
                return DateTime::from_timestamp(end, 0);
            }
            cur = end;
        }
        None
    }

    /// Does a fixed-time job fire at `at` because a spring-forward gap
    /// ending there (offset `before` until `at`) swallowed one of its local
    /// times? Local [at+before, at+after) never happened; such a job fires
    /// once, at the first instant after the gap. `None`: calendar ran out.
    fn fires_for_gap_ending_at(&self, at: i64, before: i64) -> Option<bool> {
        if !self.expr.is_fixed_time() {
            return Some(false);
        }
        let after = i64::from(zone::offset_at(self.tz, at)?);
        if after <= before {
            return Some(false);
        }
        let gap_start = local_naive(at.checked_add(before)?)?;
        let gap_end = at.checked_add(after)?;
        Some(
            self.expr
                .next_local_match(gap_start)
                .is_some_and(|swallowed| swallowed.and_utc().timestamp() < gap_end),
        )
    }

    /// The first fire in the constant-offset stretch [cur, end). `Ok(None)`:
    /// none in this stretch; `None`: the calendar ran out.
    fn first_fire_in_stretch(&self, cur: i64, end: i64, offset: i64) -> Option<Option<i64>> {
        let mut search = local_naive(cur.checked_add(offset)?)?;
        loop {
            let Some(local) = self.expr.next_local_match(search) else {
                return Some(None);
            };
            let fire = local.and_utc().timestamp().checked_sub(offset)?;
            if fire >= end {
                return Some(None);
            }
            if self.expr.is_fixed_time() && self.is_second_occurrence(local, fire) {
                // A fall-back repeats this local time; it already fired at
                // the first occurrence.
                search = local.checked_add_signed(chrono::TimeDelta::seconds(1))?;
                continue;
            }
            return Some(Some(fire));
        }
    }

    fn is_second_occurrence(&self, local: NaiveDateTime, fire: i64) -> bool {
        matches!(
            self.tz.from_local_datetime(&local),
            LocalResult::Ambiguous(first, _) if first.timestamp() != fire
        )
    }

    /// The fire times after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>) -> Upcoming<'_> {
        Upcoming {
            schedule: self,
            last: Some(after),
        }
    }
}

/// Iterator over successive fire times; see [`Schedule::upcoming`].
pub struct Upcoming<'a> {
    schedule: &'a Schedule,
    last: Option<DateTime<Utc>>,
}

impl Iterator for Upcoming<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.schedule.next_after(self.last?);
        self.last = next;
        next
    }
}

fn local_naive(seconds: i64) -> Option<NaiveDateTime> {
    Some(DateTime::from_timestamp(seconds, 0)?.naive_utc())
}
