//! Timestamps as the host records them (RFC 3339 in UTC, `2026-11-23T19:35:53.123456Z`) and as
//! timers take them (milliseconds since the Unix epoch).
//!
//! Time inside a plugin is frozen, so a projection or a policy takes its time from events'
//! `recorded-at`, which these functions turn into numbers and back.

use crate::Failure;

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp such as
/// `2026-11-23T19:35:53.123456Z` (any number of fraction digits, `Z` or a `±HH:MM` offset);
/// digits beyond the millisecond are dropped.
///
/// ```
/// use evhost_sdk::time::millis_from_rfc3339;
/// assert_eq!(millis_from_rfc3339("1970-01-01T00:00:01.5Z")?, 1_500);
/// assert_eq!(millis_from_rfc3339("2026-11-23T19:35:53.123456Z")?, 1_795_462_553_123);
/// assert!(millis_from_rfc3339("yesterday").is_err());
/// # Ok::<(), evhost_sdk::Failure>(())
/// ```
pub fn millis_from_rfc3339(text: &str) -> Result<u64, Failure> {
    parse(text.as_bytes()).ok_or_else(|| {
        Failure::new(format!(
            "timestamp {text:?} is not RFC 3339 (expected e.g. 2026-11-23T19:35:53.123456Z) \
             at or after 1970"
        ))
    })
}

/// The RFC 3339 UTC timestamp, with microseconds as the host writes them, of `millis` since the
/// Unix epoch.
///
/// ```
/// use evhost_sdk::time::rfc3339_from_millis;
/// assert_eq!(rfc3339_from_millis(1_795_462_553_123), "2026-11-23T19:35:53.123000Z");
/// ```
pub fn rfc3339_from_millis(millis: u64) -> String {
    let seconds = millis / 1000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        (millis % 1000) * 1000
    )
}

fn parse(text: &[u8]) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.iter().try_fold(0_i64, |n, &byte| {
            byte.is_ascii_digit()
                .then(|| n * 10 + i64::from(byte - b'0'))
        })
    };
    let separator =
        |index: usize, expected: &[u8]| text.get(index).is_some_and(|byte| expected.contains(byte));
    let separators = [(4, b"-"), (7, b"-"), (13, b":"), (16, b":")];
    if !separator(10, b"Tt ")
        || !separators
            .iter()
            .all(|(index, expected)| separator(*index, *expected))
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut index = 19;
    let mut millis = 0;
    if separator(index, b".") {
        index += 1;
        let start = index;
        while text.get(index).is_some_and(u8::is_ascii_digit) {
            if index - start < 3 {
                millis = millis * 10 + i64::from(text[index] - b'0');
            }
            index += 1;
        }
        let digits = index - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_seconds = match text.get(index..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = number(index + 1..index + 3)?;
            let minutes = number(index + 4..index + 6)?;
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hosts_timestamps() {
        assert_eq!(millis_from_rfc3339("1970-01-01T00:00:00.000000Z"), Ok(0));
        assert_eq!(
            millis_from_rfc3339("2000-02-29T23:59:59.999999Z"),
            Ok(951_868_799_999)
        );
        assert_eq!(
            millis_from_rfc3339("2026-11-23T19:35:53Z"),
            Ok(1_795_462_553_000)
        );
        assert_eq!(
            millis_from_rfc3339("2026-11-23T20:35:53.1+01:00"),
            Ok(1_795_462_553_100)
        );
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for text in [
            "",
            "2026-11-23",
            "2026-11-23T19:35:53",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T19:35:53.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-23T19:35:53Zjunk",
        ] {
            assert!(millis_from_rfc3339(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn formats_and_parses_back() {
        for millis in [
            0,
            1,
            999,
            951_868_799_999,
            1_795_462_553_123,
            4_102_444_800_000,
        ] {
            assert_eq!(
                millis_from_rfc3339(&rfc3339_from_millis(millis)),
                Ok(millis)
            );
        }
    }
}
