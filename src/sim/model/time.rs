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
///
/// Every item pushed carries one. A Unix minute is always 60,000 ms (no leap seconds), so
/// the date, hour and minute are worked out once a minute per thread and kept; the rest is
/// written digit by digit. (The calendar arithmetic and the formatting machinery cost the
/// simulator several per cent of an agent message's instructions.)
pub fn format_ms(ms: i64) -> String {
    thread_local! {
        /// The last minute formatted on this thread and its `YYYY-MM-DDTHH:MM:` text.
        static MINUTE: std::cell::Cell<Option<(i64, [u8; 17])>> =
            const { std::cell::Cell::new(None) };
    }
    let minute = ms.div_euclid(60_000);
    let prefix = MINUTE.with(|cell| match cell.get() {
        Some((m, text)) if m == minute => Some(text),
        _ => {
            let dt = utc_ms(ms);
            // Out of the calendar's range `utc_ms` gives the epoch instead.
            if dt.unix_timestamp_nanos() != i128::from(ms) * 1_000_000 {
                return None;
            }
            let text = minute_text(dt)?;
            cell.set(Some((minute, text)));
            Some(text)
        }
    });
    let Some(prefix) = prefix else {
        return formatted(utc_ms(ms));
    };
    // Below 60,000.
    let in_minute = ms.rem_euclid(60_000) as u32;
    let mut out = [0u8; 24];
    out[..17].copy_from_slice(&prefix);
    digits(&mut out[17..19], in_minute / 1000);
    out[19] = b'.';
    digits(&mut out[20..23], in_minute % 1000);
    out[23] = b'Z';
    // Only ASCII digits and separators were written.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:` of `dt`, for a four-digit year.
fn minute_text(dt: time::OffsetDateTime) -> Option<[u8; 17]> {
    let year @ 0..=9999 = u32::try_from(dt.year()).ok()? else {
        return None;
    };
    let mut text = [0u8; 17];
    let fields = [
        (0..4, year, b'-'),
        (5..7, u32::from(u8::from(dt.month())), b'-'),
        (8..10, u32::from(dt.day()), b'T'),
        (11..13, u32::from(dt.hour()), b':'),
        (14..16, u32::from(dt.minute()), b':'),
    ];
    for (at, value, after) in fields {
        let end = at.end;
        digits(&mut text[at], value);
        text[end] = after;
    }
    Some(text)
}

/// `value`'s last `out.len()` decimal digits, zero-padded.
fn digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
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
        // Across minute, hour, day and year boundaries, in order and out of it (the kept
        // minute changes each time).
        let base = 1_577_836_800_000i64; // 2020-01-01T00:00:00.000Z
        for step in [
            -86_400_001i64,
            -60_001,
            -1,
            0,
            1,
            999,
            59_999,
            60_000,
            3_599_999,
        ] {
            for ms in [base + step, base - step, base + 7 * step] {
                assert_eq!(format_ms(ms), formatted(utc_ms(ms)), "{ms}");
            }
        }
    }
}
