//! Waiting for new data without a busy loop.
//!
//! On Linux a reader watches its partition directories with inotify and sleeps in `poll(2)` until
//! a writer (in this or another process) modifies or creates a file there, or a timeout passes.
//! Elsewhere it sleeps with a bounded backoff.

use std::path::Path;
use std::time::Duration;

/// Blocks until one of the watched directories changes or a timeout passes.
pub struct TailWaiter {
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
    backoff: Duration,
}

impl TailWaiter {
    /// A waiter watching `dirs` (partition directories).
    pub fn new<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Self {
        #[cfg(not(target_os = "linux"))]
        drop(dirs.into_iter());
        TailWaiter {
            #[cfg(target_os = "linux")]
            fd: inotify::watch(dirs),
            backoff: Duration::from_millis(1),
        }
    }

    /// Waits for a change or `timeout`, whichever comes first. Spurious wake-ups are fine: the
    /// caller re-reads and waits again.
    pub fn wait(&mut self, timeout: Duration) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            inotify::wait(fd, timeout);
            return;
        }
        std::thread::sleep(self.backoff.min(timeout));
        self.backoff = (self.backoff * 2).min(Duration::from_millis(50));
    }

    /// Data arrived: the next fallback sleep starts short again.
    pub fn reset(&mut self) {
        self.backoff = Duration::from_millis(1);
    }
}

#[cfg(target_os = "linux")]
mod inotify {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::time::Duration;

    pub(super) fn watch<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Option<OwnedFd> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        for d in dirs {
            let c = std::ffi::CString::new(d.as_os_str().as_bytes()).ok()?;
            let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE;
            // SAFETY: `c` is a valid NUL-terminated path, `fd` a valid inotify descriptor.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) } < 0 {
                return None;
            }
        }
        Some(fd)
    }

    pub(super) fn wait(fd: &OwnedFd, timeout: Duration) {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            // Drain the queued events; their content does not matter, only that something changed.
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: `buf` is writable for its length.
                let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    break;
                }
            }
        }
    }
}
