//! A file of events as a source: JSON Lines, CSV (with a header row) or Parquet.
//!
//! ```text
//!  file ──read 2 MiB chunks at record boundaries──▶ decode threads (N) ──seq-numbered──▶ engine
//! ```
//! Each chunk carries its sequence number; the engine puts them back in file order, so results
//! do not depend on how many threads decoded. A file is one partition and bounded; it starts at
//! its beginning or at a [`SourcePosition`] (a replay resumed), never at checkpoint positions.

pub(crate) mod connector;

pub(crate) use self::connector::CONNECTOR;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::decoders::{Job, spawn_decoders};
use super::{Chunk, ChunkTag, Positions, ReadOptions, Reading, Source};
use crate::decode::{BOM, CsvHeader, Decoder, Format, Origin, ParquetColumns, PositionKind};
use crate::error::{Error, Result};
use crate::schema::EventSchema;

/// Bytes read per chunk; each chunk decodes to one batch (up to `batch_size` rows). 2 MiB is
/// ~6,000 events: with 1 MiB chunks the per-batch work downstream (WHERE evaluation, hand-offs
/// between threads) cost settlement 5 % and card_velocity 2 % more CPU, 256 KiB 15 % more, and
/// 4 MiB gained nothing further.
pub const CHUNK: usize = 1 << 21;

/// A position in a text event file: a byte offset at a record boundary and the line number of the
/// record that starts there. `SourcePosition::default()` is the beginning of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourcePosition {
    /// Byte offset of the first record to read.
    pub offset: u64,
    /// 1-based line number of that record.
    pub line: u64,
}

impl Default for SourcePosition {
    fn default() -> Self {
        SourcePosition { offset: 0, line: 1 }
    }
}

/// An event file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    format: Option<Format>,
    start: SourcePosition,
    events: Arc<EventSchema>,
}

impl FileSource {
    /// The file at `path`, its format told by its extension.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            format: None,
            start: SourcePosition::default(),
            events: EventSchema::payments(),
        }
    }

    /// Decodes its records as `events` (a declared source's schema) instead of payment events.
    pub fn events(mut self, events: Arc<EventSchema>) -> Self {
        self.events = events;
        self
    }

    /// Reads it as `format` (`None`: by extension).
    pub fn format(mut self, format: Option<Format>) -> Self {
        self.format = format;
        self
    }

    /// Starts at `start` (text formats): a replay resumed from a recorded position.
    pub fn starting_at(mut self, start: SourcePosition) -> Self {
        self.start = start;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format it is read in: the one given, else told by the extension.
    pub fn resolved_format(&self) -> Result<Format> {
        match self.format {
            Some(f) => Ok(f),
            None => Format::from_path(&self.path).ok_or_else(|| Error::Config {
                what: "input format".into(),
                message: format!(
                    "cannot tell the format of {} from its extension; use .jsonl, .csv or .parquet, or pass --format",
                    self.path.display()
                ),
            }),
        }
    }
}

impl Source for FileSource {
    fn events(&self) -> Arc<EventSchema> {
        Arc::clone(&self.events)
    }

    fn origins(&self) -> Result<Vec<Origin>> {
        let kind = if self.resolved_format()? == Format::Parquet {
            PositionKind::Row
        } else {
            PositionKind::Line
        };
        Ok(vec![Origin::file(self.path.display().to_string(), kind)])
    }

    fn bounded(&self) -> bool {
        true
    }

    fn open(&self, start: &Positions, opts: &ReadOptions) -> Result<Reading> {
        if !start.is_empty() {
            return Err(Error::Config {
                what: "file source".into(),
                message: format!(
                    "{} cannot resume from checkpoint positions; a query over a file reads it whole",
                    self.path.display()
                ),
            });
        }
        let format = self.resolved_format()?;
        let decoder = Decoder::for_events(&self.events)?.projected(&opts.projection);
        let bytes = Arc::new(AtomicU64::new(0));
        let (chunks, threads) = spawn_reader(
            self.path.clone(),
            decoder,
            format,
            self.start,
            opts,
            Arc::clone(&bytes),
        )?;
        Ok(Reading {
            chunks,
            threads,
            bytes,
            positions: Positions::new(),
        })
    }
}

fn input_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The decoded-chunk channel and the threads feeding it.
type Spawned = (Receiver<Result<Chunk>>, Vec<std::thread::JoinHandle<()>>);

/// Spawns the reader and decoders; returns the channel of decoded chunks and the threads.
fn spawn_reader(
    path: PathBuf,
    decoder: Decoder,
    format: Format,
    start: SourcePosition,
    opts: &ReadOptions,
    bytes_read: Arc<AtomicU64>,
) -> Result<Spawned> {
    let (batch_size, decoders, stop) = (
        opts.batch_size,
        opts.decoders.max(1),
        Arc::clone(&opts.stop),
    );
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
    let (out_tx, out_rx) = sync_channel::<Result<Chunk>>(decoders * 2 + 2);
    let mut handles = Vec::new();
    if format == Format::Parquet {
        let tx = out_tx;
        handles.push(crate::engine::spawn("parquet-reader", move || {
            if let Err(e) = read_parquet(&path, &decoder, file, batch_size, &tx, &bytes_read, &stop)
            {
                let _ = tx.send(Err(e));
            }
        }));
        return Ok((out_rx, handles));
    }
    let header: Arc<Mutex<Option<Arc<CsvHeader>>>> = Arc::default();
    let (job_tx, recycle_rx, decoder_threads) = spawn_decoders(
        &decoder,
        decoders,
        batch_size,
        Arc::clone(&header),
        out_tx.clone(),
    );
    handles.extend(decoder_threads);
    handles.push(crate::engine::spawn("file-reader", move || {
        if let Err(e) = read_text(
            &path,
            &decoder,
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

/// Index just past the last complete record in `buf` (0 if none).
fn last_record_end(buf: &[u8], format: Format) -> usize {
    match format {
        Format::Csv => crate::decode::last_record_end(buf),
        _ => memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1),
    }
}

#[allow(clippy::too_many_arguments)]
fn read_text(
    path: &Path,
    decoder: &Decoder,
    mut file: File,
    format: Format,
    start: SourcePosition,
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
            let h = decoder
                .csv_header(text.trim_end_matches('\r'))
                .map_err(|e| input_err(path, e))?;
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
                meta: None,
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
    decoder: &Decoder,
    file: File,
    batch_size: usize,
    tx: &SyncSender<Result<Chunk>>,
    bytes_read: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| input_err(path, format!("not a readable Parquet file: {e}")))?;
    ParquetColumns::check_schema(builder.schema()).map_err(|e| input_err(path, e))?;
    decoder
        .check_parquet(builder.schema())
        .map_err(|e| input_err(path, e))?;
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
        let decoded = decoder.parquet(&batch, row, batch_size);
        row += batch.num_rows() as u64;
        total_rows += batch.num_rows() as u64;
        // Parquet is read in row groups; report progress proportionally.
        bytes_read.store(size.min(total_rows * 200), Ordering::Relaxed);
        if tx
            .send(Ok(Chunk {
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
