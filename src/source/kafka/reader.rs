//! The Kafka source's reader thread: polls the consumer, gathers each partition's records into
//! chunks of about [`CHUNK`] bytes (one JSON value a line), hands them to the decoders, and
//! sends ticks while nothing arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;

use super::super::ChunkTag;
use super::super::decoders::{Feed, Job};
use super::super::log::{CHUNK, TICK, append_line};
use crate::connector::kafka::{Brokers, Quiet, transient};
use crate::decode::{MetaKey, MetaValue, RecordMeta};
use crate::error::Result;

/// How long records wait in a partly filled chunk before it is sent anyway.
const LINGER: Duration = Duration::from_millis(50);

/// One partition's records not yet sent.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    first: Option<u64>,
    end: u64,
    records: usize,
    times: Vec<i64>,
    /// The records' metadata columns, when the events have some.
    meta: Option<RecordMeta>,
}

pub(super) struct KafkaReader {
    pub(super) consumer: BaseConsumer<Quiet>,
    pub(super) brokers: Brokers,
    pub(super) topic: String,
    /// The events' metadata columns (`METADATA FROM '…'`), in column order.
    pub(super) meta_keys: Vec<MetaKey>,
    /// Per partition, the offset of the next record to read.
    pub(super) position: Vec<u64>,
    /// `--until-end`: each partition's end offset as of the start.
    pub(super) until: Option<Vec<u64>>,
    pub(super) feed: Feed,
    pub(super) stop: Arc<AtomicBool>,
}

impl KafkaReader {
    pub(super) fn run(mut self) {
        if let Err(e) = self.read() {
            let _ = self.feed.ticks.send(Err(e));
        }
    }

    /// `--until-end`: whether every partition reached its end as of the start, or the end
    /// the broker reported (`eof`).
    fn done(&self, eof: &[bool]) -> bool {
        self.until
            .as_ref()
            .is_some_and(|u| (0..self.position.len()).all(|p| self.position[p] >= u[p] || eof[p]))
    }

    fn read(&mut self) -> Result<()> {
        let n = self.position.len();
        let mut pending: Vec<Pending> = (0..n).map(|_| Pending::default()).collect();
        let mut seq = 0u64;
        let mut last_sent = Instant::now();
        let mut last_flush = Instant::now();
        let (mut warned, mut wait, mut last_error) = (None::<Instant>, None, Instant::now());
        let mut eof = vec![false; n];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if self.done(&eof) {
                for (p, q) in pending.iter_mut().enumerate() {
                    if !self.send(q, p, &mut seq) {
                        return Ok(());
                    }
                }
                return Ok(());
            }
            let mut idle = false;
            match self.consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    drop(wait.take()); // the server answers again
                    let (p, offset) = (m.partition() as usize, m.offset().max(0) as u64);
                    let limit = self.until.as_ref().map_or(u64::MAX, |u| u[p]);
                    if p < n && offset >= self.position[p] && offset < limit {
                        // Positions of records are counted from a chunk's first offset: a gap
                        // (compaction, transaction markers) starts a new chunk.
                        if pending[p].first.is_some() && offset != pending[p].end {
                            if !self.send(&mut pending[p], p, &mut seq) {
                                return Ok(());
                            }
                            last_sent = Instant::now();
                        }
                        let q = &mut pending[p];
                        if q.bytes.capacity() == 0 {
                            q.bytes = self
                                .feed
                                .recycled
                                .try_recv()
                                .unwrap_or_else(|_| Vec::with_capacity(2 * CHUNK + (64 << 10)));
                            q.bytes.clear();
                        }
                        q.first.get_or_insert(offset);
                        q.end = offset + 1;
                        q.records += 1;
                        q.times.push(m.timestamp().to_millis().unwrap_or(0));
                        if !self.meta_keys.is_empty() {
                            let meta = q
                                .meta
                                .get_or_insert_with(|| RecordMeta::new(self.meta_keys.len()));
                            record_meta(meta, &self.meta_keys, &self.topic, &m);
                        }
                        append_line(&mut q.bytes, m.payload().unwrap_or_default());
                        self.position[p] = offset + 1;
                        // Metadata text (headers can be large) counts toward the chunk's size.
                        let text = q.meta.as_ref().map_or(0, |m| m.text.len());
                        if q.bytes.len() + text >= CHUNK {
                            if !self.send(q, p, &mut seq) {
                                return Ok(());
                            }
                            last_sent = Instant::now();
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(e) = eof.get_mut(p as usize) {
                        *e = true;
                    }
                    idle = true;
                }
                Some(Err(e)) if transient(&e) => {
                    // librdkafka reconnects by itself; the job waits meanwhile.
                    let reason = self.brokers.mask(&e.to_string());
                    crate::connector::waiting::note(&mut wait, &self.brokers.describe(), &reason);
                    last_error = Instant::now();
                    if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(brokers = %self.brokers.bootstrap, "kafka source: {reason}; waiting for the broker");
                        warned = Some(Instant::now());
                    }
                    idle = true;
                }
                Some(Err(e)) => return Err(self.brokers.error("consume", &e)),
                None => {
                    // No error for a while on an idle topic: the broker answers again.
                    if last_error.elapsed() >= Duration::from_secs(5) {
                        drop(wait.take());
                    }
                    idle = true;
                }
            }
            if idle || last_flush.elapsed() >= LINGER {
                last_flush = Instant::now();
                for (p, q) in pending.iter_mut().enumerate() {
                    if q.first.is_some() {
                        if !self.send(q, p, &mut seq) {
                            return Ok(());
                        }
                        last_sent = Instant::now();
                    }
                }
            }
            // Ticks also while only records outside the read arrive (a finished partition).
            if last_sent.elapsed() >= TICK {
                if !self.feed.tick(&mut seq, false) {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
        }
    }

