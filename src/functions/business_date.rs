//! `business_date(event_time, tz, close_time)`: the business day an instant belongs to — its
//! calendar date in the IANA time zone `tz` (daylight saving included), moved to the next date
//! when the local time is at or after the daily close `close_time` (`'HH:MM'` or `'HH:MM:SS'`;
//! `'00:00'` gives the plain local date). A merchant that closes its books at 22:00 New York
//! time books a 22:30 capture on the next day. A DATE (written `"YYYY-MM-DD"`); NULL for a
//! null argument, an unknown zone or a close time that is not one.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{NaiveTime, TimeZone};
use chrono_tz::Tz;
use datafusion::arrow::array::{Array, AsArray, Date32Builder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit, TimestampMillisecondType};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// The business date of `ms` (epoch milliseconds) in `tz` with a daily close at `close`, as
/// days since 1970-01-01. The close is an instant — the local date's `close` time, the first
/// of two when the clocks go back (so a day once closed stays closed), and in the hour the
/// clocks skip read with the offset before the change (Python's `fold = 0`) — so business
/// dates never go backwards as time goes forwards.
pub fn business_day(ms: i64, tz: Tz, close: NaiveTime) -> Option<i32> {
    let local = tz.timestamp_millis_opt(ms).single()?.naive_local();
    let mut date = local.date();
    if close != NaiveTime::MIN && ms >= close_instant(tz, date.and_time(close))? {
        date = date.succ_opt()?;
    }
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

/// The instant (epoch ms) of local time `at` in `tz`: the earlier of two, or in a gap the
/// time read with the offset in force before it.
fn close_instant(tz: Tz, at: chrono::NaiveDateTime) -> Option<i64> {
    use chrono::Offset;
    match tz.from_local_datetime(&at) {
        chrono::LocalResult::Single(t) => Some(t.timestamp_millis()),
        chrono::LocalResult::Ambiguous(a, b) => {
            Some(a.timestamp_millis().min(b.timestamp_millis()))
        }
        chrono::LocalResult::None => {
            let before = tz
                .from_local_datetime(&(at - chrono::Duration::hours(3)))
                .earliest()?
                .offset()
                .fix();
            Some((at - before).and_utc().timestamp_millis())
        }
    }
}

/// `'HH:MM'` or `'HH:MM:SS'`.
pub fn parse_close(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M"))
        .ok()
}

/// The function `business_date`.
pub fn business_date_udf() -> ScalarUDF {
    ScalarUDF::from(BusinessDate {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BusinessDate {
    signature: Signature,
}

impl ScalarUDFImpl for BusinessDate {
    fn name(&self) -> &str {
        "business_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [time, tz, close] = args else {
            return Err(DataFusionError::Plan(
                "business_date takes three arguments: business_date(event_time, 'Europe/Paris', '00:00')".into(),
            ));
        };
        let time = match time {
            DataType::Timestamp(_, _) | DataType::Null => {
                DataType::Timestamp(TimeUnit::Millisecond, None)
            }
            other => {
                return Err(DataFusionError::Plan(format!(
                    "business_date's first argument is a timestamp (event_time), not {other}"
                )));
            }
        };
        Ok(vec![
            time,
            super::money::currency_type(tz, "business_date's time zone")?,
            super::money::currency_type(close, "business_date's close time")?,
        ])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }

    /// A zone or close time written as a literal is checked when the query is planned: a typo
    /// is refused then, not turned into NULL dates.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let literal = |i: usize| match args.scalar_arguments.get(i).copied().flatten() {
            Some(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
            ) => Some(s.as_str()),
            _ => None,
        };
        if let Some(tz) = literal(1)
            && Tz::from_str(tz.trim()).is_err()
        {
            return Err(DataFusionError::Plan(format!(
                "business_date: '{tz}' is not an IANA time zone; write one such as 'Europe/Paris' or 'America/New_York'"
            )));
        }
        if let Some(close) = literal(2)
            && parse_close(close).is_none()
        {
            return Err(DataFusionError::Plan(format!(
                "business_date: '{close}' is not a close time; write 'HH:MM' or 'HH:MM:SS' ('00:00' for the plain local date)"
            )));
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Date32, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let times = arrays[0].as_primitive::<TimestampMillisecondType>();
        let zones = super::as_strings(&arrays[1])?;
        let closes = super::as_strings(&arrays[2])?;
        // Zones and close times repeat: each text is parsed once per batch.
        let mut tz_of: HashMap<&str, Option<Tz>> = HashMap::new();
        let mut close_of: HashMap<&str, Option<NaiveTime>> = HashMap::new();
        let mut out = Date32Builder::with_capacity(args.number_rows);
        for i in 0..args.number_rows {
            let tz = super::text_at(&zones, i).and_then(|z| {
                *tz_of
                    .entry(z)
                    .or_insert_with(|| Tz::from_str(z.trim()).ok())
            });
            let close = super::text_at(&closes, i)
                .and_then(|c| *close_of.entry(c).or_insert_with(|| parse_close(c)));
            let day = match (times.is_valid(i), tz, close) {
                (true, Some(tz), Some(close)) => business_day(times.value(i), tz, close),
                _ => None,
            };
            out.append_option(day);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn date(days: i32) -> String {
        (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days as i64))
            .to_string()
    }

    #[test]
    fn examples() {
        let t = |s: &str| crate::time::parse_rfc3339_millis(s).unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        let close = |s| parse_close(s).unwrap();
        // 2026-11-01T03:30Z is 23:30 on Oct 31 in New York (EDT, UTC−4)…
        assert_eq!(
            date(business_day(t("2026-11-01T03:30:00Z"), ny, close("00:00")).unwrap()),
            "2026-10-31"
        );
        // … and past a 22:00 close, the next business day.
        assert_eq!(
            date(business_day(t("2026-11-01T03:30:00Z"), ny, close("22:00")).unwrap()),
            "2026-11-01"
        );
        // After the switch to EST (UTC−5): 2026-11-02T04:30Z is 23:30 on Nov 1.
        assert_eq!(
            date(business_day(t("2026-11-02T04:30:00Z"), ny, close("00:00")).unwrap()),
            "2026-11-01"
        );
        // Exactly at the close is after it.
        assert_eq!(
            date(business_day(t("2026-11-02T03:00:00Z"), ny, close("22:00")).unwrap()),
            "2026-11-02"
        );
        assert!(parse_close("24:00").is_none() && parse_close("7pm").is_none());
        // A close in the hour the clocks repeat (New York, 2026-11-01, 01:00–02:00 twice): the
        // first 01:30 closes the day; 01:10 EST, later in real time, is still the next day's.
        let at_0130 = close("01:30");
        assert_eq!(
            date(business_day(t("2026-11-01T05:40:00Z"), ny, at_0130).unwrap()),
            "2026-11-02"
        );
        assert_eq!(
            date(business_day(t("2026-11-01T06:10:00Z"), ny, at_0130).unwrap()),
            "2026-11-02"
        );
        assert_eq!(
            date(business_day(t("2026-11-01T05:20:00Z"), ny, at_0130).unwrap()),
            "2026-11-01"
        );
        assert_eq!(parse_close("17:30:15"), NaiveTime::from_hms_opt(17, 30, 15));
    }

    /// Against Python's `zoneinfo` (an independent implementation of the tz database) over
    /// random instants, zones (some with daylight saving, half-hour and 45-minute offsets) and
    /// close times.
    #[test]
    fn agrees_with_python_zoneinfo() {
        let zones = [
            "UTC",
            "Europe/Paris",
            "America/New_York",
            "America/Sao_Paulo",
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "Asia/Tokyo",
            "America/St_Johns",
        ];
        let closes = [
            "00:00", "22:00", "17:30", "03:00", "23:59:59", "02:30", "01:30",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cases: Vec<(i64, &str, &str)> = (0..3000)
            .map(|_| {
                (
                    rng.random_range(1_600_000_000_000i64..1_900_000_000_000),
                    zones[rng.random_range(0..zones.len())],
                    closes[rng.random_range(0..closes.len())],
                )
            })
            .collect();
        let script = r#"
import sys, datetime, zoneinfo
for line in sys.stdin:
    ms, tz, close = line.split()
    t = datetime.datetime.fromtimestamp(int(ms) // 1000, zoneinfo.ZoneInfo(tz))
    c = datetime.time.fromisoformat(close)
    d = t.date()
    closes = datetime.datetime.combine(d, c, tzinfo=zoneinfo.ZoneInfo(tz))
    if c != datetime.time(0) and int(ms) // 1000 >= closes.timestamp():
        d += datetime.timedelta(days=1)
    print(d.isoformat())
"#;
        let input: String = cases
            .iter()
            .map(|(ms, tz, c)| format!("{ms} {tz} {c}\n"))
            .collect();
        let want = crate::functions::python_lines(script, &input);
        assert_eq!(want.len(), cases.len());
        for ((ms, tz, c), want) in cases.iter().zip(want) {
            // Python's fromtimestamp drops the milliseconds: so does the comparison here.
            let ms = ms.div_euclid(1000) * 1000;
            let got = business_day(ms, tz.parse().unwrap(), parse_close(c).unwrap()).unwrap();
            assert_eq!(date(got), want, "{ms} {tz} {c}");
        }
    }
}
