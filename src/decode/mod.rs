//! Decode: bytes from a source → Arrow batches of valid events, plus rejects.
//!
//! Second stage on the data's path (source → **decode** → operators → sink). A decoder never
//! fails on a bad record: it returns the good rows as a [`DecodedBatch`] and every bad one as a
//! [`Reject`] with its reason and position, so `read = accepted + rejected` holds per chunk.

mod card;
mod csv;
mod currency;
pub(crate) use currency::is_iso4217;
mod declared;
mod decoder;
mod fast;
mod json;
mod parquet;
mod payload_hash;
mod prim_column;
mod projection;
mod reject;
mod row;
mod str_column;
mod taken;
mod validity;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use datafusion::arrow::array::RecordBatch;

pub use self::card::{
    MAX_GAP, contains_card_number, is_separator, record_contains_card_number, redact, redact_bytes,
    redact_value,
};
pub use self::csv::{BOM, CsvHeader, CsvHeaderError, last_record_end, record_end};
pub use self::declared::{
    ColumnKind, DeclaredDecoder, MAX_CHARS, METADATA, MetaKey, MetaValue, RecordMeta, metadata_keys,
};
pub use self::decoder::Decoder;
pub use self::parquet::ParquetColumns;
pub use self::projection::Projection;
pub use self::reject::{Origin, PositionKind, ReasonCounts, Reject, RejectReason};
use self::row::ValidRow;
pub use self::row::{EventBatchBuilder, MAX_AMOUNT, RawRow, validate};

/// Input formats for event files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// CSV with a header row naming the event fields.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// Guesses the format from a file extension.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// Parses a `--format` value.
    pub fn from_name(s: &str) -> Option<Format> {
        match s {
            "json" | "jsonl" | "jsonlines" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// Valid events decoded from one chunk, with their positions and payload hashes.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// Events in [`crate::schema::event_schema`] order.
    pub batch: RecordBatch,
    /// Position of each row in its origin (line, row or offset).
    pub positions: Vec<u64>,
    /// `ValidRow::payload_hash` of each row, for duplicate-conflict detection.
    pub payload_hashes: Vec<u64>,
    /// Where each row's record is in its chunk: the byte range of its line (text formats) or
    /// `(row, row + 1)` of its Parquet batch; for [`DecodedBatch::raw_record`].
    pub raw_spans: Vec<(u32, u32)>,
    /// What the chunk was decoded from, when the decoder's caller kept it
    /// ([`Decoded::keep_source`]).
    pub source: Option<RawSource>,
    /// When a [`Projection`] left columns out (built as empty strings): how whole events are
    /// then decoded again from `source` when needed (the late output).
    pub projected: Option<Redecode>,
}

/// How the records of a batch whose decoder left columns out are decoded again, whole.
#[derive(Debug, Clone)]
pub enum Redecode {
    /// The payment event's decoder, every column built.
    Payments,
    /// A declared source's decoder, every column built.
    Declared(Arc<DeclaredDecoder>),
}

impl Redecode {
    /// The columns of the events it decodes.
    pub fn events(&self) -> datafusion::arrow::datatypes::SchemaRef {
        match self {
            Redecode::Payments => crate::schema::event_schema(),
            Redecode::Declared(d) => Arc::clone(d.events().arrow()),
        }
    }

    /// Decodes JSON Lines of about `rows` records, every column built.
    pub fn json_lines(&self, text: &[u8], rows: usize) -> Decoded {
        match self {
            Redecode::Payments => decode_json_lines(text, 1, rows),
            Redecode::Declared(d) => d.json_lines(text, 1, rows, rows, None),
        }
    }
}

/// What a chunk was decoded from, kept while its batches are routed so that a record rejected
/// after decoding (a far-future time, a duplicate conflict) is dead-lettered as it was received
/// — key order, time zone offset, extra fields and all — rather than re-serialised. Only the
/// rejected records are ever materialised; the rest costs one range per row.
#[derive(Debug, Clone)]
pub enum RawSource {
    /// The text chunk (JSON Lines, CSV, log records one a line).
    Text(Arc<ChunkBytes>),
    /// The Parquet batch's columns.
    Parquet(Arc<ParquetColumns>),
}

/// A chunk's bytes, handed back to the reader that filled them (`recycle`) once the last
/// batch decoded from them is dropped, so the reader reuses warm memory.
#[derive(Debug)]
pub struct ChunkBytes {
    bytes: Vec<u8>,
    recycle: Option<SyncSender<Vec<u8>>>,
}

impl ChunkBytes {
    /// Wraps a chunk; `recycle` gets the buffer back when this is dropped (if it has room).
    pub fn new(bytes: Vec<u8>, recycle: Option<SyncSender<Vec<u8>>>) -> Self {
        ChunkBytes { bytes, recycle }
    }

    /// The chunk.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for ChunkBytes {
    fn drop(&mut self) {
        if let Some(tx) = self.recycle.take() {
            let _ = tx.try_send(std::mem::take(&mut self.bytes));
        }
    }
}

/// A span that says "unknown" (a chunk beyond 4 GiB): the record is then re-serialised.
const NO_SPAN: (u32, u32) = (u32::MAX, u32::MAX);

fn span(start: usize, end: usize) -> (u32, u32) {
    match (u32::try_from(start), u32::try_from(end)) {
        (Ok(s), Ok(e)) if e != u32::MAX => (s, e),
        _ => NO_SPAN,
    }
}

impl DecodedBatch {
    /// Row `i`'s record as it was received (not yet redacted: [`Reject::new`] redacts), from
    /// the kept source; re-serialised from the batch when no source was kept.
    pub fn raw_record(&self, i: usize) -> String {
        let sp = self.raw_spans.get(i).copied().unwrap_or(NO_SPAN);
        match &self.source {
            Some(RawSource::Text(c)) if sp != NO_SPAN => {
                if let Some(b) = c.bytes().get(sp.0 as usize..sp.1 as usize) {
                    return String::from_utf8_lossy(b).into_owned();
                }
            }
            Some(RawSource::Parquet(cols)) if sp != NO_SPAN => {
                return cols.row_json(sp.0 as usize);
            }
            _ => {}
        }
        crate::sink::event_json(&self.batch, i)
    }
}

/// Everything decoded from one chunk of input.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Valid events, in input order, in batches of at most the requested size.
    pub batches: Vec<DecodedBatch>,
    /// Rejected records, in input order.
    pub rejects: Vec<Reject>,
    /// Records read (valid + rejected).
    pub records: u64,
    /// Fields outside the event format that were ignored.
    pub unknown_fields: u64,
}

