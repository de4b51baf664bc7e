//! crontab(5) semantics, in UTC so only the expression is under test.

use chrono::{DateTime, SecondsFormat, Utc};
use herald_actors::schedule::{CronExpr, Schedule};

fn fires(expr: &str, after: &str, n: usize) -> Vec<String> {
    let schedule = Schedule::parse(expr, chrono_tz::UTC).expect("valid expression");
    let after = DateTime::parse_from_rfc3339(after)
        .expect("valid instant")
        .with_timezone(&Utc);
    schedule
        .upcoming(after)
        .take(n)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .collect()
}

#[test]
fn both_day_fields_restricted_means_either_matches() {
    // crontab(5)'s own example: 04:30 on the 1st and 15th, plus every Friday.
    // 2021-10: Fridays are 1, 8, 15, 22, 29.
    assert_eq!(
        fires("30 4 1,15 * 5", "2021-09-30T12:00:00Z", 5),
        [
            "2021-10-01T04:30:00Z",
            "2021-10-08T04:30:00Z",
            "2021-10-15T04:30:00Z",
            "2021-10-22T04:30:00Z",
            "2021-10-29T04:30:00Z",
        ]
    );
    assert_eq!(
        fires("0 0 13 * fri", "2021-08-01T00:00:00Z", 4),
        [
            "2021-08-06T00:00:00Z",
            "2021-08-13T00:00:00Z",
            "2021-08-20T00:00:00Z",
            "2021-08-27T00:00:00Z",
        ]
    );
}

#[test]
fn a_day_field_starting_with_star_means_both_must_match() {
    // cronie: a field written `*...` is unrestricted for the day rule, so the
    // other field alone decides, and with `*/n` both must match.
    assert_eq!(
        fires("0 0 * * 1", "2021-10-01T00:00:00Z", 2),
        ["2021-10-04T00:00:00Z", "2021-10-11T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 1 * *", "2021-10-01T00:00:00Z", 2),
        ["2021-11-01T00:00:00Z", "2021-12-01T00:00:00Z"]
    );
    // odd days that are also Mondays: Oct 2021 Mondays are 4, 11, 18, 25; Nov 1.
    assert_eq!(
        fires("0 0 */2 * mon", "2021-10-01T00:00:00Z", 2),
        ["2021-10-11T00:00:00Z", "2021-10-25T00:00:00Z"]
    );
}

#[test]
fn sunday_is_0_and_7() {
    let expected = ["2021-10-03T09:00:00Z", "2021-10-10T09:00:00Z"];
    assert_eq!(fires("0 9 * * 0", "2021-10-01T00:00:00Z", 2), expected);
    assert_eq!(fires("0 9 * * 7", "2021-10-01T00:00:00Z", 2), expected);
    assert_eq!(fires("0 9 * * SUN", "2021-10-01T00:00:00Z", 2), expected);
    // 5-7 is Friday, Saturday, Sunday.
    assert_eq!(
        fires("0 9 * * 5-7", "2021-10-01T09:00:00Z", 3),
        [
            "2021-10-02T09:00:00Z",
            "2021-10-03T09:00:00Z",
            "2021-10-08T09:00:00Z",
        ]
    );
}

#[test]
fn lists_ranges_steps_and_names() {
    assert_eq!(
        fires("10-20/5,45 3 * * *", "2021-01-01T00:00:00Z", 5),
        [
            "2021-01-01T03:10:00Z",
            "2021-01-01T03:15:00Z",
            "2021-01-01T03:20:00Z",
            "2021-01-01T03:45:00Z",
            "2021-01-02T03:10:00Z",
        ]
    );
    // a/n: from a to the end of the field.
    assert_eq!(
        fires("50/5 * * * *", "2021-01-01T00:00:00Z", 3),
        [
            "2021-01-01T00:50:00Z",
            "2021-01-01T00:55:00Z",
            "2021-01-01T01:50:00Z",
        ]
    );
    assert_eq!(
        fires("0 12 1 jan,Jul *", "2021-02-01T00:00:00Z", 2),
        ["2021-07-01T12:00:00Z", "2022-01-01T12:00:00Z"]
    );
    assert_eq!(
        fires("0 12 * * MON-wed", "2021-10-01T00:00:00Z", 3),
        [
            "2021-10-04T12:00:00Z",
            "2021-10-05T12:00:00Z",
            "2021-10-06T12:00:00Z",
        ]
    );
}

#[test]
fn macros() {
    let at = "2021-06-15T10:20:00Z";
    assert_eq!(fires("@hourly", at, 1), ["2021-06-15T11:00:00Z"]);
    assert_eq!(fires("@daily", at, 1), ["2021-06-16T00:00:00Z"]);
    assert_eq!(fires("@midnight", at, 1), ["2021-06-16T00:00:00Z"]);
    assert_eq!(fires("@weekly", at, 1), ["2021-06-20T00:00:00Z"]);
    assert_eq!(fires("@monthly", at, 1), ["2021-07-01T00:00:00Z"]);
    assert_eq!(fires("@yearly", at, 1), ["2022-01-01T00:00:00Z"]);
    assert_eq!(fires("@annually", at, 1), ["2022-01-01T00:00:00Z"]);
}

#[test]
fn six_fields_lead_with_seconds_and_fires_are_strictly_after() {
    assert_eq!(
        fires("*/15 * * * * *", "2021-01-01T00:00:00Z", 3),
        [
            "2021-01-01T00:00:15Z",
            "2021-01-01T00:00:30Z",
            "2021-01-01T00:00:45Z",
        ]
    );
    // a fractional `after` still gives the next whole second.
    assert_eq!(
        fires("* * * * * *", "2021-01-01T00:00:00.5Z", 1),
        ["2021-01-01T00:00:01Z"]
    );
}

#[test]
fn day_31_skips_short_months() {
    assert_eq!(
        fires("0 0 31 * *", "2021-01-31T00:00:00Z", 3),
        [
            "2021-03-31T00:00:00Z",
            "2021-05-31T00:00:00Z",
            "2021-07-31T00:00:00Z",
        ]
    );
}

#[test]
fn rejected_expressions() {
    for (expr, message) in [
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("* * * * * * *", "expected 5 fields"),
        ("", "empty expression"),
        ("* * 32 * *", "day-of-month field: 32 is out of range 1-31"),
        ("* * * * mon-", "day-of-week field: missing value"),
        (
            "* * * * monday",
            "day-of-week field: \"monday\" is not a weekday",
        ),
        (
            "1-2-3 * * * *",
            "minute field: \"2-3\" is not a number 0-59",
        ),
        (
            "*/x * * * *",
            "minute field: step \"x\" in \"*/x\" is not a positive number",
        ),
        (
            "0 0 31 4,6 *",
            "day-of-month field: \"31\" never occurs in month \"4,6\"",
        ),
    ] {
        let err = CronExpr::parse(expr).expect_err(expr).to_string();
        assert!(
            err.starts_with(message),
            "{expr:?}: {err:?} should start with {message:?}"
        );
    }
}
