//! Signals and a closed standard output: Ctrl-C and SIGTERM stop a command cleanly, SIGPIPE
//! ends one quietly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Runs `listen` on a small runtime of its own thread: the binary's signal handling.
pub(crate) fn on_signals<F: std::future::Future<Output = ()>>(
    listen: impl FnOnce() -> F + Send + 'static,
) {
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(listen());
        }
    });
}

/// Sets the returned flag on Ctrl-C or SIGTERM: the run stops reading and drains cleanly.
pub(crate) fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    on_signals(move || async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        flag.store(true, Ordering::Relaxed);
    });
    stop
}
