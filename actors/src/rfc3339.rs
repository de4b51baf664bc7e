//! A UTC instant as RFC 3339 text, byte for byte as chrono's serde writes
//! it (`2026-12-03T14:03:13.198Z`: the fraction in 3, 6 or 9 digits as
//! needed, none when whole; `Z`), written straight into a stack buffer.
//! Execution records carry four or five instants and are encoded on every
//! run's path; through chrono's `Display` machinery the instants were
//! about 5% of the daemon's CPU in a queue drain. Only serialization:
//! records are read back with chrono's own parser.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` is 30 bytes at most.
struct Text {
    buf: [u8; 30],
    len: usize,
}

impl Text {
    fn two(&mut self, v: u32) {
        self.buf[self.len] = b'0' + (v / 10 % 10) as u8;
        self.buf[self.len + 1] = b'0' + (v % 10) as u8;
        self.len += 2;
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn digits(&mut self, mut v: u32, count: usize) {
        for i in (0..count).rev() {
            self.buf[self.len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += count;
    }
}

/// The text, or `None` for a year outside 0..=9999 (chrono writes those
/// with a sign; the caller leaves them to chrono).
fn text(t: &DateTime<Utc>) -> Option<Text> {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = Text {
        buf: [0; 30],
        len: 0,
    };
    out.digits(year as u32, 4);
    out.byte(b'-');
    out.two(t.month());
    out.byte(b'-');
    out.two(t.day());
    out.byte(b'T');
    out.two(t.hour());
    out.byte(b':');
    out.two(t.minute());
    out.byte(b':');
    // A leap second is carried in the nanoseconds (as chrono writes it).
    let (sec, nano) = match t.nanosecond() {
        n if n >= 1_000_000_000 => (t.second() + 1, n - 1_000_000_000),
        n => (t.second(), n),
    };
    out.two(sec);
    if nano != 0 {
        out.byte(b'.');
        if nano % 1_000_000 == 0 {
            out.digits(nano / 1_000_000, 3);
        } else if nano % 1_000 == 0 {
            out.digits(nano / 1_000, 6);
        } else {
            out.digits(nano, 9);
        }
    }
    out.byte(b'Z');
    Some(out)
}

/// `#[serde(serialize_with = "crate::rfc3339::serialize")]`
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match text(t) {
        Some(text) => match std::str::from_utf8(&text.buf[..text.len]) {
            Ok(text) => s.serialize_str(text),
            Err(_) => t.serialize(s),
        },
        None => t.serialize(s),
    }
}

/// `#[serde(serialize_with = "crate::rfc3339::serialize_opt")]`
pub fn serialize_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    struct Instant<'a>(&'a DateTime<Utc>);
    impl Serialize for Instant<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }
    match t {
        Some(t) => s.serialize_some(&Instant(t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};
    use proptest::prelude::*;

    use super::*;

    fn ours(t: &DateTime<Utc>) -> String {
        serialize(t, serde_json::value::Serializer)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    fn chronos(t: &DateTime<Utc>) -> String {
        serde_json::to_string(t).unwrap_or_default()
    }

    #[test]
    fn whole_milli_micro_and_nano_fractions_leap_seconds_and_far_years() {
        let base = Utc.with_ymd_and_hms(2026, 12, 3, 14, 3, 13).unwrap();
        for nanos in [0, 198_000_000, 198_765_000, 198_765_432, 5, 1_000] {
            let t = base + chrono::TimeDelta::nanoseconds(nanos);
            assert_eq!(ours(&t), chronos(&t), "{nanos} ns");
        }
        assert_eq!(ours(&base), "\"2026-12-03T14:03:13Z\"");
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .unwrap()
            .and_utc();
        assert_eq!(ours(&leap), chronos(&leap));
        for year in [0, 9999, 10_000, -1] {
            let t = Utc.with_ymd_and_hms(year, 1, 2, 3, 4, 5).unwrap();
            assert_eq!(ours(&t), chronos(&t), "year {year}");
        }
    }

    #[test]
    fn an_absent_instant_is_null() {
        let none = serialize_opt(&None, serde_json::value::Serializer).unwrap();
        assert_eq!(none, serde_json::Value::Null);
    }

    proptest! {
        #[test]
        fn any_instant_is_written_as_chrono_writes_it(
            secs in 0i64..253_402_300_799,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1_000).prop_map(|m| m * 1_000_000),
                (0u32..1_000_000).prop_map(|u| u * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            prop_assert_eq!(ours(&t), chronos(&t));
            let opt = serialize_opt(&Some(t), serde_json::value::Serializer).unwrap();
            prop_assert_eq!(opt.to_string(), chronos(&t));
        }
    }
}
