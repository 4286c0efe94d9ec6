//! Timestamp parsing for the ISO-8601 strings Segment clients send.

use chrono::{DateTime, NaiveDateTime};

/// Parses an ISO-8601 / RFC 3339 timestamp into microseconds since the Unix epoch, UTC.
/// A timestamp without an offset is taken as UTC, as Segment does.
pub(crate) fn parse_iso8601_micros(text: &str) -> Option<i64> {
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed.timestamp_micros());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc().timestamp_micros());
        }
    }
    if let Ok(parsed) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(parsed.timestamp_micros());
    }
    None
}

/// Earliest accepted event time: 1900-01-01T00:00:00Z.
pub(crate) const MIN_MICROS: i64 = -2_208_988_800_000_000;
/// Latest accepted event time: 9999-12-31T23:59:59.999999Z.
pub(crate) const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Days since the Unix epoch of a UTC timestamp in microseconds (Arrow `Date32`).
pub(crate) fn micros_to_days(micros: i64) -> i32 {
    micros.div_euclid(86_400_000_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<i64>) {
        assert_eq!(parse_iso8601_micros(text), expected, "{text}");
    }

    #[test]
    fn parses_the_forms_clients_send() {
        check("2024-01-02T03:04:05Z", Some(1_704_164_645_000_000));
        check("2024-01-02T03:04:05.123Z", Some(1_704_164_645_123_000));
        check("2024-01-02T04:04:05.123+01:00", Some(1_704_164_645_123_000));
        check("2024-01-02T03:04:05.123456", Some(1_704_164_645_123_456));
        check("2024-01-02 03:04:05", Some(1_704_164_645_000_000));
        check("yesterday", None);
        check("", None);
    }

    #[test]
    fn days_round_down_before_the_epoch() {
        assert_eq!(micros_to_days(0), 0);
        assert_eq!(micros_to_days(86_400_000_000 - 1), 0);
        assert_eq!(micros_to_days(-1), -1);
    }
}
