//! The payment functions queries call by name, registered in every SQL session the engine
//! plans in (stream queries, `POST /api/sql`, pgwire, the tests' batch oracles), so a
//! function means the same wherever it runs.
//!
//! - `to_major(amount_minor, currency)` ([`money`]): minor units → the exact decimal text in
//!   the currency's major unit, by its ISO 4217 exponent.
//! - `business_date(event_time, tz, close_time)` ([`business_date`]): the business day an
//!   instant belongs to in a time zone with a daily close.
//! - `alert_id(rule, version, event_id)` ([`alert_id`]): a deterministic alert id.
//! - `fx_convert(amount_minor, currency, rate, to_currency)` ([`fx`]): exact conversion into
//!   minor units of another currency, rounded half to even.
//! - `ewma_zscore`, `ewma`, `mad_zscore` ([`anomaly`]): anomaly baselines over an ordered
//!   frame, as window functions.

pub mod alert_id;
pub mod anomaly;
pub mod business_date;
pub mod fx;
pub mod money;

use datafusion::prelude::SessionContext;

/// Registers every payment function in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(money::to_major_udf());
    ctx.register_udf(business_date::business_date_udf());
    ctx.register_udf(alert_id::alert_id_udf());
    ctx.register_udf(fx::fx_convert_udf());
    for f in anomaly::udafs() {
        ctx.register_udaf(f);
    }
}

/// The text of a string-like argument's row `i` (`None`: null).
pub(crate) fn text_at(a: &datafusion::arrow::array::StringArray, i: usize) -> Option<&str> {
    use datafusion::arrow::array::Array;
    a.is_valid(i).then(|| a.value(i))
}

/// `array` cast to plain UTF-8 strings.
pub(crate) fn as_strings(
    array: &datafusion::arrow::array::ArrayRef,
) -> datafusion::error::Result<datafusion::arrow::array::StringArray> {
    use datafusion::arrow::array::AsArray;
    let cast =
        datafusion::arrow::compute::cast(array, &datafusion::arrow::datatypes::DataType::Utf8)?;
    Ok(cast.as_string::<i32>().clone())
}

/// Runs Python `script` (the tests' independent reference: zoneinfo, decimal) over `input`
/// on its standard input; its output lines.
#[cfg(test)]
pub(crate) fn python_lines(script: &str, input: &str) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(out.status.success(), "the reference script failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}
