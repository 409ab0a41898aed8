//! [`KafkaSink`]: records produced by librdkafka's idempotent producer; each checkpoint waits
//! for the broker to acknowledge everything before it (at-least-once, see the module above).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::connector::kafka::{Brokers, GIVE_UP_AFTER};
use crate::error::Result;
use crate::operators::RowTimes;
use crate::sink::{Prepared, Sink};

/// How long one metadata or admin request may take.
const REQUEST: Duration = Duration::from_secs(10);

/// The producer's context: remembers the first record the broker refused for good (after
/// librdkafka's own retries), which fails the next flush.
struct Deliveries {
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

/// See the module's documentation.
pub(super) struct KafkaSink {
    brokers: Brokers,
    topic: String,
    producer: ThreadedProducer<Deliveries>,
    failed: Arc<Mutex<Option<String>>>,
    /// The `key` option, or a changelog's group key columns by name.
    key: Option<String>,
    changelog_keys: Vec<usize>,
    schema: Option<SchemaRef>,
    value: Vec<u8>,
    key_bytes: Vec<u8>,
}

impl KafkaSink {
    /// A producer for `topic`, which is created with `partitions` when it does not exist.
    pub(super) fn open(
        brokers: Brokers,
        topic: &str,
        partitions: i32,
        key: Option<String>,
    ) -> Result<Self> {
        let failed = Arc::new(Mutex::new(None));
        let producer: ThreadedProducer<Deliveries> = brokers
            .config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", GIVE_UP_AFTER.as_millis().to_string())
            .create_with_context(Deliveries {
                failed: Arc::clone(&failed),
            })
            .map_err(|e| brokers.error("create a producer", &e))?;
        ensure_topic(&brokers, &producer, topic, partitions)?;
        Ok(KafkaSink {
            brokers,
            topic: topic.to_string(),
            producer,
            failed,
            key,
            changelog_keys: Vec::new(),
            schema: None,
            value: Vec::with_capacity(512),
            key_bytes: Vec::with_capacity(64),
        })
    }

    /// Sends one record, waiting while the producer's queue is full (backpressure).
    fn send(&mut self, key: Option<Vec<u8>>, time: Option<i64>) -> Result<()> {
        let started = Instant::now();
        loop {
            let mut record = BaseRecord::to(&self.topic).payload(&self.value);
            if let Some(k) = &key {
                record = record.key(k);
            }
            if let Some(t) = time {
                record = record.timestamp(t);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if started.elapsed() < GIVE_UP_AFTER =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(self
                        .brokers
                        .error(&format!("produce to {}", self.topic), &e));
                }
            }
        }
    }

    /// The key of row `row`: the `key` column's value (a string as it is, anything else as
    /// JSON), or a changelog's group key as a JSON array.
    fn key_of(&mut self, batch: &RecordBatch, row: usize) -> Result<Option<Vec<u8>>> {
        if let Some(name) = &self.key {
            let Ok(i) = batch.schema().index_of(name) else {
                return Err(self.brokers.error(
                    &format!("produce to {}", self.topic),
                    &format!(
                        "key = '{name}' is not a column of the query's results ({})",
                        batch
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            return Ok(Some(crate::sink::text_value(batch.column(i).as_ref(), row)));
        }
        if self.changelog_keys.is_empty() {
            return Ok(None);
        }
        self.key_bytes.clear();
        self.key_bytes.push(b'[');
        for (n, &i) in self.changelog_keys.iter().enumerate() {
            if n > 0 {
                self.key_bytes.push(b',');
            }
            crate::sink::write_value(&mut self.key_bytes, batch.column(i).as_ref(), row);
        }
        self.key_bytes.push(b']');
        Ok(Some(self.key_bytes.clone()))
    }

    /// Waits until the broker acknowledged every record sent; fails if it refused one.
    fn drain(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut wait = None;
        loop {
            match self.producer.flush(REQUEST) {
                Ok(()) => break,
                Err(e) if started.elapsed() < GIVE_UP_AFTER => {
                    let reason = self.brokers.mask(&e.to_string());
                    crate::connector::waiting::note(&mut wait, &self.brokers.describe(), &reason);
                    if crate::connector::waiting::give_up(&wait) {
                        return Err(self.brokers.error(
                            &format!("flush {}", self.topic),
                            &format!(
                                "the job was stopped while the broker was unreachable ({reason})"
                            ),
                        ));
                    }
                    tracing::warn!(brokers = %self.brokers.bootstrap, topic = %self.topic, "waiting for the broker to acknowledge records: {reason}");
                }
                Err(e) => {
                    return Err(self.brokers.error(&format!("flush {}", self.topic), &e));
                }
            }
        }
        if let Some(e) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(self.brokers.error(
                &format!("produce to {}", self.topic),
                &format!("the broker refused a record: {e}"),
            ));
        }
        Ok(())
    }
}

/// Creates `topic` with `partitions` unless the broker has it.
fn ensure_topic(
    brokers: &Brokers,
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    let md = brokers.retry("read the broker's topics", || {
        producer.client().fetch_metadata(None, REQUEST)
    })?;
    if md.topics().iter().any(|t| t.name() == topic) {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = brokers
        .config()
        .create()
        .map_err(|e| brokers.error("create an admin client", &e))?;
    // The broker's default replication factor (-1).
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let results = brokers.retry(&format!("create topic {topic}"), || {
        futures::executor::block_on(admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(REQUEST)),
        ))
    })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(brokers.error(&format!("create topic {t}"), &code));
            }
        }
    }
    tracing::info!(topic, partitions, "kafka topic created");
    Ok(())
}

impl Sink for KafkaSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        for row in 0..batch.num_rows() {
            self.value.clear();
            crate::sink::write_row(&mut self.value, batch, row);
            let key = self.key_of(batch, row)?;
            self.send(key, None)?;
        }
        Ok(())
    }

    fn write_results(&mut self, batch: &RecordBatch, times: &RowTimes) -> Result<()> {
        for row in 0..batch.num_rows() {
            self.value.clear();
            crate::sink::write_row(&mut self.value, batch, row);
            let key = self.key_of(batch, row)?;
            self.send(key, Some(times.get(row)))?;
        }
        Ok(())
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        self.value.clear();
        self.value.extend_from_slice(json);
        self.send(None, None)
    }

    fn write_record_at(&mut self, json: &[u8], time: i64) -> Result<()> {
        self.value.clear();
        self.value.extend_from_slice(json);
        self.send(None, Some(time))
    }

    fn key_rows_by(&mut self, columns: &[usize]) {
        self.changelog_keys = columns.to_vec();
    }

    fn rows_schema(&mut self, schema: &SchemaRef) {
        self.schema = Some(Arc::clone(schema));
    }

    fn flush(&mut self) -> Result<()> {
        self.drain()
    }

    fn pre_commit(&mut self, _epoch: u64) -> Result<Prepared> {
        // Everything before the barrier is acknowledged before the checkpoint is written.
        self.drain()?;
        Ok(Prepared::default())
    }
}