    /// Sends partition `p`'s pending records as one chunk (nothing if there are none); false
    /// once the run has ended.
    fn send(&self, q: &mut Pending, p: usize, seq: &mut u64) -> bool {
        let Some(first) = q.first.take() else {
            return true;
        };
        let q = std::mem::take(q);
        self.feed
            .bytes
            .fetch_add(q.bytes.len() as u64, Ordering::Relaxed);
        let job = Job::Json {
            seq: *seq,
            bytes: q.bytes,
            first_line: first,
            lines: q.records,
            tag: ChunkTag {
                partition: p as u32,
                end: Some(q.end),
                last: false,
                wants_checkpoint: false,
            },
            times: q.times,
            meta: q.meta.map(Box::new),
        };
        *seq += 1;
        self.feed.jobs.send(job).is_ok()
    }
}

/// Appends record `m`'s values of the metadata columns `keys` to `meta`.
fn record_meta(meta: &mut RecordMeta, keys: &[MetaKey], topic: &str, m: &BorrowedMessage<'_>) {
    // Parsed once a record, whichever columns read them.
    let parsed = std::cell::OnceCell::new();
    let headers = || parsed.get_or_init(|| raw_headers(m)).as_deref();
    for k in keys {
        match k {
            MetaKey::Topic => meta.push_text(topic),
            MetaKey::Partition => meta.values.push(MetaValue::Int(i64::from(m.partition()))),
            MetaKey::Offset => meta.values.push(MetaValue::Int(m.offset())),
            MetaKey::Timestamp => meta.values.push(
                m.timestamp()
                    .to_millis()
                    .map_or(MetaValue::Null, MetaValue::Int),
            ),
            MetaKey::Key => match m.key() {
                None => meta.values.push(MetaValue::Null),
                Some(b) => meta.push_bytes(b, "the record's key is not UTF-8 text"),
            },
            MetaKey::Headers => {
                let mut all = serde_json::Map::new();
                let mut invalid = None;
                let headers = headers().unwrap_or_else(|| {
                    invalid = Some("the record's headers cannot be parsed");
                    &[]
                });
                for &(name, value) in headers {
                    let (Ok(name), Ok(value)) = (
                        std::str::from_utf8(name),
                        value.map(std::str::from_utf8).transpose(),
                    ) else {
                        invalid = Some("a header's name or value is not UTF-8 text");
                        break;
                    };
                    // A repeated header keeps its last value, as `header.<name>` reads it.
                    all.insert(
                        name.to_string(),
                        value.map_or(serde_json::Value::Null, |v| v.to_string().into()),
                    );
                }
                match invalid {
                    None => meta.push_text(&serde_json::Value::Object(all).to_string()),
                    Some(why) => meta.values.push(MetaValue::Invalid(why)),
                }
            }
            MetaKey::Header(name) => match headers() {
                None => meta
                    .values
                    .push(MetaValue::Invalid("the record's headers cannot be parsed")),
                Some(headers) => {
                    let last = headers.iter().rfind(|(n, _)| *n == name.as_bytes());
                    match last.and_then(|&(_, v)| v) {
                        None => meta.values.push(MetaValue::Null),
                        Some(b) => meta.push_bytes(b, "the header's value is not UTF-8 text"),
                    }
                }
            },
        }
    }
}

/// A header's name and value (`None`: a null value), as the record holds them.
type RawHeader<'m> = (&'m [u8], Option<&'m [u8]>);

/// Record `m`'s headers as bytes, (name, value) in order; `None` when librdkafka cannot parse
/// them. rdkafka's own iterator unwraps each name as UTF-8, so a producer's binary header name
/// would panic the reader; the C API gives each name up to its first NUL byte (it has no
/// length for names) and each value whole, which the caller judges.
fn raw_headers<'m>(m: &'m BorrowedMessage<'_>) -> Option<Vec<RawHeader<'m>>> {
    use rdkafka::bindings as rd;
    const OK: rd::rd_kafka_resp_err_t = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    const NONE: rd::rd_kafka_resp_err_t = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__NOENT;
    let mut out = Vec::new();
    let mut headers = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is the live message `m` borrows; the headers belong to it.
    match unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut headers) } {
        OK => {}
        NONE => return Some(out),
        _ => return None,
    }
    for i in 0.. {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `headers` is the message's; the pointers it fills stay valid while `m` is.
        if unsafe { rd::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size) }
            != OK
        {
            break;
        }
        // SAFETY: librdkafka's names are NUL-terminated; a value is `size` bytes or null.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
        out.push((name, value));
    }
    Some(out)
}