/// Collects valid rows into batches of a fixed size.
struct Assembler {
    builder: EventBatchBuilder,
    positions: Vec<u64>,
    spans: Vec<(u32, u32)>,
    hashes: Vec<u64>,
    batch_size: usize,
    out: Decoded,
}

impl Decoded {
    /// Keeps `source` (what this chunk was decoded from) with every batch, for
    /// [`DecodedBatch::raw_record`].
    pub fn keep_source(&mut self, source: RawSource) {
        for b in &mut self.batches {
            b.source = Some(source.clone());
        }
    }
}

impl Assembler {
    /// An assembler for about `expected_rows` rows in batches of `batch_size`.
    fn new(batch_size: usize, expected_rows: usize, projection: &Projection) -> Self {
        let batch_size = batch_size.max(1);
        let cap = batch_size.min(expected_rows.max(1)).min(8192);
        Assembler {
            builder: EventBatchBuilder::projected(cap, projection),
            positions: Vec::with_capacity(cap),
            spans: Vec::with_capacity(cap),
            hashes: Vec::with_capacity(cap),
            batch_size,
            out: Decoded::default(),
        }
    }

    /// Validates and appends one parsed record, `bytes` at `at` in its chunk.
    fn row(&mut self, raw: &RawRow<'_>, pos: u64, bytes: &[u8], at: usize) {
        self.out.records += 1;
        self.out.unknown_fields += raw.unknown_fields as u64;
        match validate(raw) {
            Ok(v) => {
                let sp = span(at, at + bytes.len());
                self.accept(&v, pos, sp)
            }
            Err((reason, detail)) => self.reject(reason, detail, pos, bytes),
        }
    }

    /// Appends a record already validated as `v` (counted by the caller); `sp` is where it is
    /// in its chunk.
    fn accept(&mut self, v: &ValidRow<'_>, pos: u64, sp: (u32, u32)) {
        self.push(v, pos, v.payload_hash(), sp);
    }

    /// Counts and appends a record the fast path took from `line` (at `at` in its chunk).
    fn taken(&mut self, v: &ValidRow<'_>, taken: fast::Taken, pos: u64, line: &[u8], at: usize) {
        self.out.records += 1;
        self.out.unknown_fields += u64::from(taken.unknown);
        let sp = span(at, at + line.len());
        self.push(v, pos, v.payload_hash(), sp);
    }

    /// Appends a valid record with its payload hash and span (counted by the caller).
    fn push(&mut self, v: &ValidRow<'_>, pos: u64, hash: u64, sp: (u32, u32)) {
        self.hashes.push(hash);
        self.positions.push(pos);
        self.spans.push(sp);
        self.builder.append(v);
        if self.builder.len() >= self.batch_size {
            self.flush();
        }
    }

    /// `bytes` as text, or `None` after counting and dead-lettering the record as invalid UTF-8.
    fn utf8<'a>(&mut self, bytes: &'a [u8], pos: u64) -> Option<&'a str> {
        match std::str::from_utf8(bytes) {
            Ok(t) => Some(t),
            Err(e) => {
                self.out.records += 1;
                self.reject(
                    RejectReason::InvalidUtf8,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
                    pos,
                    bytes,
                );
                None
            }
        }
    }

    fn reject(&mut self, reason: RejectReason, detail: String, pos: u64, bytes: &[u8]) {
        self.out
            .rejects
            .push(Reject::new(reason, detail, pos, bytes));
    }

    fn flush(&mut self) {
        if self.builder.is_empty() {
            return;
        }
        self.out.batches.push(DecodedBatch {
            batch: self.builder.finish_rows(&self.spans),
            positions: std::mem::take(&mut self.positions),
            payload_hashes: std::mem::take(&mut self.hashes),
            raw_spans: std::mem::take(&mut self.spans),
            source: None,
            projected: self
                .builder
                .leaves_columns_out()
                .then_some(Redecode::Payments),
        });
    }

    fn finish(mut self) -> Decoded {
        self.flush();
        self.out
    }
}

/// Decodes a chunk of JSON Lines whose first line is number `first_line` (1-based).
/// Blank lines are skipped and not counted as records.
pub fn decode_json_lines(chunk: &[u8], first_line: u64, batch_size: usize) -> Decoded {
    let lines = memchr::memchr_iter(b'\n', chunk).count() + 1;
    decode_json_lines_sized(chunk, first_line, batch_size, lines)
}

