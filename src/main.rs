//! The `paystream` command line: a thin layer over the library; `anyhow` lives only here.
//! Subcommands are in `cli/`, one file each.

mod cli;

use clap::Parser;

/// mimalloc instead of glibc malloc: batches are freed on other threads than the ones that
/// allocated them, and glibc's arena locks showed up as futex waits in profiles. Its v2 line
/// (the `v2` feature), whose per-thread segments hand freed memory back out sooner than v3's
/// shared arenas: card_velocity touched less fresh memory (page faults 2,040 → 1,670 per 1 M
/// events) and took 3–5 % less CPU, settlement the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's `mi_option_set`.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` (index 15 of `mi_option_e` in both mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// mimalloc returns freed pages to the OS after 10 ms by default; the engine frees and
/// reallocates megabytes of batches every few milliseconds, so pages were faulted in and zeroed
/// over and over (`clear_page_erms` was 9 % of a replay's profile, sys time 0.13–0.27 s per 1 M
/// events). Keeping freed memory for a second cuts sys time to 0.05–0.07 s and still gives it
/// back when the load drops. `MIMALLOC_PURGE_DELAY` overrides this.
fn tune_allocator() {
    // mimalloc has read its options by now (at the first allocation), so set it outright.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads options atomically.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}

fn main() {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAYSTREAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let r = cli::dispatch(cli::Cli::parse());
    if let Err(e) = r {
        if e.downcast_ref::<cli::common::Interrupted>().is_some() {
            std::process::exit(130);
        }
        if cli::signals::is_broken_pipe(&e) {
            // The reader of our output went away (`| head`): nothing more to say.
            std::process::exit(cli::signals::EXIT_BROKEN_PIPE);
        }
        // Whatever built the message — a planner echoing a column name, an option value — no
        // card number reaches the terminal.
        eprintln!(
            "error: {}",
            paystream::decode::redact(&cli::common::error_text(&e))
        );
        std::process::exit(1);
    }
}
