//! Wall-clock time as the store records it: RFC 3339 in UTC with microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn now_rfc3339() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339_micros(since_epoch.as_micros() as i64)
}

/// Formats microseconds since the Unix epoch as RFC 3339 UTC.
pub fn format_rfc3339_micros(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as the store records it
/// (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`); `None` for any other text.
pub fn millis_from_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(str::parse::<i64>);
    let (hour, minute, second) = (
        clock.next()?.ok()?,
        clock.next()?.ok()?,
        clock.next()?.ok()?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let millis = match fraction.get(..3) {
        Some(digits) => digits.parse::<i64>().ok()?,
        None if fraction.is_empty() => 0,
        None => format!("{fraction:0<3}").parse::<i64>().ok()?,
    };
    let seconds = days_from_civil(year, month as u32, day as u32) * 86_400
        + hour * 3600
        + minute * 60
        + second;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// The day count since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_rfc3339_micros(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            format_rfc3339_micros(1_795_443_123_456_789),
            "2026-11-23T14:12:03.456789Z"
        );
        assert_eq!(format_rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for micros in [
            0,
            951_782_400_000_001,
            1_795_443_123_456_789,
            4_102_444_800_123_000,
        ] {
            let text = format_rfc3339_micros(micros);
            assert_eq!(
                millis_from_rfc3339(&text),
                Some((micros / 1000) as u64),
                "{text}"
            );
        }
        assert_eq!(
            millis_from_rfc3339("2026-11-23T14:12:03Z"),
            Some(1_795_443_123_000)
        );
        assert_eq!(
            millis_from_rfc3339("2026-11-23T14:12:03.4Z"),
            Some(1_795_443_123_400)
        );
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T14:12:03+01:00",
        ] {
            assert_eq!(millis_from_rfc3339(bad), None, "{bad}");
        }
    }
}
