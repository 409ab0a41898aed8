//! Reading an event file into decoded chunks, in order, with decoding spread over threads.
//!
//! ```text
//!  file ──read 1 MiB chunks at record boundaries──▶ decode threads (N) ──seq-numbered──▶ router
//! ```
//! Each chunk carries its sequence number; the router puts them back in file order, so results do
//! not depend on how many threads decoded.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::decode::{
    BOM, ChunkBytes, CsvHeader, Decoded, Format, ParquetColumns, RawSource, decode_csv,
    decode_json_lines_sized, decode_parquet,
};
use crate::error::{Error, Result};

/// Bytes read per chunk; each chunk decodes to one batch (up to `batch_size` rows). 2 MiB is
/// ~6,000 events: with 1 MiB chunks the per-batch work downstream (WHERE evaluation, hand-offs
/// between threads) cost settlement 5 % and card_velocity 2 % more CPU, 256 KiB 15 % more, and
/// 4 MiB gained nothing further.
pub(crate) const CHUNK: usize = 1 << 21;

/// A decoded chunk with its place in the file.
pub(super) struct SeqDecoded {
    /// 0-based chunk number.
    pub seq: u64,
    /// The chunk's contents.
    pub decoded: Decoded,
    /// Where the chunk came from.
    pub tag: ChunkTag,
    /// For a log source: the first record's position and every record's timestamp, so a dead
    /// letter carries its source record's time.
    pub record_times: Option<(u64, Vec<i64>)>,
}

/// Which source partition a chunk came from (0 for a file) and, for a log, the offset after its
/// last record: the position to commit once the chunk is processed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ChunkTag {
    pub partition: u32,
    pub end: Option<u64>,
}

pub(super) enum Job {
    Json {
        seq: u64,
        bytes: Vec<u8>,
        first_line: u64,
        /// Lines (records) in `bytes`, about: sizes the decoded columns.
        lines: usize,
        tag: ChunkTag,
        /// Each record's timestamp (a log source; empty for a file).
        times: Vec<i64>,
    },
    Csv {
        seq: u64,
        bytes: Vec<u8>,
        first_line: u64,
    },
}

fn input_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The decoded-chunk channel and the threads feeding it.
pub(super) type Spawned = (Receiver<Result<SeqDecoded>>, Vec<JoinHandle<()>>);

