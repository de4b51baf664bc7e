//! Property tests of the schedule engine.
//!
//! The reference is the definition itself, checked instant by instant: a
//! wildcard job fires at every instant whose local time matches; a
//! fixed-time job fires at the first instant of each matching local time and
//! at the first instant after a gap that swallowed a matching local time.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use herald_actors::schedule::{CronExpr, Schedule, parse_zone};
use proptest::prelude::*;

/// Zones with awkward transitions, and the UTC instants of their 2021
/// transitions (from tzdb's rules), around which windows are drawn.
const ZONES: &[(&str, &[&str])] = &[
    (
        "America/New_York",
        &["2021-03-14T07:00:00Z", "2021-11-07T06:00:00Z"],
    ),
    (
        "Europe/Berlin",
        &["2021-03-28T01:00:00Z", "2021-10-31T01:00:00Z"],
    ),
    (
        "Australia/Sydney",
        &["2021-04-03T16:00:00Z", "2021-10-02T16:00:00Z"],
    ),
    (
        "Australia/Lord_Howe",
        &["2021-04-03T15:00:00Z", "2021-10-02T15:30:00Z"],
    ),
    (
        "America/Santiago",
        &["2021-04-04T03:00:00Z", "2021-09-05T04:00:00Z"],
    ),
    (
        "Asia/Tehran",
        &["2021-03-21T20:30:00Z", "2021-09-21T19:30:00Z"],
    ),
    (
        "Pacific/Chatham",
        &["2021-04-03T14:00:00Z", "2021-09-25T14:00:00Z"],
    ),
    ("UTC", &["2021-06-01T00:00:00Z"]),
];

