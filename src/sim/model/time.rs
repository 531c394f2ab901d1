//! Wall-clock time as the participant service writes it: milliseconds since the Unix epoch
//! and the `2019-11-08T02:41:28.172Z` format of `AbsoluteTime` and expiries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The participant service's time format: `2019-11-08T02:41:28.172Z` (UTC, milliseconds).
pub fn format_ms(ms: i64) -> String {
    let dt = utc_ms(ms);
    let Ok(year @ 0..=9999) = u32::try_from(dt.year()) else {
        return formatted(dt);
    };
    // Written digit by digit: the formatting machinery cost the simulator about 4 % of an
    // agent message's instructions.
    let mut out = String::with_capacity(24);
    let fields = [
        (year, 4, '-'),
        (u32::from(u8::from(dt.month())), 2, '-'),
        (u32::from(dt.day()), 2, 'T'),
        (u32::from(dt.hour()), 2, ':'),
        (u32::from(dt.minute()), 2, ':'),
        (u32::from(dt.second()), 2, '.'),
        (u32::from(dt.millisecond()), 3, 'Z'),
    ];
    for (value, width, after) in fields {
        for place in (0..width).rev() {
            let digit = value / 10u32.pow(place) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
        out.push(after);
    }
    out
}

/// The instant `ms` after the Unix epoch (the epoch itself when out of range).
fn utc_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// [`format_ms`] through the formatting machinery: years it does not write digit by digit.
fn formatted(dt: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// `format_ms` of a wall-clock instant `after` from now.
pub fn format_after(after: Duration) -> String {
    let ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
    format_ms(now_ms().saturating_add(ms))
}

/// Parse an ISO 8601 / RFC 3339 time to milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_has_millisecond_precision() {
        assert_eq!(format_ms(1_573_180_888_172), "2019-11-08T02:41:28.172Z");
        assert_eq!(
            parse_time_ms("2019-11-08T02:41:28.172Z"),
            Some(1_573_180_888_172)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
        for ms in [
            0,
            1,
            999,
            -1,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MIN,
            -62_167_219_200_001,
        ] {
            assert_eq!(format_ms(ms), formatted(utc_ms(ms)), "{ms}");
        }
    }
}