/// [`decode_json_lines`] for a caller that already knows about how many lines the chunk holds.
///
/// Column buffers are sized from it: sized from the byte count instead, they came out 2.6
/// times too large for payment events, which spread a chunk's rows over more fresh pages (the
/// pipeline's peak memory was 135 MiB instead of 105 MiB, all of it zeroed by the kernel).
pub fn decode_json_lines_sized(
    chunk: &[u8],
    first_line: u64,
    batch_size: usize,
    lines: usize,
) -> Decoded {
    decode_json_lines_projected(chunk, first_line, batch_size, lines, &Projection::ALL)
}

/// [`decode_json_lines_sized`] building only the columns of `projection`.
pub fn decode_json_lines_projected(
    chunk: &[u8],
    first_line: u64,
    batch_size: usize,
    lines: usize,
    projection: &Projection,
) -> Decoded {
    let mut asm = Assembler::new(batch_size, lines, projection);
    // UTF-8 is checked once for the whole chunk (the common case), per line only if that fails.
    // All-ASCII text, the commonest, is recognised 64 bytes at a time.
    let chunk_text = if is_ascii(chunk) {
        // SAFETY: ASCII is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(chunk) })
    } else {
        std::str::from_utf8(chunk).ok()
    };
    let mut order = json::KeyOrder::default();
    let mut fast = fast::FastPath::default();
    let mut valid = ValidRow::empty();
    let mut start = 0;
    let mut pos = first_line;
    while start <= chunk.len() {
        // Most lines are valid events: the fast path reads one and tells where it ends,
        // so a line it takes costs no separate search for its newline.
        if let Some(text) = chunk_text {
            // SAFETY: `start` is 0 or follows a `\n`: a char boundary.
            let rest = unsafe { text.get_unchecked(start..) };
            if let Some(taken) = fast.row(rest, &mut valid) {
                let end = start + taken.len;
                if matches!(chunk.get(end), None | Some(b'\n')) {
                    asm.taken(&valid, taken, pos, &chunk[start..end], start);
                    pos += 1;
                    start = end + 1;
                    continue;
                }
            }
        }
        // memchr finds line ends a word at a time; `split` with a closure went byte by byte.
        let end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i);
        let line = &chunk[start..end];
        let line_start = start;
        let this = pos;
        pos += 1;
        start = end + 1;
        if end == chunk.len() && line.is_empty() {
            break;
        }
        let pos = this;
        let crlf = line.last() == Some(&b'\r');
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        // A line of a valid chunk is valid: '\n' never occurs inside a UTF-8 sequence.
        // SAFETY: the line starts after a `\n` (or at the chunk's start) and ends before `\n`,
        // `\r` or the chunk's end: ASCII bytes or ends, so char boundaries of `t`.
        let Some(text) = chunk_text
            .map(|t| unsafe { t.get_unchecked(line_start..line_start + line.len()) })
            .or_else(|| asm.utf8(line, pos))
        else {
            continue;
        };
        // The fast path already declined the line, unless the chunk was not text or the line
        // ends in `\r\n`.
        if (chunk_text.is_none() || crlf)
            && let Some(taken) = fast.row(text, &mut valid)
            && taken.len == text.len()
        {
            asm.taken(&valid, taken, pos, line, line_start);
            continue;
        }
        let mut row = RawRow::default();
        match json::parse_object(text, &mut row, &mut order) {
            Ok(()) => asm.row(&row, pos, line, line_start),
            Err((reason, detail)) => {
                asm.out.records += 1;
                asm.reject(reason, detail, pos, line);
            }
        }
    }
    asm.finish()
}

/// Whether `b` is all ASCII: 64 bytes per step with SSE2 (the standard library's check went a
/// word at a time, and UTF-8 validation of the chunk was 4 % of decoding).
pub(super) fn is_ascii(b: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128};
        let blocks = b.chunks_exact(64);
        let tail = blocks.remainder();
        for block in blocks {
            // SAFETY: SSE2 is baseline on x86_64; the four unaligned loads read the 64 bytes
            // of `block`.
            let high = unsafe {
                let p = block.as_ptr().cast::<__m128i>();
                let v = _mm_or_si128(
                    _mm_or_si128(_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))),
                    _mm_or_si128(_mm_loadu_si128(p.add(2)), _mm_loadu_si128(p.add(3))),
                );
                _mm_movemask_epi8(v)
            };
            if high != 0 {
                return false;
            }
        }
        tail.is_ascii()
    }
    #[cfg(not(target_arch = "x86_64"))]
    b.is_ascii()
}

/// Decodes a chunk of CSV records (no header) whose first record starts on line `first_line`.
pub fn decode_csv(chunk: &[u8], first_line: u64, header: &CsvHeader, batch_size: usize) -> Decoded {
    decode_csv_routed(chunk, first_line, header, batch_size, true)
}

