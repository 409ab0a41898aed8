//! The tokio runtime the broker clients that need one (lapin for RabbitMQ, async-nats) live
//! on: one worker thread runs their I/O, heartbeats and background tasks, whichever engine
//! thread is waiting; connector threads, which are plain threads, wait on it with
//! [`block_on`]. (The Kafka client, librdkafka, has threads of its own; PostgreSQL and Redis
//! use blocking clients.)

use std::future::Future;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("connectors")
            .enable_all()
            .build()
            // Only a process out of threads or file descriptors fails here, before any work.
            .expect("the connectors' runtime starts")
    })
}

/// Runs `f` on the connectors' runtime, waiting for it (from any thread but the runtime's own).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}
