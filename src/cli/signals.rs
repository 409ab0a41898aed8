//! Signals and a closed standard output: Ctrl-C and SIGTERM stop a command cleanly, SIGPIPE
//! ends one quietly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::Command;

/// What a shell reports for a process ended by SIGPIPE (128 + 13), as for `seq 1e9 | head -1`.
pub(crate) const EXIT_BROKEN_PIPE: i32 = 141;

/// A closed standard output ends a command quietly, as coreutils do: SIGPIPE takes its default
/// action (Rust ignores it, so `println!` would panic). `consume` and `run` keep it ignored and
/// handle the write error themselves: `consume` commits its group's offsets for what it
/// printed, and a continuous job must stop through its checkpoint path, never mid-write.
pub(crate) fn quiet_on_closed_stdout(command: &Command) {
    if matches!(command, Command::Consume { .. } | Command::Run { .. }) {
        return;
    }
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether an error comes from writing to a closed pipe.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.to_string().contains("Broken pipe")
    })
}

/// What the signal thread sets.
pub(crate) struct Flags {
    /// Ctrl-C or SIGTERM: stop reading and drain cleanly.
    pub(crate) stop: Arc<AtomicBool>,
    /// SIGUSR1 (`paystream savepoint JOB`): take a savepoint at the next barrier.
    pub(crate) savepoint: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Starts the binary's one signal thread (on the first call; later calls return the same
/// flags): Ctrl-C and SIGTERM set `stop`; with `savepoint`, SIGUSR1 sets `savepoint` each time
/// it arrives (without it, SIGUSR1 keeps its default action).
pub(crate) fn listen(savepoint: bool) -> &'static Flags {
    FLAGS.get_or_init(|| {
        let flags = Flags {
            stop: Arc::default(),
            savepoint: Arc::default(),
        };
        let (stop, sp) = (Arc::clone(&flags.stop), Arc::clone(&flags.savepoint));
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut term = signal(SignalKind::terminate()).ok();
                    let mut usr1 = if savepoint {
                        signal(SignalKind::user_defined1()).ok()
                    } else {
                        None
                    };
                    loop {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => stop.store(true, Ordering::Relaxed),
                            Some(()) = recv(&mut term) => stop.store(true, Ordering::Relaxed),
                            Some(()) = recv(&mut usr1) => sp.store(true, Ordering::Relaxed),
                        }
                    }
                });
            })
            .expect("cannot spawn the signal thread");
        flags
    })
}

/// The next arrival of a signal that is listened for; never, for one that is not.
async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s.as_mut() {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Set on Ctrl-C or SIGTERM: the command stops reading and drains cleanly.
pub(crate) fn stop_on_signal() -> Arc<AtomicBool> {
    Arc::clone(&listen(false).stop)
}
