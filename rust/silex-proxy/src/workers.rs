//! The data plane's worker threads: one single-threaded Tokio runtime per worker, as nginx
//! runs one event loop per worker process.
//!
//! A connection is handed to a worker when it is accepted (round robin) and every task it
//! starts (its upstream connections, tunnels) stays on that worker, as do the upstream
//! HTTP/1.1 connections it takes from the pool (one pool slot per worker). A request therefore
//! never wakes another thread: with Tokio's work-stealing scheduler, a request and the
//! upstream connection it used could sit on two workers, and every exchange between them was a
//! cross-thread wake-up.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// Index of the worker this thread runs; 0 on threads that are not workers.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Index of the current worker (0 outside the workers).
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// How many workers `configured` asks for: one per CPU by default.
pub(crate) fn count(configured: Option<usize>) -> usize {
    configured
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

/// Running worker threads.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` workers named `silex-core-<i>`.
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("silex-core-{index}"))
                .spawn(move || {
                    WORKER.with(|worker| worker.set(index));
                    runtime.block_on(stop.cancelled());
                    runtime.shutdown_background();
                })?;
            threads.push(thread);
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// The first worker: accept loops and health checks run there.
    pub(crate) fn first(&self) -> &Handle {
        &self.handles[0]
    }

    /// The worker for the next connection (round robin).
    pub(crate) fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }

    /// Stops every worker (their tasks are dropped) and waits for the threads to end.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}
