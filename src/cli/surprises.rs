//! The end-of-run check: a run that dead-lettered or dropped as late more than a sliver of its
//! input says so, with the top reasons and what to do, instead of exiting 0 without a word.
//!
//! Typical causes: the wrong file or format (every record dead-lettered), or an older file loaded
//! into a topic that already holds later events (every event behind the watermark, so late).
//! `--strict` turns the warning into a failing exit status, for scripts and CI.

use paystream::Summary;

/// Above this share of records dead-lettered (of those read) or late (of those accepted), a run
/// is reported.
pub(crate) const THRESHOLD: f64 = 0.01;

/// What to tell a user about where to look and what to change, per command.
pub(crate) struct Hints {
    /// Where the dead letters can be seen (`--dead-letter FILE`, a `.dlq` topic).
    pub dead_letters: String,
    /// What to do about late events.
    pub late: String,
}

/// The warnings for `summary` (empty when nothing is surprising), one paragraph each.
pub(crate) fn warnings(summary: &Summary, hints: &Hints) -> Vec<String> {
    let mut out = Vec::new();
    if summary.read > 0 && summary.dead_lettered as f64 > THRESHOLD * summary.read as f64 {
        let top: Vec<String> = summary
            .reasons
            .top()
            .iter()
            .take(3)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        out.push(format!(
            "warning: {} of {} records ({}) were dead-lettered; top reasons: {}. {}",
            summary.dead_lettered,
            summary.read,
            percent(summary.dead_lettered, summary.read),
            if top.is_empty() {
                "unknown".into()
            } else {
                top.join(", ")
            },
            hints.dead_letters
        ));
    }
    // Each query finds an event late or not: `late` counts per query.
    let arrivals = summary.accepted * summary.queries.max(1);
    if arrivals > 0 && summary.late as f64 > THRESHOLD * arrivals as f64 {
        let of = match summary.queries {
            0 | 1 => format!("{} accepted events", summary.accepted),
            q => format!("{} accepted events × {q} queries", summary.accepted),
        };
        out.push(format!(
            "warning: {} of {of} ({}) were late: their windows had already closed when they arrived, so no result counts them. {}",
            summary.late,
            percent(summary.late, arrivals),
            hints.late
        ));
    }
    out
}

/// Prints the warnings for `summary` on stderr; with `strict`, any warning is an error.
pub(crate) fn report(summary: &Summary, hints: &Hints, strict: bool) -> anyhow::Result<()> {
    let w = warnings(summary, hints);
    for line in &w {
        eprintln!("{line}");
    }
    if strict && !w.is_empty() {
        anyhow::bail!(
            "--strict: more than {}% of the records were dead-lettered or late (see the warnings above)",
            THRESHOLD * 100.0
        );
    }
    Ok(())
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use paystream::decode::RejectReason;

    use super::*;

    fn hints() -> Hints {
        Hints {
            dead_letters: "DL-HINT".into(),
            late: "LATE-HINT".into(),
        }
    }

    #[test]
    fn a_clean_run_says_nothing_and_a_noisy_one_names_its_reasons() {
        let mut s = Summary {
            read: 1000,
            accepted: 1000,
            ..Summary::default()
        };
        assert!(warnings(&s, &hints()).is_empty());
        // Exactly 1 % is within the threshold; above it is reported.
        s.dead_lettered = 10;
        assert!(warnings(&s, &hints()).is_empty());
        s.dead_lettered = 600;
        s.accepted = 400;
        for _ in 0..500 {
            s.reasons.add(RejectReason::MissingField);
        }
        for _ in 0..100 {
            s.reasons.add(RejectReason::Malformed);
        }
        let w = warnings(&s, &hints());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("600 of 1000 records (60.0%)")
                && w[0].contains("missing_field 500, malformed 100")
                && w[0].ends_with("DL-HINT"),
            "{}",
            w[0]
        );
        s.late = 300;
        let w = warnings(&s, &hints());
        assert_eq!(w.len(), 2, "{w:?}");
        // Two queries: 300 late arrivals of 800.
        s.queries = 2;
        let two = warnings(&s, &hints());
        assert!(
            two[1].contains("300 of 400 accepted events × 2 queries (37.5%)"),
            "{}",
            two[1]
        );
        s.queries = 1;
        assert!(
            w[1].contains("300 of 400 accepted events (75.0%)") && w[1].ends_with("LATE-HINT"),
            "{}",
            w[1]
        );
        assert!(report(&s, &hints(), true).is_err());
        assert!(report(&s, &hints(), false).is_ok());
    }
}
