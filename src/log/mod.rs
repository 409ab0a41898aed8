//! The embedded partitioned log: durable, append-only, read by offset — the default ingest stream
//! and sink queues (issue 3). So far: the [`Segment`] (checksummed record batches, torn-tail
//! recovery, seek by offset and time) and the [`Partition`] (segments rolled by size). Topics,
//! on-disk indexes, retention and consumer groups build on them.

mod partition;
mod segment;

pub use self::partition::{Partition, PartitionError};
pub use self::segment::{NewRecord, Record, Segment, SegmentError};