fn offset(tz: Tz, t: i64) -> i64 {
    let utc = DateTime::from_timestamp(t, 0).unwrap();
    i64::from(
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

fn local(t: i64, off: i64) -> NaiveDateTime {
    DateTime::from_timestamp(t + off, 0).unwrap().naive_utc()
}

/// Does the schedule fire at instant `t`, by definition?
fn fires_at(expr: &CronExpr, tz: Tz, t: i64, step: i64) -> bool {
    let off = offset(tz, t);
    let here = local(t, off);
    if !expr.is_fixed_time() {
        return expr.matches(here);
    }
    let first_copy = match tz.from_local_datetime(&here) {
        LocalResult::Single(x) => x.timestamp() == t,
        LocalResult::Ambiguous(first, _) => first.timestamp() == t,
        LocalResult::None => false,
    };
    if expr.matches(here) && first_copy {
        return true;
    }
    // First instant after a spring-forward gap: did the gap swallow a match?
    let before = offset(tz, t - 1);
    if before < off {
        let mut swallowed = t + before;
        while swallowed < t + off {
            if expr.matches(local(swallowed, 0)) {
                return true;
            }
            swallowed += step;
        }
    }
    false
}

fn check_window(expr_src: &str, zone: &str, center: &str, from_offset: i64, span: i64, step: i64) {
    let tz = parse_zone(zone).unwrap();
    let schedule = Schedule::parse(expr_src, tz).unwrap();
    let center = DateTime::parse_from_rfc3339(center).unwrap().timestamp();
    let start = (center + from_offset) / step * step;
    let end = start + span;
    let expected: Vec<i64> = (0..)
        .map(|i| start + i * step)
        .take_while(|&t| t < end)
        .filter(|&t| fires_at(schedule.expr(), tz, t, step))
        .collect();
    let after = DateTime::from_timestamp(start - 1, 0).unwrap();
    let got: Vec<i64> = schedule
        .upcoming(after)
        .map(|t| t.timestamp())
        .take_while(|&t| t < end)
        .collect();
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(got.len().min(expected.len()));
        let show = |v: &[i64]| {
            v.iter()
                .skip(at.saturating_sub(2))
                .take(5)
                .map(|&t| {
                    format!(
                        "{} ({t})",
                        DateTime::from_timestamp(t, 0).unwrap().with_timezone(&tz)
                    )
                })
                .collect::<Vec<_>>()
        };
        panic!(
            "{expr_src:?} in {zone} from {start}: first difference at fire #{at}\n  expected {:?}\n  got      {:?}",
            show(&expected),
            show(&got)
        );
    }
}

fn list_of(elements: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop::collection::vec(elements, 1..=3)
        .prop_map(|v| v.join(","))
        .boxed()
}

/// A random field: `*`, `*/n`, `a`, `a-b`, `a-b/n`, `a/n`, or a list of them.
fn field(min: u32, max: u32, star_weight: u32) -> BoxedStrategy<String> {
    let value = min..=max;
    let element = prop_oneof![
        1 => (1..=max).prop_map(|n| format!("*/{n}")),
        3 => value.clone().prop_map(|a| a.to_string()),
        2 => (value.clone(), value.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => (value.clone(), value.clone(), 1..=max).prop_map(|(a, b, n)| format!("{}-{}/{n}", a.min(b), a.max(b))),
        1 => (value, 1..=max).prop_map(|(a, n)| format!("{a}/{n}")),
    ]
    .boxed();
    prop_oneof![
        star_weight => Just("*".to_string()),
        4 => list_of(element),
    ]
    .boxed()
}

/// Hours near midnight and the small hours, where transitions happen.
fn hour_field() -> BoxedStrategy<String> {
    prop_oneof![
        1 => field(0, 23, 2),
        2 => list_of(prop_oneof![0u32..=3, 22u32..=23].prop_map(|h| h.to_string()).boxed()),
    ]
    .boxed()
}

fn five_field_expr() -> impl Strategy<Value = String> {
    (
        field(0, 59, 1),
        hour_field(),
        field(1, 31, 6),
        field(1, 12, 8),
        field(0, 7, 6),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"))
        .prop_filter("satisfiable", |e| CronExpr::parse(e).is_ok())
}

fn zone_and_center() -> impl Strategy<Value = (&'static str, &'static str)> {
    (0..ZONES.len(), any::<prop::sample::Index>())
        .prop_map(|(z, i)| (ZONES[z].0, *i.get(ZONES[z].1)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// 5-field expressions agree with the definition, minute by minute, over
    /// two days around a transition.
    #[test]
    fn five_field_fires_match_the_definition(
        expr in five_field_expr(),
        (zone, center) in zone_and_center(),
        from_offset in -86_400i64..0,
    ) {
        check_window(&expr, zone, center, from_offset, 2 * 86_400, 60);
    }

    /// 6-field expressions, second by second, over three hours around a
    /// transition.
    #[test]
    fn six_field_fires_match_the_definition(
        seconds in field(0, 59, 1),
        minutes in field(0, 59, 2),
        hours in hour_field(),
        (zone, center) in zone_and_center(),
        from_offset in -7_200i64..-3_600,
    ) {
        let expr = format!("{seconds} {minutes} {hours} * * *");
        check_window(&expr, zone, center, from_offset, 3 * 3_600, 1);
    }

    /// Anywhere in 1970-2100: fire times strictly increase, and each either
    /// matches in local time or is the first instant after a gap.
    #[test]
    fn fires_increase_and_match_or_follow_a_gap(
        expr in five_field_expr(),
        zone in prop::sample::select(chrono_tz::TZ_VARIANTS.to_vec()),
        after in 0i64..4_102_444_800,
    ) {
        let schedule = Schedule::parse(&expr, zone).unwrap();
        let mut last = DateTime::from_timestamp(after, 0).unwrap();
        for fire in schedule.upcoming(last).take(20) {
            prop_assert!(fire > last, "{expr:?} in {zone}: {fire} after {last}");
            let t = fire.timestamp();
            let here = local(t, offset(zone, t));
            let after_gap = offset(zone, t - 1) < offset(zone, t);
            prop_assert!(
                schedule.expr().matches(here) || (schedule.expr().is_fixed_time() && after_gap),
                "{expr:?} in {zone}: {fire} is local {here}, neither a match nor a gap end"
            );
            last = fire;
        }
    }

    /// Arbitrary text never panics the parser.
    #[test]
    fn arbitrary_text_never_panics(input in ".{0,64}") {
        let _ = CronExpr::parse(&input);
        let _ = parse_zone(&input);
    }

    /// Near-cron text never panics the parser, and whatever parses can be
    /// evaluated without panicking, anywhere in chrono's calendar.
    #[test]
    fn near_cron_text_never_panics(
        input in "[0-9*/,@a-zA-Z -]{0,40}",
        after in any::<i64>(),
    ) {
        if let Ok(expr) = CronExpr::parse(&input) {
            let schedule = Schedule::new(expr, chrono_tz::Europe::London);
            let after = DateTime::from_timestamp(after % 8_000_000_000_000, 0)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let _ = schedule.upcoming(after).take(3).count();
        }
    }
}

#[test]
fn end_of_calendar_is_none_not_a_panic() {
    let schedule = Schedule::parse("* * * * * *", chrono_tz::UTC).unwrap();
    assert_eq!(schedule.next_after(DateTime::<Utc>::MAX_UTC), None);
    let berlin = Schedule::parse("0 0 1 1 *", chrono_tz::Europe::Berlin).unwrap();
    let near_end = DateTime::<Utc>::MAX_UTC - TimeDelta::days(30);
    assert_eq!(berlin.next_after(near_end), None);
}
