//! UTC offsets and offset transitions of an IANA zone, as unix seconds.
//!
//! chrono-tz answers "what is the offset at this instant" but keeps its table
//! of transitions private, and DST-correct scheduling needs "when does the
//! offset next change". We find transitions by probing the offset every
//! [`PROBE_STEP`] seconds and bisecting each change down to the second, once
//! per (zone, year), and cache the result for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use chrono::{DateTime, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

/// Probe interval. Two transitions closer together than this would be seen
/// as none; tzdb has no offset period shorter than an hour.
const PROBE_STEP: i64 = 3600;

/// UTC offset in seconds (local minus UTC) at a unix instant, or `None` past
/// chrono's calendar.
pub fn offset_at(tz: Tz, instant: i64) -> Option<i32> {
    let utc = DateTime::from_timestamp(instant, 0)?;
    Some(
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// How far past an instant [`stretch_end`] looks for a transition.
pub const LOOKAHEAD: i64 = 366 * 86_400;

/// End (exclusive) of the stretch of constant offset that contains
/// `instant`: the first later instant with a different offset, or
/// `instant + LOOKAHEAD` when the offset holds that long. Callers treat the
/// second kind of end like a transition to the same offset.
pub fn stretch_end(tz: Tz, instant: i64) -> i64 {
    let horizon = instant.saturating_add(LOOKAHEAD);
    if tz == Tz::UTC {
        return horizon;
    }
    let Some(first_year) = year_of(instant) else {
        return horizon;
    };
    // LOOKAHEAD spans at most two calendar years.
    for year in first_year..=first_year.saturating_add(1) {
        if let Some(t) = transitions_in_year(tz, year)
            .iter()
            .copied()
            .find(|&t| t > instant)
        {
            return t.min(horizon);
        }
    }
    horizon
}

/// Unix second of 1 January 00:00 UTC of `year`.
pub fn year_start(year: i32) -> Option<i64> {
    Some(
        NaiveDate::from_ymd_opt(year, 1, 1)?
            .and_hms_opt(0, 0, 0)?
            .and_utc()
            .timestamp(),
    )
}

fn year_of(instant: i64) -> Option<i32> {
    use chrono::Datelike;
    Some(DateTime::from_timestamp(instant, 0)?.year())
}

type Cache = RwLock<HashMap<(Tz, i32), Arc<[i64]>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Transition instants in [1 Jan `year`, 1 Jan `year`+1) UTC, ascending.
fn transitions_in_year(tz: Tz, year: i32) -> Arc<[i64]> {
    // A poisoned lock only means another thread panicked mid-insert of a
    // value it computed in full; the map itself is still sound.
    if let Some(found) = cache()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&(tz, year))
    {
        return found.clone();
    }
    let computed: Arc<[i64]> = compute_transitions(tz, year).into();
    cache()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry((tz, year))
        .or_insert(computed)
        .clone()
}

fn compute_transitions(tz: Tz, year: i32) -> Vec<i64> {
    let (Some(start), Some(end)) = (year_start(year), year.checked_add(1).and_then(year_start))
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    // Compare against the second before the year so a transition at exactly
    // 00:00 UTC on 1 January is caught.
    let mut prev_instant = start - 1;
    let Some(mut prev_offset) = offset_at(tz, prev_instant) else {
        return found;
    };
    while prev_instant < end - 1 {
        let probe = (prev_instant + PROBE_STEP).min(end - 1);
        let Some(offset) = offset_at(tz, probe) else {
            break;
        };
        if offset != prev_offset {
            // Bisect (prev_instant, probe] for the first second with a new offset.
            let (mut lo, mut hi) = (prev_instant, probe);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(tz, mid) == Some(prev_offset) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            found.push(hi);
            prev_offset = offset_at(tz, hi).unwrap_or(offset);
            prev_instant = hi;
        } else {
            prev_instant = probe;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn finds_new_york_2021_transitions() {
        let tz: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            &*transitions_in_year(tz, 2021),
            &[ts("2021-03-14T07:00:00Z"), ts("2021-11-07T06:00:00Z")]
        );
    }

    #[test]
    fn stretch_ends_at_the_next_transition_or_the_lookahead() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let spring = ts("2021-03-28T01:00:00Z");
        assert_eq!(stretch_end(tz, spring - 10), spring);
        assert_eq!(stretch_end(tz, spring), ts("2021-10-31T01:00:00Z"));
        assert_eq!(stretch_end(Tz::UTC, spring), spring + LOOKAHEAD);
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(stretch_end(tokyo, spring), spring + LOOKAHEAD);
        // Late December: the next transition is in the following year.
        assert_eq!(
            stretch_end(tz, ts("2021-12-20T00:00:00Z")),
            ts("2022-03-27T01:00:00Z")
        );
    }
}
