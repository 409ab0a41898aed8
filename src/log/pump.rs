//! Producing a stream of JSON Lines (a file, standard input, a request body) into a topic.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{LogError, Producer};

/// Reads `input` to its end (or until `stop`) and sends each line as one record through
/// `producer`, as `paystream produce` does: keyed and timestamped from its JSON, card numbers
/// screened out (`on_screened` is told each refused line's number). Output is flushed every
/// 200 ms, so a slow input (a pipe) still becomes visible promptly. Returns the lines read.
pub fn pump_lines(
    input: &mut dyn Read,
    producer: &mut Producer,
    stop: &AtomicBool,
    on_screened: &mut dyn FnMut(u64),
) -> Result<u64, LogError> {
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0;
    let mut n = 0;
    let mut last_flush = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let got = input.read(&mut buf[filled..]).map_err(LogError::Input)?;
        if got == 0 {
            n += producer.send_json_lines(&buf[..filled], n + 1, on_screened)?;
            break;
        }
        filled += got;
        if let Some(end) = memchr::memrchr(b'\n', &buf[..filled]) {
            n += producer.send_json_lines(&buf[..end + 1], n + 1, on_screened)?;
            buf.copy_within(end + 1..filled, 0);
            filled -= end + 1;
        } else if filled > producer.max_record_bytes() + 2 {
            // One line longer than any record the topic takes (plus `\r\n`): refuse it now
            // rather than buffer it whole.
            return Err(LogError::RecordTooLarge {
                topic: producer.topic().to_string(),
                record: format!("line {}", n + 1),
                bytes: filled as u64,
                limit: producer.max_record_bytes() as u64,
            });
        }
        if last_flush.elapsed() >= Duration::from_millis(200) {
            producer.flush()?;
            last_flush = Instant::now();
        }
    }
    Ok(n)
}