/// Spawns the reader and decoders; returns the channel of decoded chunks and the threads.
pub(super) fn spawn_reader(
    path: PathBuf,
    format: Format,
    start: super::SourcePosition,
    batch_size: usize,
    decoders: usize,
    bytes_read: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<Spawned> {
    let mut file = File::open(&path).map_err(|e| input_err(&path, e))?;
    if start.offset > 0 {
        if format != Format::JsonLines {
            return Err(input_err(
                &path,
                "resuming from a position is supported for JSON Lines only",
            ));
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(start.offset))
            .map_err(|e| input_err(&path, e))?;
    }
    let (out_tx, out_rx) = sync_channel::<Result<SeqDecoded>>(decoders * 2 + 2);
    let mut handles = Vec::new();
    if format == Format::Parquet {
        let tx = out_tx;
        handles.push(super::spawn("parquet-reader", move || {
            if let Err(e) = read_parquet(&path, file, batch_size, &tx, &bytes_read, &stop) {
                let _ = tx.send(Err(e));
            }
        }));
        return Ok((out_rx, handles));
    }
    let header: Arc<Mutex<Option<Arc<CsvHeader>>>> = Arc::default();
    let (job_tx, recycle_rx, decoder_threads) =
        spawn_decoders(decoders, batch_size, Arc::clone(&header), out_tx.clone());
    handles.extend(decoder_threads);
    handles.push(super::spawn("file-reader", move || {
        if let Err(e) = read_text(
            &path,
            file,
            format,
            start,
            &job_tx,
            &recycle_rx,
            &header,
            &bytes_read,
            &stop,
        ) {
            let _ = out_tx.send(Err(e));
        }
    }));
    Ok((out_rx, handles))
}

/// The decoder pool: jobs in, sequence-numbered decoded chunks out; chunk buffers come back on
/// the recycle channel.
pub(super) fn spawn_decoders(
    decoders: usize,
    batch_size: usize,
    header: Arc<Mutex<Option<Arc<CsvHeader>>>>,
    out_tx: SyncSender<Result<SeqDecoded>>,
) -> (SyncSender<Job>, Receiver<Vec<u8>>, Vec<JoinHandle<()>>) {
    let mut handles = Vec::new();
    let (job_tx, job_rx) = sync_channel::<Job>(decoders * 2);
    // Decoders hand chunk buffers back, so the reader reuses warm memory instead of faulting in
    // (and having the kernel zero) fresh pages for every chunk.
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(decoders * 2 + 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    for _ in 0..decoders.max(1) {
        let rx = Arc::clone(&job_rx);
        let tx = out_tx.clone();
        let recycle = recycle_tx.clone();
        let header = Arc::clone(&header);
        handles.push(super::spawn("decoder", move || {
            loop {
                let job = match rx.lock().expect("decoder queue").recv() {
                    Ok(j) => j,
                    Err(_) => return,
                };
                let (seq, decoded, tag, record_times) = match job {
                    Job::Json {
                        seq,
                        bytes,
                        first_line,
                        lines,
                        tag,
                        times,
                    } => {
                        let mut d = decode_json_lines_sized(&bytes, first_line, batch_size, lines);
                        keep_chunk(&mut d, bytes, &recycle);
                        let times = (!times.is_empty()).then_some((first_line, times));
                        (seq, d, tag, times)
                    }
                    Job::Csv {
                        seq,
                        bytes,
                        first_line,
                    } => {
                        let h = header
                            .lock()
                            .expect("header")
                            .clone()
                            .expect("header read first");
                        let mut d = decode_csv(&bytes, first_line, &h, batch_size);
                        keep_chunk(&mut d, bytes, &recycle);
                        (seq, d, ChunkTag::default(), None)
                    }
                };
                let out = SeqDecoded {
                    seq,
                    decoded,
                    tag,
                    record_times,
                };
                if tx.send(Ok(out)).is_err() {
                    return;
                }
            }
        }));
    }
    (job_tx, recycle_rx, handles)
}

/// Keeps a decoded chunk's bytes with its batches, so the records the router rejects are
/// dead-lettered as received ([`crate::decode::DecodedBatch::raw_record`]); the buffer goes
/// back to the reader once the last batch is dropped (at once when the chunk has none).
fn keep_chunk(d: &mut Decoded, bytes: Vec<u8>, recycle: &SyncSender<Vec<u8>>) {
    let chunk = ChunkBytes::new(bytes, Some(recycle.clone()));
    if !d.batches.is_empty() {
        d.keep_source(RawSource::Text(Arc::new(chunk)));
    }
}

/// Index just past the last complete record in `buf` (0 if none).
fn last_record_end(buf: &[u8], format: Format) -> usize {
    match format {
        Format::Csv => {
            let mut in_quotes = false;
            let mut last = 0;
            for (i, b) in buf.iter().enumerate() {
                match b {
                    b'"' => in_quotes = !in_quotes,
                    b'\n' if !in_quotes => last = i + 1,
                    _ => {}
                }
            }
            last
        }
        _ => memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1),
    }
}

#[allow(clippy::too_many_arguments)]
fn read_text(
    path: &Path,
    mut file: File,
    format: Format,
    start: super::SourcePosition,
    jobs: &SyncSender<Job>,
    recycled: &Receiver<Vec<u8>>,
    header: &Mutex<Option<Arc<CsvHeader>>>,
    bytes_read: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 2);
    let mut line = start.line;
    let mut seq = 0u64;
    let mut eof = false;
    let mut need_header = format == Format::Csv;
    // A byte-order mark can only start the file (not a resumed position).
    let mut at_file_start = start.offset == 0;
    while !eof {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Read into the spare capacity: `resize` + `read` zeroed every chunk first.
        let n = (&mut file)
            .take(CHUNK as u64)
            .read_to_end(&mut buf)
            .map_err(|e| input_err(path, e))?;
        bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        eof = n == 0;
        if at_file_start && (buf.len() >= BOM.len() || eof) {
            // Skipped once, before anything is decoded: the header of a CSV file some tool
            // wrote with a BOM names `event_id`, and its first JSON event is an event.
            at_file_start = false;
            if buf.starts_with(BOM.as_bytes()) {
                buf.drain(..BOM.len());
            }
        }
        if need_header {
            let Some(end) =
                memchr::memchr(b'\n', &buf).or(if eof { Some(buf.len()) } else { None })
            else {
                continue;
            };
            let text = std::str::from_utf8(&buf[..end])
                .map_err(|_| input_err(path, "the CSV header is not UTF-8"))?;
            let h =
                CsvHeader::parse(text.trim_end_matches('\r')).map_err(|e| input_err(path, e))?;
            *header.lock().expect("header") = Some(Arc::new(h));
            buf.drain(..(end + 1).min(buf.len()));
            line += 1;
            need_header = false;
        }
        let cut = if eof {
            buf.len()
        } else {
            last_record_end(&buf, format)
        };
        if cut == 0 {
            continue;
        }
        // The chunk goes to a decoder; the partial record after `cut` starts the next buffer.
        let mut next = recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK * 2));
        next.clear();
        next.extend_from_slice(&buf[cut..]);
        buf.truncate(cut);
        let bytes = std::mem::replace(&mut buf, next);
        let newlines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        let job = match format {
            Format::Csv => Job::Csv {
                seq,
                bytes,
                first_line: line,
            },
            _ => Job::Json {
                seq,
                bytes,
                first_line: line,
                lines: newlines as usize + 1,
                tag: ChunkTag::default(),
                times: Vec::new(),
            },
        };
        line += newlines;
        seq += 1;
        if jobs.send(job).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn read_parquet(
    path: &Path,
    file: File,
    batch_size: usize,
    tx: &SyncSender<Result<SeqDecoded>>,
    bytes_read: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| input_err(path, format!("not a readable Parquet file: {e}")))?;
    ParquetColumns::check_schema(builder.schema()).map_err(|e| input_err(path, e))?;
    let reader = builder
        .with_batch_size(batch_size.clamp(1, 65_536))
        .build()
        .map_err(|e| input_err(path, e))?;
    let mut row = 1u64;
    let mut total_rows = 0u64;
    for (seq, batch) in reader.enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let batch = batch.map_err(|e| input_err(path, e))?;
        let decoded = decode_parquet(&batch, row, batch_size);
        row += batch.num_rows() as u64;
        total_rows += batch.num_rows() as u64;
        // Parquet is read in row groups; report progress proportionally.
        bytes_read.store(size.min(total_rows * 200), Ordering::Relaxed);
        if tx
            .send(Ok(SeqDecoded {
                seq: seq as u64,
                decoded,
                tag: ChunkTag::default(),
                record_times: None,
            }))
            .is_err()
        {
            return Ok(());
        }
    }
    bytes_read.store(size, Ordering::Relaxed);
    Ok(())
}