/// [`decode_csv`], with or without its fast path (the tests hold the two routes to the same
/// results).
fn decode_csv_routed(
    chunk: &[u8],
    first_line: u64,
    header: &CsvHeader,
    batch_size: usize,
    try_fast: bool,
) -> Decoded {
    let mut asm = Assembler::new(
        batch_size,
        memchr::memchr_iter(b'\n', chunk).count() + 1,
        &Projection::ALL,
    );
    let mut line_no = first_line;
    let mut start = 0;
    let mut fast = fast::FastPath::default();
    let mut valid = ValidRow::empty();
    // An ASCII chunk (the common case, told 64 bytes at a time) is UTF-8 throughout.
    let ascii = is_ascii(chunk);
    while start < chunk.len() {
        let (end, quoted) = record_end(chunk, start);
        let rec = &chunk[start..end];
        let rec_start = start;
        let pos = line_no;
        line_no += 1;
        // Only a quoted field can hold a newline.
        if quoted {
            line_no += memchr::memchr_iter(b'\n', rec).count() as u64;
        }
        start = end + 1;
        let rec = rec.strip_suffix(b"\r").unwrap_or(rec);
        if rec.is_empty() {
            continue;
        }
        let text = if ascii {
            // SAFETY: ASCII is UTF-8.
            unsafe { std::str::from_utf8_unchecked(rec) }
        } else {
            let Some(text) = asm.utf8(rec, pos) else {
                continue;
            };
            text
        };
        if try_fast
            && !quoted
            && let Some(unknown) = csv::fast_record(header, text, &mut fast, &mut valid)
        {
            asm.out.records += 1;
            asm.out.unknown_fields += u64::from(unknown);
            asm.accept(&valid, pos, span(rec_start, rec_start + rec.len()));
            continue;
        }
        let mut cells = Vec::new();
        let mut row = RawRow::default();
        match csv::parse_record(header, text, &mut cells, &mut row) {
            Ok(()) => asm.row(&row, pos, rec, rec_start),
            Err((reason, detail)) => {
                asm.out.records += 1;
                asm.reject(reason, detail, pos, rec);
            }
        }
    }
    asm.finish()
}

/// Decodes one batch read from a Parquet file; `first_row` is the 1-based number of its first row.
/// The batch's columns are kept with the decoded batches ([`RawSource::Parquet`]).
pub fn decode_parquet(batch: &RecordBatch, first_row: u64, batch_size: usize) -> Decoded {
    decode_parquet_routed(batch, first_row, batch_size, true)
}

/// [`decode_parquet`], with or without its fast path (the tests hold the two routes to the same
/// results).
fn decode_parquet_routed(
    batch: &RecordBatch,
    first_row: u64,
    batch_size: usize,
    try_fast: bool,
) -> Decoded {
    let mut asm = Assembler::new(batch_size, batch.num_rows(), &Projection::ALL);
    let cols = Arc::new(ParquetColumns::new(batch));
    // A row accepted holds its text cells unchanged: those columns are sliced out of the
    // file's batch instead of copied row by row (a shortcut as the fast path is, and held to
    // the general route with it).
    if try_fast {
        for (field, column) in cols.texts() {
            asm.builder.take_from(field, column);
        }
    }
    let mut fast = fast::FastPath::default();
    let mut valid = ValidRow::empty();
    for i in 0..batch.num_rows() {
        if try_fast && let Some(unknown) = cols.fast_row(i, &mut fast, &mut valid) {
            asm.out.records += 1;
            asm.out.unknown_fields += u64::from(unknown);
            asm.accept(&valid, first_row + i as u64, span(i, i + 1));
            continue;
        }
        let mut row = RawRow::default();
        cols.read_row(i, &mut row);
        let pos = first_row + i as u64;
        asm.out.records += 1;
        asm.out.unknown_fields += row.unknown_fields as u64;
        // Validated once here: a rejected row's raw record is built from the Parquet columns.
        match validate(&row) {
            Ok(v) => asm.accept(&v, pos, span(i, i + 1)),
            Err((reason, detail)) => asm.reject(reason, detail, pos, cols.row_json(i).as_bytes()),
        }
    }
    let mut d = asm.finish();
    d.keep_source(RawSource::Parquet(cols));
    d
}

