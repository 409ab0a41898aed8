//! Event-time arithmetic: RFC 3339 parsing and formatting at millisecond precision, and the
//! human durations used by options (`5s`, `1h`, `500ms`).
//!
//! Hand-written rather than via chrono because it sits on the decode hot path (one parse per
//! event) and on the output path (two formats per result row).

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

thread_local! {
    /// The last `YYYY-MM-DD` parsed on this thread and its day number: events arrive roughly in
    /// time order, so consecutive timestamps almost always share their date.
    static LAST_DATE: std::cell::Cell<([u8; 10], i64)> = const { std::cell::Cell::new(([0; 10], 0)) };
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (`None` if it is not a valid one).
fn date_days(date: [u8; 10]) -> Option<i64> {
    let (last, days) = LAST_DATE.with(|c| c.get());
    if last == date {
        return Some(days);
    }
    let year = digits(&date[0..4])? as i64;
    let month = digits(&date[5..7])?;
    let day = digits(&date[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    LAST_DATE.with(|c| c.set((date, days)));
    Some(days)
}

/// Parses an RFC 3339 timestamp with a mandatory offset (`Z` or `±hh:mm`) into UTC epoch
/// milliseconds. Fractional seconds beyond milliseconds are truncated. `None` when malformed.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let days = date_days(b[..10].try_into().expect("10 bytes"))?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + (b[i] - b'0') as u32;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_minutes: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])? as i64;
            let m = digits(&[*m1, *m2])? as i64;
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_minutes * 60;
    Some(secs * 1000 + millis as i64)
}

std::thread_local! {
    /// The last day [`format_rfc3339_millis`] wrote, and its `YYYY-MM-DD` bytes: a sink writes
    /// row after row of the same day, and the calendar arithmetic is most of the formatting.
    static LAST_DAY: std::cell::Cell<(i64, [u8; 10])> = const { std::cell::Cell::new((i64::MIN, [0; 10])) };
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds: `2026-11-01T00:01:00.000Z`.
pub fn format_rfc3339_millis(ms: i64, out: &mut Vec<u8>) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
    // Years 0000 to 9999: the date from the last day written, or computed and kept.
    if (-719_528..=2_932_896).contains(&days) {
        let date = LAST_DAY.with(|last| {
            let (day, date) = last.get();
            if day == days {
                return date;
            }
            let (y, m, d) = civil_from_days(days);
            let y = y as u32;
            let date = [
                b'0' + (y / 1000) as u8,
                b'0' + (y / 100 % 10) as u8,
                b'0' + (y / 10 % 10) as u8,
                b'0' + (y % 10) as u8,
                b'-',
                b'0' + (m / 10) as u8,
                b'0' + (m % 10) as u8,
                b'-',
                b'0' + (d / 10) as u8,
                b'0' + (d % 10) as u8,
            ];
            last.set((days, date));
            date
        });
        let time = [
            b'T',
            b'0' + (hh / 10) as u8,
            b'0' + (hh % 10) as u8,
            b':',
            b'0' + (mm / 10) as u8,
            b'0' + (mm % 10) as u8,
            b':',
            b'0' + (ss / 10) as u8,
            b'0' + (ss % 10) as u8,
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ];
        out.extend_from_slice(&date);
        out.extend_from_slice(&time);
        return;
    }
    // Years beyond 0000–9999: signed, as RFC 3339 cannot spell them otherwise.
    let (y, m, d) = civil_from_days(days);
    out.extend_from_slice(
        format!("{y:+}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z").as_bytes(),
    );
}

/// [`format_rfc3339_millis`] into a new `String`.
pub fn rfc3339(ms: i64) -> String {
    let mut v = Vec::with_capacity(24);
    format_rfc3339_millis(ms, &mut v);
    String::from_utf8(v).expect("formatter writes ASCII")
}

/// Parses a duration such as `5s`, `500ms`, `2m`, `1h`, `1d` or `5 seconds` into milliseconds.
pub fn parse_duration_millis(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{s}` has no unit; write e.g. `5s`, `500ms`, `2m`, `1h`"))?;
    let (num, unit) = t.split_at(split);
    // A fraction (`1.5 second`) is exact in decimal: whole and fractional digits apart.
    let (whole, fraction) = num.split_once('.').unwrap_or((num, ""));
    let digits_only = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(fraction) || fraction.len() > 9 {
        return Err(format!(
            "`{s}` does not start with a number such as 5 or 1.5"
        ));
    }
    let n: i64 = whole
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number such as 5 or 1.5"))?;
    let unit_ms = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "second" | "seconds" => 1_000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`; use ms, s, m, h or d"
            ));
        }
    };
    let scale = 10i128.pow(fraction.len() as u32);
    let part = fraction.parse::<i128>().unwrap_or(0) * unit_ms as i128;
    if part % scale != 0 {
        return Err(format!(
            "`{s}` is not a whole number of milliseconds; write it in a smaller unit"
        ));
    }
    (n as i128 * unit_ms as i128 + part / scale)
        .try_into()
        .map_err(|_| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_millis("2026-11-01T00:00:00.016Z").map(rfc3339),
            Some("2026-11-01T00:00:00.016Z".to_string())
        );
        assert_eq!(
            parse_rfc3339_millis("2026-11-01T02:00:00.5+02:00").map(rfc3339),
            Some("2026-11-01T00:00:00.500Z".to_string())
        );
        assert_eq!(
            parse_rfc3339_millis("2026-11-01T00:00:00.123456789Z"),
            parse_rfc3339_millis("2026-11-01T00:00:00.123Z")
        );
        for bad in [
            "2026-11-01",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-01T00:00:00",
            "2026-11-01T24:00:00Z",
            "2026-11-01T00:00:00.Z",
            "2026-11-01T00:00:00+0200",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn civil_round_trip_over_many_days() {
        for day in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn parsing_round_trips_whatever_date_came_before() {
        // Runs of timestamps on one date (the cached path) mixed with jumps to other dates and
        // invalid dates that share a valid date's prefix.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut ms: i64 = 1_762_000_000_000;
        for _ in 0..20_000 {
            ms = match rng.random_range(0..10) {
                0 => rng.random_range(0..253_402_300_799_999),
                1 => {
                    assert_eq!(parse_rfc3339_millis("2026-02-30T00:00:00Z"), None);
                    ms
                }
                _ => ms + rng.random_range(0..5_000_000),
            };
            assert_eq!(
                parse_rfc3339_millis(&rfc3339(ms)),
                Some(ms),
                "{}",
                rfc3339(ms)
            );
        }
    }

    #[test]
    fn formatting_reuses_the_day_and_matches_the_calendar() {
        // Days in any order (the cached day changes back and forth), years 0000 to 9999.
        let mut ms: Vec<i64> = vec![
            -62_167_219_200_000,
            253_402_300_799_999,
            0,
            -1,
            1_793_491_200_000,
            1_793_491_199_999,
        ];
        let mut x: i64 = 12345;
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ms.push(x.rem_euclid(253_402_300_800_000 + 62_167_219_200_000) - 62_167_219_200_000);
        }
        for m in ms {
            let (secs, millis) = (m.div_euclid(1000), m.rem_euclid(1000));
            let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, mo, d) = civil_from_days(days);
            let want = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                sod / 3600,
                sod / 60 % 60,
                sod % 60
            );
            assert_eq!(rfc3339(m), want, "{m}");
            assert_eq!(rfc3339(m), want, "{m}, the day cached");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_millis("5s"), Ok(5000));
        assert_eq!(parse_duration_millis("5 seconds"), Ok(5000));
        assert_eq!(parse_duration_millis("250ms"), Ok(250));
        assert_eq!(parse_duration_millis("1h"), Ok(3_600_000));
        assert!(parse_duration_millis("5").is_err());
        assert_eq!(parse_duration_millis("1.5 second"), Ok(1500));
        assert_eq!(parse_duration_millis("0.25m"), Ok(15_000));
        assert!(
            parse_duration_millis("1.0005 s")
                .unwrap_err()
                .contains("milliseconds")
        );
        assert!(parse_duration_millis(".5s").is_err());
        assert!(parse_duration_millis("1.2.3s").is_err());
        assert!(parse_duration_millis("5 fortnights").is_err());
    }
}
