//! Store IO off the async workers.
//!
//! RocksDB reads, writes and fsyncs block the calling thread (an fsync on a station's SD card
//! can take tens of milliseconds). On a tokio worker that stalls every other task scheduled
//! there, e.g. the children streaming from the same relay. Async code runs store IO through
//! [`store_io`], on tokio's blocking pool. Memory-only store calls (`has`, `size_of`, `stats`)
//! need no such care.

use std::sync::Arc;

use courseway_store::Store;

/// Runs `f` on `store` on a blocking thread and returns its result.
pub async fn store_io<T, F>(store: &Arc<Store>, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&Store) -> T + Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down and drops this task too; never resume it.
        Err(_) => std::future::pending().await,
    }
}
