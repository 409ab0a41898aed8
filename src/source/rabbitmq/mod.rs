//! A RabbitMQ queue as a source (AMQP 0-9-1 through `lapin`).
//!
//! ```text
//!  queue ─ basic.consume (prefetch bounded) ─▶ chunks (one partition) ─▶ decoders ─▶ engine
//!        ◀─ basic.ack(multiple) of the last delivery a durable checkpoint covers ─┘
//! ```
//! A queue has no offsets to resume from: what a restart must read again is what was never
//! acknowledged. So nothing is acknowledged before the checkpoint that covers it is durable;
//! a crash leaves those messages unacknowledged, the server delivers them again to the next
//! run, and what the restored state had already counted (delivered again after a crash between
//! the checkpoint and its acknowledgement) is dropped by the event-id deduplication. A
//! position is the delivery tag of the consumer's channel with a number for the channel in its
//! high half, so a position a checkpoint of an earlier run recorded is never acknowledged on
//! another channel.

pub(crate) mod connector;
mod reader;

pub(crate) use self::connector::CONNECTOR;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

use super::decoders::start_reading;
use super::{Positions, ReadOptions, Reading, Source};
use crate::connector::amqp::Server;
use crate::connector::runtime::block_on;
use crate::decode::Origin;
use crate::error::Result;

/// A queue read by a job.
pub(crate) struct RabbitSource {
    pub(super) queue: Queue,
    pub(super) until_end: bool,
    pub(super) events: Arc<crate::schema::EventSchema>,
    /// The channel of the current read, which acknowledges (and outlives the reader: the final
    /// checkpoint acknowledges after the run ended); the reader replaces it when it reconnects.
    pub(super) live: Arc<Mutex<Option<Arc<Live>>>>,
}

/// The queue and how to consume it.
#[derive(Debug, Clone)]
pub(super) struct Queue {
    pub(super) server: Server,
    pub(super) name: String,
    pub(super) prefetch: u16,
    /// The consumer tag's stem (the job's name).
    pub(super) consumer: String,
}

/// A read's connection and channel.
pub(super) struct Live {
    /// This channel's number, in the high half of its positions.
    pub(super) generation: u64,
    channel: Channel,
    /// The last delivery tag acknowledged.
    pub(super) acked: AtomicU64,
    _connection: Connection,
}

/// The position of delivery `tag` on the channel numbered `generation`.
pub(super) fn position(generation: u64, tag: u64) -> u64 {
    generation << 32 | (tag & 0xffff_ffff)
}

impl Queue {
    /// A new connection and channel consuming the queue (waiting for the server while it is
    /// down), and the messages waiting in it.
    pub(super) fn consume(&self) -> Result<(Arc<Live>, Consumer, u32)> {
        let connection = self.server.connect(&self.consumer)?;
        let generation = u64::from(rand::random::<u32>() >> 1);
        let (channel, consumer, waiting) = block_on(async {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let q = channel
                .queue_declare(
                    self.name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let consumer = channel
                .basic_consume(
                    self.name.as_str().into(),
                    format!("{}-{generation}", self.consumer).as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer, q.message_count()))
        })
        .map_err(|e| {
            let hint = if e.to_string().contains("NOT_FOUND") {
                ": the queue does not exist; declare it first (durable, so a restart of the server keeps it)"
            } else {
                ""
            };
            self.server
                .error(&format!("read queue {}", self.name), &format!("{e}{hint}"))
        })?;
        let live = Arc::new(Live {
            generation,
            channel,
            acked: AtomicU64::new(0),
            _connection: connection,
        });
        Ok((live, consumer, waiting))
    }
}

impl Source for RabbitSource {
    fn events(&self) -> Arc<crate::schema::EventSchema> {
        Arc::clone(&self.events)
    }

    fn origins(&self) -> Result<Vec<Origin>> {
        Ok(vec![Origin::partition(self.queue.name.as_str(), 0)])
    }

    fn bounded(&self) -> bool {
        self.until_end
    }

    fn open(&self, _start: &Positions, opts: &ReadOptions) -> Result<Reading> {
        let (live, consumer, waiting) = self.queue.consume()?;
        let generation = live.generation;
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&live));
        let positions: Positions = [(0, position(generation, 0))].into();
        tracing::info!(queue = %self.queue.name, waiting, until_end = self.until_end, "rabbitmq source opened");

        let (queue, slot) = (self.queue.clone(), Arc::clone(&self.live));
        let until = self.until_end.then_some(u64::from(waiting));
        let stop = Arc::clone(&opts.stop);
        start_reading(
            &self.events,
            opts,
            positions,
            "rabbitmq-reader",
            move |feed| {
                reader::RabbitReader {
                    consumer,
                    queue,
                    live,
                    slot,
                    until,
                    feed,
                    stop,
                }
                .run()
            },
        )
    }

    fn commit(&self, positions: &Positions) -> Result<()> {
        let Some(live) = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        let Some(&p) = positions.get(&0) else {
            return Ok(());
        };
        // A position of another channel (an earlier run's checkpoint) acknowledges nothing.
        let tag = p & 0xffff_ffff;
        if p >> 32 != live.generation || tag <= live.acked.load(Ordering::Acquire) {
            return Ok(());
        }
        let acked = block_on(
            live.channel
                .basic_ack(tag, BasicAckOptions { multiple: true }),
        );
        match acked {
            Ok(()) => {
                live.acked.store(tag, Ordering::Release);
                Ok(())
            }
            // The channel went away between the delivery and this checkpoint (the server
            // restarted, the connection dropped — lapin may report it as an I/O error while
            // the channel still reads as connected), or the server refused the
            // acknowledgement, which closes the channel: either way the server delivers the
            // unacknowledged messages again — to the reader once it has reconnected — and the
            // deduplication drops those this checkpoint counted. Nothing is lost by going on.
            Err(e) => {
                tracing::warn!(server = %self.queue.server.describe(), queue = %self.queue.name,
                    "acknowledging failed; the server delivers those messages again: {}",
                    crate::connector::secret::mask_in(&e.to_string(), &self.queue.server.url));
                Ok(())
            }
        }
    }
}
