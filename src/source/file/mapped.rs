//! An event file mapped into memory, read in place.
//!
//! Reading a file copies every byte from the page cache into a buffer the process owns, and
//! those buffers — one per chunk in flight between the reader, the decoders and the workers
//! (a dozen at 2 MiB) — are fresh memory the kernel must zero on first touch. Profiles of a
//! 1 M-event replay put the copy at 7 % and the zeroing at 15 % of the run. A read-only
//! mapping hands the decoders the page cache's own pages: no copy, no zeroing.
//!
//! The mapping covers the file as it was when it was opened: bytes appended later are not
//! read (a replay reads a finished file), and a file truncated while it is read ends the
//! process with `SIGBUS` (the kernel's answer to reading a page that no longer exists) —
//! which is why only regular files are mapped, and any file that cannot be is read as before.

use std::fs::File;
use std::os::fd::AsRawFd;

/// A read-only, private mapping of a whole regular file.
#[derive(Debug)]
pub(super) struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and private to this process; it is only ever read, through
// `&[u8]`, and unmapped once, on drop.
unsafe impl Send for MappedFile {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps `file`, when it is a regular, non-empty file the system lets us map.
    pub(super) fn open(file: &File) -> Option<MappedFile> {
        let meta = file.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok()?;
        if !meta.is_file() || len == 0 {
            return None;
        }
        // SAFETY: a fresh read-only private mapping of `len` bytes of an open file; the
        // result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Read front to back: ask for aggressive read-ahead. Only a hint; its failure changes
        // nothing.
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Some(MappedFile { ptr, len })
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::mpsc::sync_channel;
    use std::sync::{Arc, Mutex};

    use super::super::{CHUNK, SourcePosition, read_buffered, read_mapped};
    use super::*;
    use crate::decode::{BOM, Decoder, Format};
    use crate::source::decoders::{Job, Records};

    /// The chunks a reader sends: (seq, first line, bytes).
    fn chunks(
        path: &std::path::Path,
        format: Format,
        start: SourcePosition,
        mapped: bool,
    ) -> Vec<(u64, u64, Vec<u8>)> {
        let decoder = Decoder::for_events(&crate::schema::EventSchema::payments()).unwrap();
        let (jobs, rx) = sync_channel(1 << 12);
        let (_recycle, recycled) = sync_channel(4);
        let header = Mutex::new(None);
        let (bytes, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        let mut file = File::open(path).unwrap();
        // As `spawn_reader` hands the file over: at the position to start from.
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start.offset)).unwrap();
        if mapped {
            let map = Arc::new(MappedFile::open(&file).unwrap());
            read_mapped(
                path, &decoder, &map, format, start, &jobs, &header, &bytes, &stop,
            )
        } else {
            read_buffered(
                path, &decoder, file, format, start, &jobs, &recycled, &header, &bytes, &stop,
            )
        }
        .unwrap();
        drop(jobs);
        let len = std::fs::metadata(path).unwrap().len() - start.offset;
        assert_eq!(bytes.into_inner(), len, "every byte counted as read");
        rx.iter()
            .map(|job| {
                let (seq, line, records) = match job {
                    Job::Json {
                        seq,
                        first_line,
                        bytes,
                        ..
                    }
                    | Job::Csv {
                        seq,
                        first_line,
                        bytes,
                    } => (seq, first_line, bytes),
                };
                let bytes = match records {
                    Records::Buffer(b) => b,
                    Records::Shared(c) => c.bytes().to_vec(),
                };
                (seq, line, bytes)
            })
            .collect()
    }

    /// Whatever the file — a byte-order mark, a CSV header, quoted newlines, records longer
    /// than two chunks, no final newline, a resumed position — the mapped reader sends the
    /// chunks the buffered reader sends, so results (an updating query's changelog too) do
    /// not depend on which one read the file.
    #[test]
    fn a_mapped_file_is_cut_into_the_chunks_a_read_one_is() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        let dir = tempfile::tempdir().unwrap();
        for round in 0..6 {
            let csv = round % 2 == 1;
            let mut text = String::new();
            if round % 3 == 0 {
                text.push_str(BOM);
            }
            if csv {
                text.push_str(
                    "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency\r\n",
                );
            }
            let mut boundaries = vec![text.len()];
            let mut long_one = true;
            while text.len() < 6 * CHUNK {
                // One record longer than two chunks, in the middle of the file.
                let long = long_one && text.len() > 3 * CHUNK;
                long_one &= !long;
                let n = if long {
                    rng.random_range(CHUNK..CHUNK * 5 / 2)
                } else {
                    rng.random_range(1..600)
                };
                let body: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
                match (csv, rng.random_range(0..10)) {
                    (true, 0) => text.push_str(&format!("\"{body}\n{body}\",x\r\n")),
                    (true, _) => text.push_str(&format!("{body},y\n")),
                    (false, _) => text.push_str(&format!("{{\"k\":\"{body}\"}}\n")),
                }
                boundaries.push(text.len());
            }
            if round >= 3 {
                text.pop();
            }
            let path = dir.path().join(format!("f{round}"));
            std::fs::write(&path, &text).unwrap();
            let format = if csv { Format::Csv } else { Format::JsonLines };
            let mut starts = vec![SourcePosition::default()];
            if !csv {
                let k = boundaries.len() / 2;
                starts.push(SourcePosition {
                    offset: boundaries[k] as u64,
                    line: k as u64 + 1,
                });
            }
            for start in starts {
                let read = chunks(&path, format, start, false);
                let mapped = chunks(&path, format, start, true);
                assert!(read.len() > 1, "round {round}: several chunks");
                assert!(read == mapped, "round {round} from {start:?}");
            }
        }
    }

    #[test]
    fn maps_a_file_as_it_is_and_declines_an_empty_one() {
        let dir = std::env::temp_dir().join(format!("paystream-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        let map = MappedFile::open(&File::open(&path).unwrap()).unwrap();
        assert_eq!(map.as_ref(), b"{\"a\":1}\n{\"a\":2}\n");
        let empty = dir.join("empty.jsonl");
        std::fs::write(&empty, b"").unwrap();
        assert!(MappedFile::open(&File::open(&empty).unwrap()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
