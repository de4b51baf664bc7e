//! Fire-time tables across DST transitions, written from each zone's tzdb
//! rules (not from herald's own output). Every row: zone, expression, the
//! instant asked about, and the fire times that must follow, in order.
//!
//! Fixed-time jobs (minute and hour fields not starting with `*`): a time
//! swallowed by a spring-forward gap fires once at the first instant after
//! the gap; a time repeated by a fall-back fires once, at its first
//! occurrence. Wildcard jobs fire on real instants only.

use chrono::{DateTime, SecondsFormat, Utc};
use herald_actors::schedule::{Schedule, parse_zone};

struct Row {
    zone: &'static str,
    expr: &'static str,
    after: &'static str,
    expect: &'static [&'static str],
}

const fn row(
    zone: &'static str,
    expr: &'static str,
    after: &'static str,
    expect: &'static [&'static str],
) -> Row {
    Row {
        zone,
        expr,
        after,
        expect,
    }
}

fn check(rows: &[Row]) {
    let mut failures = Vec::new();
    for r in rows {
        let tz = parse_zone(r.zone).expect("zone in table");
        let schedule = Schedule::parse(r.expr, tz).expect("expression in table");
        let after: DateTime<Utc> = DateTime::parse_from_rfc3339(r.after)
            .expect("after in table")
            .with_timezone(&Utc);
        let got: Vec<String> = schedule
            .upcoming(after)
            .take(r.expect.len())
            .map(|t| {
                t.with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::Secs, false)
            })
            .collect();
        if got != r.expect {
            failures.push(format!(
                "{} {:?} after {}:\n  expected {:?}\n  got      {:?}",
                r.zone, r.expr, r.after, r.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// America/New_York 2021: 14 Mar 02:00 EST -> 03:00 EDT; 7 Nov 02:00 EDT -> 01:00 EST.
#[test]
fn new_york() {
    check(&[
        // spring forward, fixed: 02:30 does not exist -> 03:00 EDT, once.
        row(
            "America/New_York",
            "30 2 * * *",
            "2021-03-13T12:00:00-05:00",
            &["2021-03-14T03:00:00-04:00", "2021-03-15T02:30:00-04:00"],
        ),
        // two swallowed times and a real 03:00 collapse into one fire.
        row(
            "America/New_York",
            "0,30 2,3 * * *",
            "2021-03-14T01:00:00-05:00",
            &[
                "2021-03-14T03:00:00-04:00",
                "2021-03-14T03:30:00-04:00",
                "2021-03-15T02:00:00-04:00",
            ],
        ),
        // 6 fields, fixed with seconds: the whole swallowed minute is one fire.
        row(
            "America/New_York",
            "0,30 30 2 * * *",
            "2021-03-14T00:00:00-05:00",
            &[
                "2021-03-14T03:00:00-04:00",
                "2021-03-15T02:30:00-04:00",
                "2021-03-15T02:30:30-04:00",
            ],
        ),
        // spring forward, wildcard: nothing extra for the gap.
        row(
            "America/New_York",
            "*/30 * * * *",
            "2021-03-14T01:00:00-05:00",
            &[
                "2021-03-14T01:30:00-05:00",
                "2021-03-14T03:00:00-04:00",
                "2021-03-14T03:30:00-04:00",
            ],
        ),
        row(
            "America/New_York",
            "30 * * * *",
            "2021-03-14T00:45:00-05:00",
            &["2021-03-14T01:30:00-05:00", "2021-03-14T03:30:00-04:00"],
        ),
        // fall back, fixed: 01:30 happens twice, fires at the first.
        row(
            "America/New_York",
            "30 1 * * *",
            "2021-11-06T12:00:00-04:00",
            &["2021-11-07T01:30:00-04:00", "2021-11-08T01:30:00-05:00"],
        ),
        // asked between the two copies: the second copy is not a fire.
        row(
            "America/New_York",
            "0 1 * * *",
            "2021-11-07T01:30:00-04:00",
            &["2021-11-08T01:00:00-05:00"],
        ),
        // fall back, wildcard: both copies of the repeated hour.
        row(
            "America/New_York",
            "*/30 * * * *",
            "2021-11-07T00:45:00-04:00",
            &[
                "2021-11-07T01:00:00-04:00",
                "2021-11-07T01:30:00-04:00",
                "2021-11-07T01:00:00-05:00",
                "2021-11-07T01:30:00-05:00",
                "2021-11-07T02:00:00-05:00",
            ],
        ),
        row(
            "America/New_York",
            "@hourly",
            "2021-11-07T00:30:00-04:00",
            &[
                "2021-11-07T01:00:00-04:00",
                "2021-11-07T01:00:00-05:00",
                "2021-11-07T02:00:00-05:00",
            ],
        ),
    ]);
}

/// Europe/Berlin 2021: 28 Mar 02:00 CET -> 03:00 CEST; 31 Oct 03:00 CEST -> 02:00 CET.
#[test]
fn berlin() {
    check(&[
        row(
            "Europe/Berlin",
            "30 2 * * *",
            "2021-03-27T12:00:00+01:00",
            &["2021-03-28T03:00:00+02:00", "2021-03-29T02:30:00+02:00"],
        ),
        row(
            "Europe/Berlin",
            "15 * * * *",
            "2021-03-28T00:30:00+01:00",
            &["2021-03-28T01:15:00+01:00", "2021-03-28T03:15:00+02:00"],
        ),
        row(
            "Europe/Berlin",
            "30 2 * * *",
            "2021-10-30T12:00:00+02:00",
            &["2021-10-31T02:30:00+02:00", "2021-11-01T02:30:00+01:00"],
        ),
        row(
            "Europe/Berlin",
            "30 * * * *",
            "2021-10-31T01:00:00+02:00",
            &[
                "2021-10-31T01:30:00+02:00",
                "2021-10-31T02:30:00+02:00",
                "2021-10-31T02:30:00+01:00",
                "2021-10-31T03:30:00+01:00",
            ],
        ),
        // a fixed job outside the transition hours is untouched.
        row(
            "Europe/Berlin",
            "0 9 * * mon-fri",
            "2021-10-29T10:00:00+02:00",
            &["2021-11-01T09:00:00+01:00", "2021-11-02T09:00:00+01:00"],
        ),
    ]);
}

/// Australia/Sydney 2021 (southern hemisphere): 4 Apr 03:00 AEDT -> 02:00 AEST;
/// 3 Oct 02:00 AEST -> 03:00 AEDT.
#[test]
fn sydney() {
    check(&[
        row(
            "Australia/Sydney",
            "30 2 * * *",
            "2021-04-03T12:00:00+11:00",
            &["2021-04-04T02:30:00+11:00", "2021-04-05T02:30:00+10:00"],
        ),
        row(
            "Australia/Sydney",
            "*/20 2 * * *",
            "2021-04-04T01:50:00+11:00",
            &[
                "2021-04-04T02:00:00+11:00",
                "2021-04-04T02:20:00+11:00",
                "2021-04-04T02:40:00+11:00",
                "2021-04-04T02:00:00+10:00",
                "2021-04-04T02:20:00+10:00",
                "2021-04-04T02:40:00+10:00",
                "2021-04-05T02:00:00+10:00",
            ],
        ),
        row(
            "Australia/Sydney",
            "45 2 * * *",
            "2021-10-02T12:00:00+10:00",
            &["2021-10-03T03:00:00+11:00", "2021-10-04T02:45:00+11:00"],
        ),
        row(
            "Australia/Sydney",
            "0 * * * *",
            "2021-10-03T00:30:00+10:00",
            &[
                "2021-10-03T01:00:00+10:00",
                "2021-10-03T03:00:00+11:00",
                "2021-10-03T04:00:00+11:00",
            ],
        ),
    ]);
}

/// Australia/Lord_Howe 2021, a 30-minute shift: 4 Apr 02:00 +11 -> 01:30 +10:30;
/// 3 Oct 02:00 +10:30 -> 02:30 +11.
#[test]
fn lord_howe() {
    check(&[
        row(
            "Australia/Lord_Howe",
            "45 1 * * *",
            "2021-04-03T12:00:00+11:00",
            &["2021-04-04T01:45:00+11:00", "2021-04-05T01:45:00+10:30"],
        ),
        row(
            "Australia/Lord_Howe",
            "*/15 * * * *",
            "2021-04-04T01:20:00+11:00",
            &[
                "2021-04-04T01:30:00+11:00",
                "2021-04-04T01:45:00+11:00",
                "2021-04-04T01:30:00+10:30",
                "2021-04-04T01:45:00+10:30",
                "2021-04-04T02:00:00+10:30",
            ],
        ),
        row(
            "Australia/Lord_Howe",
            "15 2 * * *",
            "2021-10-02T12:00:00+10:30",
            &["2021-10-03T02:30:00+11:00", "2021-10-04T02:15:00+11:00"],
        ),
        row(
            "Australia/Lord_Howe",
            "*/15 * * * *",
            "2021-10-03T01:50:00+10:30",
            &["2021-10-03T02:30:00+11:00", "2021-10-03T02:45:00+11:00"],
        ),
    ]);
}

/// America/Santiago 2021, changes at midnight: 4 Apr 00:00 -03 -> 3 Apr 23:00 -04;
/// 5 Sep 00:00 -04 -> 01:00 -03.
#[test]
fn santiago() {
    check(&[
        // midnight swallowed: the daily job fires at 01:00, once.
        row(
            "America/Santiago",
            "0 0 * * *",
            "2021-09-04T12:00:00-04:00",
            &["2021-09-05T01:00:00-03:00", "2021-09-06T00:00:00-03:00"],
        ),
        row(
            "America/Santiago",
            "30 0 * * *",
            "2021-09-04T12:00:00-04:00",
            &["2021-09-05T01:00:00-03:00", "2021-09-06T00:30:00-03:00"],
        ),
        row(
            "America/Santiago",
            "0 * * * *",
            "2021-09-04T22:30:00-04:00",
            &[
                "2021-09-04T23:00:00-04:00",
                "2021-09-05T01:00:00-03:00",
                "2021-09-05T02:00:00-03:00",
            ],
        ),
        // 23:00-24:00 on 3 April happens twice.
        row(
            "America/Santiago",
            "30 23 * * *",
            "2021-04-03T12:00:00-03:00",
            &["2021-04-03T23:30:00-03:00", "2021-04-04T23:30:00-04:00"],
        ),
        row(
            "America/Santiago",
            "0,30 * * * *",
            "2021-04-03T22:45:00-03:00",
            &[
                "2021-04-03T23:00:00-03:00",
                "2021-04-03T23:30:00-03:00",
                "2021-04-03T23:00:00-04:00",
                "2021-04-03T23:30:00-04:00",
                "2021-04-04T00:00:00-04:00",
            ],
        ),
        row(
            "America/Santiago",
            "@daily",
            "2021-04-03T12:00:00-03:00",
            &["2021-04-04T00:00:00-04:00", "2021-04-05T00:00:00-04:00"],
        ),
    ]);
}

/// Asia/Tehran 2021 (DST ended after 2022): 22 Mar 00:00 +03:30 -> 01:00 +04:30;
/// 22 Sep 00:00 +04:30 -> 21 Sep 23:00 +03:30.
#[test]
fn tehran_before_2022() {
    check(&[
        row(
            "Asia/Tehran",
            "30 0 * * *",
            "2021-03-21T12:00:00+03:30",
            &["2021-03-22T01:00:00+04:30", "2021-03-23T00:30:00+04:30"],
        ),
        row(
            "Asia/Tehran",
            "*/30 * * * *",
            "2021-03-21T23:15:00+03:30",
            &[
                "2021-03-21T23:30:00+03:30",
                "2021-03-22T01:00:00+04:30",
                "2021-03-22T01:30:00+04:30",
            ],
        ),
        row(
            "Asia/Tehran",
            "0 23 * * *",
            "2021-09-21T12:00:00+04:30",
            &["2021-09-21T23:00:00+04:30", "2021-09-22T23:00:00+03:30"],
        ),
        row(
            "Asia/Tehran",
            "30 * * * *",
            "2021-09-21T22:00:00+04:30",
            &[
                "2021-09-21T22:30:00+04:30",
                "2021-09-21T23:30:00+04:30",
                "2021-09-21T23:30:00+03:30",
                "2021-09-22T00:30:00+03:30",
            ],
        ),
        // the food reminder's schedule, before and after DST was abolished.
        row(
            "Asia/Tehran",
            "0 22 * * *",
            "2021-09-21T00:00:00+04:30",
            &["2021-09-21T22:00:00+04:30", "2021-09-22T22:00:00+03:30"],
        ),
        row(
            "Asia/Tehran",
            "0 22 * * *",
            "2023-03-21T00:00:00+03:30",
            &["2023-03-21T22:00:00+03:30", "2023-03-22T22:00:00+03:30"],
        ),
    ]);
}

/// Pacific/Chatham 2021, a +12:45 zone: 26 Sep 02:45 +12:45 -> 03:45 +13:45.
/// Asked about the last second before the gap, the gap's one fire is next
/// (found by the property tests: the gap ends exactly at the first candidate).
#[test]
fn chatham_gap_right_after_the_last_fire() {
    check(&[
        row(
            "Pacific/Chatham",
            "* 18-57 2 * * *",
            "2021-09-26T02:44:58+12:45",
            &[
                "2021-09-26T02:44:59+12:45",
                "2021-09-26T03:45:00+13:45",
                "2021-09-27T02:18:00+13:45",
            ],
        ),
        row(
            "Pacific/Chatham",
            "50 2 * * *",
            "2021-09-25T12:00:00+12:45",
            &["2021-09-26T03:45:00+13:45", "2021-09-27T02:50:00+13:45"],
        ),
    ]);
}

/// Zones without DST and UTC itself: nothing special happens.
#[test]
fn zones_without_dst() {
    check(&[
        row(
            "UTC",
            "*/20 * * * * *",
            "2021-03-14T06:59:50+00:00",
            &["2021-03-14T07:00:00+00:00", "2021-03-14T07:00:20+00:00"],
        ),
        row(
            "Asia/Tokyo",
            "0 0 1 1 *",
            "2021-06-01T00:00:00+09:00",
            &["2022-01-01T00:00:00+09:00", "2023-01-01T00:00:00+09:00"],
        ),
        row(
            "UTC",
            "0 0 29 2 *",
            "2021-01-01T00:00:00+00:00",
            &["2024-02-29T00:00:00+00:00", "2028-02-29T00:00:00+00:00"],
        ),
    ]);
}