/// Asserts that two decodings of one input agree — counts, rejects, and each batch's rows,
/// positions, payload hashes and spans (`what` names the input in a failure) — and returns the
/// rows accepted: how the tests hold a fast path to the general route.
#[cfg(test)]
pub(crate) fn assert_same_decoded(a: &Decoded, b: &Decoded, what: &str) -> usize {
    assert_eq!(
        (a.records, a.unknown_fields),
        (b.records, b.unknown_fields),
        "{what}"
    );
    assert_eq!(a.rejects, b.rejects, "{what}");
    assert_eq!(a.batches.len(), b.batches.len(), "{what}");
    for (x, y) in a.batches.iter().zip(&b.batches) {
        assert_eq!(x.batch, y.batch, "{what}");
        assert_eq!(x.positions, y.positions, "{what}");
        assert_eq!(x.payload_hashes, y.payload_hashes, "{what}");
        assert_eq!(x.raw_spans, y.raw_spans, "{what}");
    }
    a.batches.iter().map(|x| x.batch.num_rows()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use rand::{Rng, SeedableRng};

    #[test]
    fn ascii_check_agrees_with_the_standard_library() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for len in 0..300 {
            let mut b: Vec<u8> = (0..len).map(|_| rng.random_range(0..0x80u8)).collect();
            assert!(is_ascii(&b));
            if len > 0 {
                b[rng.random_range(0..len)] |= 0x80;
                assert_eq!(is_ascii(&b), b.is_ascii());
                assert!(!is_ascii(&b), "a high byte anywhere is found");
            }
        }
    }

    /// Lines the fast path takes from a chunk, mixed with lines it declines: `\r\n` endings, no
    /// final newline, blank lines, a non-ASCII value, a chunk that is not UTF-8 — every line
    /// decodes as it does on its own.
    #[test]
    fn fast_and_general_lines_mix_in_one_chunk() {
        let good = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00.000Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}"#;
        let other = good.replace("\"m\"", "\"mé\"").replace("e1", "e2");
        let spaced = good.replace(',', ", ").replace("e1", "e3");
        let lines = [
            good.to_string(),
            other,
            spaced,
            String::new(),
            "{}".to_string(),
        ];
        for eol in ["\n", "\r\n"] {
            for bad_utf8 in [false, true] {
                let mut chunk = lines.join(eol).into_bytes();
                chunk.extend_from_slice(eol.as_bytes());
                if bad_utf8 {
                    chunk.extend_from_slice(b"\xff\n");
                }
                chunk.extend_from_slice(good.replace("e1", "e4").as_bytes());
                let d = decode_json_lines(&chunk, 1, 8192);
                let ids: Vec<String> = d
                    .batches
                    .iter()
                    .flat_map(|b| {
                        let ids = b.batch.column(0).as_string::<i32>().clone();
                        (0..ids.len()).map(move |i| ids.value(i).to_string())
                    })
                    .collect();
                assert_eq!(ids, ["e1", "e2", "e3", "e4"], "{eol:?} {bad_utf8}");
                let positions: Vec<u64> =
                    d.batches.iter().flat_map(|b| b.positions.clone()).collect();
                let last = if bad_utf8 { 7 } else { 6 };
                assert_eq!(positions, [1, 2, 3, last]);
                let rejects: Vec<u64> = d.rejects.iter().map(|r| r.position).collect();
                assert_eq!(rejects, if bad_utf8 { vec![5, 6] } else { vec![5] });
            }
        }
    }

    /// `gen`'s events under `cfg`, each as a JSON object (the malformed lines left out).
    fn generated_events(
        cfg: crate::generate::GenConfig,
    ) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out = Vec::new();
        crate::generate::generate(&cfg, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The CSV fast path decides every record as the general route does: the same rows,
    /// positions, spans, payload hashes, rejects and counts, over gen's events written under
    /// shuffled headers (optional columns dropped, extra ones added) with mutated cells —
    /// quotes, signs, leading zeros, fractions, epoch times, card numbers, missing and extra
    /// cells, other scripts — and it takes most of the records that are accepted.
    #[test]
    fn csv_fast_path_decodes_every_record_as_the_general_route_does() {
        use rand::seq::{IndexedRandom, SliceRandom};
        let events = generated_events(crate::generate::GenConfig {
            events: 4_000,
            seed: 9,
            duplicate_rate: 0.02,
            ..Default::default()
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (mut accepted, mut rejected, mut taken) = (0, 0, 0);
        for round in 0..40 {
            let mut names: Vec<String> = crate::schema::FIELD_NAMES
                .iter()
                .filter(|n| {
                    crate::schema::FieldId::from_name(n.as_bytes()).is_some_and(|f| f.required())
                        || rng.random_bool(0.8)
                })
                .map(|n| n.to_string())
                .collect();
            for extra in ["note", "attr_1", "attr_2"] {
                if rng.random_bool(0.3) {
                    names.push(extra.into());
                }
            }
            names.shuffle(&mut rng);
            let header = CsvHeader::parse(&names.join(",")).unwrap();
            let mut records = Vec::new();
            for e in events.choose_multiple(&mut rng, 100) {
                let mut cells: Vec<String> = names
                    .iter()
                    .map(|n| match e.get(n) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(serde_json::Value::Null) | None if n.starts_with("attr") => [
                            "7",
                            "-3",
                            "x y",
                            "4111 1111 1111 1111",
                            "123412341234123412",
                        ]
                        .choose(&mut rng)
                        .unwrap()
                        .to_string(),
                        Some(serde_json::Value::Null) | None => String::new(),
                        Some(v) => v.to_string(),
                    })
                    .collect();
                if rng.random_bool(0.4) {
                    let k = rng.random_range(0..cells.len());
                    let bad = [
                        "",
                        "\"quoted\"",
                        "\"a,b\"",
                        "-5",
                        "+5",
                        "007",
                        "12.5",
                        "1730419200005",
                        "2026-11-01T00:00:00Z",
                        "2026-11-01T00:00:00.123+01:00",
                        "2026-13-01T00:00:00Z",
                        "4111111111111111",
                        "tok_4111111111111111",
                        "1000000000000000000",
                        "EUR",
                        "eur",
                        "mé",
                        "US",
                        "5411",
                        "declined",
                        "capture",
                        " capture",
                    ];
                    cells[k] = bad.choose(&mut rng).unwrap().to_string();
                }
                let mut rec = cells.join(",");
                match rng.random_range(0..30) {
                    0 => rec.push(','),
                    1 => {
                        rec.pop();
                    }
                    2 => rec.push('\r'),
                    // An empty quoted cell run into the next one.
                    3 => rec = format!("\"\"{rec}"),
                    _ => {}
                }
                records.push(rec);
            }
            let chunk = records.join("\n");
            let batch = rng.random_range(1..50);
            let a = decode_csv_routed(chunk.as_bytes(), 2, &header, batch, true);
            let b = decode_csv_routed(chunk.as_bytes(), 2, &header, batch, false);
            accepted += assert_same_decoded(&a, &b, &format!("round {round}"));
            rejected += b.rejects.len();
            let mut fast = fast::FastPath::default();
            let mut row = ValidRow::empty();
            taken += records
                .iter()
                .filter(|r| {
                    !r.contains('"') && csv::fast_record(&header, r, &mut fast, &mut row).is_some()
                })
                .count();
        }
        assert!(accepted > 2_000 && rejected > 300, "{accepted} {rejected}");
        assert!(taken * 4 > accepted * 3, "{taken} of {accepted}");
    }

    /// The Parquet fast path decides every row as the general route does — rows, positions,
    /// hashes, rejects, counts — over batches whose columns come in the types producers write
    /// (the time as a timestamp, text or epoch milliseconds; amounts as Int64, Int32, Float64
    /// or text; codes dictionary-encoded; extra columns of text, numbers and lists) with nulls
    /// and bad values, and it takes most of the rows that are accepted.
    #[test]
    fn parquet_fast_path_decodes_every_row_as_the_general_route_does() {
        use datafusion::arrow::array::{
            ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, ListArray,
            StringArray, TimestampMillisecondArray,
        };
        use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Int32Type, Schema};
        use rand::seq::{IndexedRandom, SliceRandom};
        let events = generated_events(crate::generate::GenConfig {
            events: 3_000,
            seed: 12,
            ..Default::default()
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        let (mut accepted, mut rejected, mut taken) = (0, 0, 0);
        for round in 0..30 {
            let rows: Vec<_> = events.choose_multiple(&mut rng, 100).collect();
            // A field's text per row, with a few bad values and nulls.
            let text = |rng: &mut rand::rngs::StdRng, name: &str| -> Vec<Option<String>> {
                rows.iter()
                    .map(|e| {
                        if rng.random_bool(0.03) {
                            return None;
                        }
                        if rng.random_bool(0.03) {
                            let bad = [
                                "",
                                "4111111111111111",
                                "XXX",
                                "zz",
                                "-5",
                                "2026-13-01T00:00:00Z",
                            ];
                            return Some(bad.choose(rng).unwrap().to_string());
                        }
                        e.get(name).and_then(|v| match v {
                            serde_json::Value::String(s) => Some(s.clone()),
                            serde_json::Value::Null => None,
                            v => Some(v.to_string()),
                        })
                    })
                    .collect()
            };
            let mut fields = Vec::new();
            let mut cols: Vec<ArrayRef> = Vec::new();
            for name in crate::schema::FIELD_NAMES {
                if !crate::schema::FieldId::from_name(name.as_bytes()).is_some_and(|f| f.required())
                    && rng.random_bool(0.2)
                {
                    continue;
                }
                let values = text(&mut rng, name);
                let strings = || StringArray::from(values.clone());
                let ints = || {
                    Int64Array::from(
                        values
                            .iter()
                            .map(|v| v.as_ref().and_then(|v| v.parse::<i64>().ok()))
                            .collect::<Vec<_>>(),
                    )
                };
                let (t, col): (DataType, ArrayRef) = match name {
                    "event_time" => match rng.random_range(0..3) {
                        0 => (DataType::Utf8, Arc::new(strings())),
                        1 => {
                            let ms: Vec<Option<i64>> = values
                                .iter()
                                .map(|v| v.as_deref().and_then(crate::time::parse_rfc3339_millis))
                                .collect();
                            (DataType::Int64, Arc::new(Int64Array::from(ms)))
                        }
                        _ => {
                            let ms: Vec<Option<i64>> = values
                                .iter()
                                .map(|v| v.as_deref().and_then(crate::time::parse_rfc3339_millis))
                                .collect();
                            let a = TimestampMillisecondArray::from(ms).with_timezone("UTC");
                            (a.data_type().clone(), Arc::new(a))
                        }
                    },
                    "amount_minor" | "fee_minor" => match rng.random_range(0..4) {
                        0 => (DataType::Utf8, Arc::new(strings())),
                        1 => {
                            let a: Int32Array = ints()
                                .iter()
                                .map(|v| v.and_then(|v| i32::try_from(v).ok()))
                                .collect();
                            (DataType::Int32, Arc::new(a))
                        }
                        2 => {
                            let a: Float64Array =
                                ints().iter().map(|v| v.map(|v| v as f64)).collect();
                            (DataType::Float64, Arc::new(a))
                        }
                        _ => (DataType::Int64, Arc::new(ints())),
                    },
                    "event_type" | "status" | "currency" if rng.random_bool(0.5) => {
                        let a: DictionaryArray<Int8Type> =
                            values.iter().map(|v| v.as_deref()).collect();
                        (a.data_type().clone(), Arc::new(a))
                    }
                    _ => (DataType::Utf8, Arc::new(strings())),
                };
                fields.push(Field::new(name, t, true));
                cols.push(col);
            }
            if rng.random_bool(0.5) {
                let notes: Vec<Option<&str>> = (0..rows.len())
                    .map(|_| *["x", "4111 1111 1111 1111", "ok"].choose(&mut rng).unwrap())
                    .map(Some)
                    .collect();
                fields.push(Field::new("note", DataType::Utf8, true));
                cols.push(Arc::new(StringArray::from(notes)));
            }
            if rng.random_bool(0.3) {
                let list = ListArray::from_iter_primitive::<Int32Type, _, _>(
                    (0..rows.len()).map(|i| Some(vec![Some(i as i32)])),
                );
                fields.push(Field::new("tags", list.data_type().clone(), true));
                cols.push(Arc::new(list));
            }
            let mut order: Vec<usize> = (0..fields.len()).collect();
            order.shuffle(&mut rng);
            let schema = Arc::new(Schema::new(
                order.iter().map(|i| fields[*i].clone()).collect::<Vec<_>>(),
            ));
            let batch = RecordBatch::try_new(
                schema,
                order.iter().map(|i| Arc::clone(&cols[*i])).collect(),
            )
            .unwrap();
            let size = rng.random_range(1..40);
            let a = decode_parquet_routed(&batch, 1, size, true);
            let b = decode_parquet_routed(&batch, 1, size, false);
            accepted += assert_same_decoded(&a, &b, &format!("round {round}"));
            rejected += b.rejects.len();
            let cols = ParquetColumns::new(&batch);
            let mut fast = fast::FastPath::default();
            let mut row = ValidRow::empty();
            taken += (0..batch.num_rows())
                .filter(|i| cols.fast_row(*i, &mut fast, &mut row).is_some())
                .count();
        }
        assert!(accepted > 300 && rejected > 300, "{accepted} {rejected}");
        assert!(taken * 2 > accepted, "{taken} of {accepted}");
    }

    #[test]
    fn json_chunk_splits_good_and_bad() {
        let chunk = br#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}

not json
{"event_id":"e2","event_type":"capture","event_time":1762000000000,"payment_id":"p","merchant_id":"m","card_id":"4111111111111111","amount_minor":5,"currency":"EUR"}
"#;
        let d = decode_json_lines(chunk, 10, 8192);
        assert_eq!(d.records, 3);
        assert_eq!(d.batches.len(), 1);
        assert_eq!(d.batches[0].positions, vec![10]);
        assert_eq!(d.rejects.len(), 2);
        assert_eq!(d.rejects[0].position, 12);
        assert_eq!(d.rejects[0].reason, RejectReason::Malformed);
        assert_eq!(d.rejects[1].reason, RejectReason::CardNumber);
        assert!(!d.rejects[1].raw.contains("4111111111111111"));
    }

    #[test]
    fn card_numbers_in_event_time_are_bad_times_never_echoed() {
        // `event_time` is a time: a value that is none is `bad_timestamp` (in every format,
        // whether or not its digits pass the Luhn check), and neither the detail nor the raw
        // record repeats a card number. A valid time is a time, however long its fraction.
        for time in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111.1111.1111.1111",
        ] {
            let line = format!(
                r#"{{"event_id":"e1","event_type":"capture","event_time":"{time}","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}}"#
            );
            let d = decode_json_lines(line.as_bytes(), 1, 8192);
            assert_eq!(d.rejects.len(), 1, "{time}");
            assert_eq!(d.rejects[0].reason, RejectReason::BadTimestamp, "{time}");
            assert!(!contains_card_number(d.rejects[0].raw.as_bytes()));
            assert!(!contains_card_number(d.rejects[0].detail.as_bytes()));
        }
        let line = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00.4111111111111111Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}"#;
        let d = decode_json_lines(line.as_bytes(), 1, 8192);
        assert!(d.rejects.is_empty(), "{:?}", d.rejects);
    }

    /// Items 6 and 9: times and amounts are never screened (their reason is their type or
    /// range, the same in JSON and CSV), and no detail repeats a card-like number.
    #[test]
    fn typed_fields_get_their_own_reason_in_every_format() {
        let pan = "4539148803436467";
        let names = "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency,fee_minor";
        let header = CsvHeader::parse(names).unwrap();
        for (field, value, reason) in [
            ("amount_minor", pan, RejectReason::OutOfRange),
            ("fee_minor", pan, RejectReason::OutOfRange),
            ("event_time", pan, RejectReason::BadTimestamp),
        ] {
            let mut cells = vec![
                "e1",
                "capture",
                "2026-11-01T00:00:00Z",
                "p",
                "m",
                "c",
                "5",
                "EUR",
                "1",
            ];
            let k = names.split(',').position(|n| n == field).unwrap();
            cells[k] = value;
            let csv = cells.join(",");
            let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
                r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR","fee_minor":1}"#,
            )
            .unwrap();
            obj.insert(field.into(), serde_json::from_str(value).unwrap());
            let json = serde_json::Value::Object(obj).to_string();
            for d in [
                decode_json_lines(json.as_bytes(), 1, 8192),
                decode_csv(csv.as_bytes(), 2, &header, 8192),
            ] {
                assert_eq!(d.rejects.len(), 1, "{field}");
                let r = &d.rejects[0];
                assert_eq!(r.reason, reason, "{field}: {}", r.detail);
                assert!(!contains_card_number(r.detail.as_bytes()), "{}", r.detail);
                assert!(!r.detail.contains("453914880343"), "{}", r.detail);
                assert!(!contains_card_number(r.raw.as_bytes()), "{}", r.raw);
            }
        }
        // A card number sent as a number in a string field is a card number, as in a CSV cell.
        let json = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00Z","payment_id":"p","merchant_id":"m","card_id":4539148803436467,"amount_minor":5,"currency":"EUR"}"#;
        let d = decode_json_lines(json.as_bytes(), 1, 8192);
        assert_eq!(d.rejects[0].reason, RejectReason::CardNumber);
    }

    /// Item 10: a byte-order mark before the first JSON event is skipped (the line is then
    /// decoded by the general route, and hashes like the same event without it).
    #[test]
    fn a_byte_order_mark_before_a_json_event_is_skipped() {
        let line = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00.000Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}"#;
        let plain = decode_json_lines(line.as_bytes(), 1, 8192);
        let bom = decode_json_lines(format!("\u{feff}{line}\n{line}").as_bytes(), 1, 8192);
        assert!(bom.rejects.is_empty(), "{:?}", bom.rejects);
        assert_eq!(bom.batches[0].batch.num_rows(), 2);
        assert_eq!(
            bom.batches[0].payload_hashes,
            [plain.batches[0].payload_hashes[0]; 2]
        );
    }

    /// Item 12: every accepted row knows where its record is in the chunk, so a record the
    /// router rejects later is dead-lettered as received — from the fast path, the general
    /// route, CSV and Parquet.
    #[test]
    fn accepted_rows_give_back_their_record_as_received() {
        let canonical = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00.000Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}"#;
        let other = r#"{"amount_minor":5, "event_id":"e2","event_type":"capture","event_time":"2026-11-01T01:00:00+01:00","payment_id":"p","merchant_id":"m","card_id":"c","currency":"EUR","x":[1]}"#;
        let chunk = format!("{canonical}\nnot json\n{other}\r\n{canonical}");
        let mut d = decode_json_lines(chunk.as_bytes(), 1, 2);
        let bytes = chunk.clone().into_bytes();
        d.keep_source(RawSource::Text(Arc::new(ChunkBytes::new(bytes, None))));
        let raws: Vec<String> = d
            .batches
            .iter()
            .flat_map(|b| (0..b.batch.num_rows()).map(move |i| b.raw_record(i)))
            .collect();
        assert_eq!(raws, [canonical, other, canonical]);

        let header = CsvHeader::parse(
            "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency,x",
        )
        .unwrap();
        let rec = "e1,capture,2026-11-01T01:00:00+01:00,p,m,c,5,EUR,\"a\nb\"";
        let csv = format!("e0,capture,bad,p,m,c,5,EUR,\r\n{rec}\r\n");
        let mut d = decode_csv(csv.as_bytes(), 2, &header, 8192);
        d.keep_source(RawSource::Text(Arc::new(ChunkBytes::new(
            csv.clone().into_bytes(),
            None,
        ))));
        assert_eq!(d.batches[0].raw_record(0), rec);

        // Without a kept source the record is re-serialised from the batch.
        let d = decode_json_lines(other.as_bytes(), 1, 8192);
        assert!(
            d.batches[0]
                .raw_record(0)
                .starts_with(r#"{"event_id":"e2""#)
        );
    }

    #[test]
    fn card_numbers_in_code_fields_are_caught() {
        // The JSON parser checks code fields (event_type, currency, countries, mcc, status) only
        // when the row is invalid; a card number there must still be the reason, unechoed.
        for (field, value) in [
            ("event_type", "4111111111111111"),
            ("currency", "4111 1111 1111 1111"),
            ("card_country", "4111111111111111"),
            ("mcc", "4111-1111-1111-1111"),
            ("status", "approved 4111111111111111"),
        ] {
            let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
                r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}"#,
            )
            .unwrap();
            obj.insert(field.into(), value.into());
            let line = serde_json::Value::Object(obj).to_string();
            let d = decode_json_lines(line.as_bytes(), 1, 8192);
            assert_eq!(d.rejects.len(), 1, "{field}");
            assert_eq!(d.rejects[0].reason, RejectReason::CardNumber, "{field}");
            assert!(
                d.rejects[0].detail.contains(field),
                "{}",
                d.rejects[0].detail
            );
            assert!(!d.rejects[0].raw.contains(value), "{field}");
            assert!(!d.rejects[0].detail.contains("1111"), "{field}");
        }
    }

    #[test]
    fn invalid_utf8_rejects_its_line_only() {
        // One bad line makes the chunk-wide UTF-8 check fail: every other line is still decoded,
        // and the bad one is dead-lettered at its own line, in JSON and in CSV.
        let good = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}"#;
        let mut chunk = format!("{good}\n").into_bytes();
        chunk.extend_from_slice(b"{\"event_id\":\"\xff\"}\n");
        chunk.extend_from_slice(format!("{}\n", good.replace("e1", "e2")).as_bytes());
        let d = decode_json_lines(&chunk, 7, 8192);
        assert_eq!(d.records, 3);
        assert_eq!(d.batches[0].positions, vec![7, 9]);
        assert_eq!(d.rejects.len(), 1);
        assert_eq!(d.rejects[0].reason, RejectReason::InvalidUtf8);
        assert_eq!(d.rejects[0].position, 8);

        let header = CsvHeader::parse(
            "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency",
        )
        .unwrap();
        let mut csv = b"e1,capture,2026-11-01T00:00:00Z,p,m,c,5,EUR\n".to_vec();
        csv.extend_from_slice(b"e2,capture,2026-11-01T00:00:00Z,p,m\xfe,c,5,EUR\n");
        let d = decode_csv(&csv, 2, &header, 8192);
        assert_eq!(d.records, 2);
        assert_eq!(d.rejects.len(), 1);
        assert_eq!(d.rejects[0].reason, RejectReason::InvalidUtf8);
        assert_eq!(d.rejects[0].position, 3);
    }

    #[test]
    fn batch_size_splits_batches() {
        let line = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR"}"#;
        let chunk = format!("{line}\n{line}\n{line}\n");
        let d = decode_json_lines(chunk.as_bytes(), 1, 2);
        assert_eq!(
            d.batches
                .iter()
                .map(|b| b.batch.num_rows())
                .collect::<Vec<_>>(),
            vec![2, 1]
        );
    }
}
