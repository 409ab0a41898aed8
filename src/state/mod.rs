//! Operator state snapshots: typed state → versioned, checksummed bytes, and back.
//!
//! Sits beside the operators on the data's path: every stateful stage (the router's dedup and
//! watermark, each operator) declares its state as Arrow batches plus a small JSON header and
//! serialises it here, so a checkpoint sees all of it and nothing hides in a local variable. A
//! leaf module: what the batches mean is up to their owner (the window codec lives in
//! `operators`).
//!
//! ```text
//! "PSST" | version u16 | name | header JSON | n × (tag i64, Arrow IPC stream) | CRC32C
//! ```

use std::io::Cursor;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"PSST";
const VERSION: u16 = 1;

pub(crate) fn state_err(operator: &str, message: impl Into<String>) -> Error {
    Error::State {
        operator: operator.to_string(),
        message: message.into(),
    }
}

/// A snapshot being read or written: a header and tagged batches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Operator-specific scalars (watermarks, sizes, counters).
    pub(crate) header: serde_json::Value,
    /// Tagged batches (e.g. tag = window start).
    pub(crate) batches: Vec<(i64, RecordBatch)>,
}

impl Snapshot {
    /// Serialises the snapshot for operator `name`.
    pub(crate) fn encode(&self, name: &str) -> Result<Vec<u8>> {
        // Sized up front: state can be hundreds of MB, and growing by doubling copies it again
        // and again into freshly faulted pages.
        let size: usize = self
            .batches
            .iter()
            .map(|(_, b)| b.get_array_memory_size() + 1024)
            .sum();
        let mut out = Vec::with_capacity(size + 1024);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, self.header.to_string().as_bytes());
        out.extend_from_slice(&(self.batches.len() as u32).to_le_bytes());
        for (tag, batch) in &self.batches {
            out.extend_from_slice(&tag.to_le_bytes());
            // The IPC stream is written in place after a length placeholder.
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            {
                let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
                w.write(batch)?;
                w.finish()?;
            }
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses a snapshot written by operator `name`, verifying its checksum.
    pub(crate) fn decode(name: &str, bytes: &[u8]) -> Result<Snapshot> {
        if bytes.len() < 10 || &bytes[..4] != MAGIC {
            return Err(state_err(name, "not a paystream state snapshot"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(state_err(
                name,
                "snapshot checksum mismatch: the file is torn or corrupt",
            ));
        }
        let mut r = Reader { b: body, i: 4 };
        let version = u16::from_le_bytes(r.take(2, name)?.try_into().expect("2 bytes"));
        if version != VERSION {
            return Err(state_err(
                name,
                format!("snapshot version {version} is not supported (expected {VERSION})"),
            ));
        }
        let got = String::from_utf8_lossy(r.bytes(name)?).to_string();
        if got != name {
            return Err(state_err(
                name,
                format!("snapshot belongs to operator `{got}`, not `{name}`: the query changed"),
            ));
        }
        let header = serde_json::from_slice(r.bytes(name)?)
            .map_err(|e| state_err(name, format!("bad snapshot header: {e}")))?;
        let n = u32::from_le_bytes(r.take(4, name)?.try_into().expect("4 bytes"));
        let mut batches = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let tag = i64::from_le_bytes(r.take(8, name)?.try_into().expect("8 bytes"));
            let ipc = r.bytes(name)?;
            let mut reader = StreamReader::try_new(Cursor::new(ipc), None)?;
            let batch = reader
                .next()
                .ok_or_else(|| state_err(name, "empty batch in snapshot"))??;
            batches.push((tag, batch));
        }
        Ok(Snapshot { header, batches })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, name: &str) -> Result<&'a [u8]> {
        let s = self
            .b
            .get(self.i..self.i + n)
            .ok_or_else(|| state_err(name, "snapshot is truncated"))?;
        self.i += n;
        Ok(s)
    }

    fn bytes(&mut self, name: &str) -> Result<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4, name)?.try_into().expect("4 bytes")) as usize;
        self.take(len, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_and_foreign_snapshots_are_rejected() {
        let s = Snapshot {
            header: serde_json::json!({"w": 5}),
            batches: vec![],
        };
        let bytes = s.encode("dedup").unwrap();
        assert_eq!(Snapshot::decode("dedup", &bytes).unwrap().header["w"], 5);
        assert!(Snapshot::decode("dedup", &bytes[..bytes.len() - 1]).is_err());
        let mut flipped = bytes.clone();
        flipped[8] ^= 1;
        assert!(Snapshot::decode("dedup", &flipped).is_err());
        assert!(
            Snapshot::decode("tumbling_window", &bytes)
                .unwrap_err()
                .to_string()
                .contains("query changed")
        );
    }
}
