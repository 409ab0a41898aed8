//! The embedded partitioned log: durable, append-only, read by offset — the default ingest stream
//! and sink queues (issue 3). This module currently holds its storage unit, the [`Segment`];
//! partitions, topics, indexes, retention and consumer groups build on it.

mod segment;

pub use self::segment::{NewRecord, Record, Segment, SegmentError};
