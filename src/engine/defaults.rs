//! The engine's defaults, written once: [`super::RunOptions::default`], the CLI's flags (whose
//! `--help` shows the `*_TEXT` spellings) and a query file's `SET`s all start from these.

/// Bounded out-of-orderness: watermark = max event time seen − 5 s.
pub const WATERMARK_DELAY_MS: i64 = 5_000;
/// [`WATERMARK_DELAY_MS`] as a flag's default.
pub const WATERMARK_DELAY_TEXT: &str = "5s";
/// An event time more than 5 min ahead of the watermark is dead-lettered.
pub const MAX_SKEW_MS: i64 = 300_000;
/// [`MAX_SKEW_MS`] as a flag's default.
pub const MAX_SKEW_TEXT: &str = "5m";
/// Event ids are remembered for 1 h of event time.
pub const DEDUP_TTL_MS: i64 = 3_600_000;
/// [`DEDUP_TTL_MS`] as a flag's default.
pub const DEDUP_TTL_TEXT: &str = "1h";
/// A log partition without records for 30 s stops holding the watermark back.
pub const IDLE_TIMEOUT_MS: i64 = 30_000;
/// Rows per decoded batch.
pub const BATCH_SIZE: usize = 8192;

/// Worker threads: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_duration_millis;

    #[test]
    fn the_flag_spellings_say_the_same_as_the_numbers() {
        assert_eq!(
            parse_duration_millis(WATERMARK_DELAY_TEXT),
            Ok(WATERMARK_DELAY_MS)
        );
        assert_eq!(parse_duration_millis(MAX_SKEW_TEXT), Ok(MAX_SKEW_MS));
        assert_eq!(parse_duration_millis(DEDUP_TTL_TEXT), Ok(DEDUP_TTL_MS));
    }
}
