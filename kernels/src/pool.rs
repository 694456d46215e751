//! Rayon pools of an explicit size.
//!
//! Snakemake's `threads:` reaches OpenMP and BLAS through environment variables but not
//! rayon, so every kernel takes `n_threads` and runs on a pool of exactly that many threads.
//! Pools are built once per size and kept: building one costs more than a small kernel call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::KernelResult;
use crate::kerr;

static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

/// Upper bound on `n_threads`; a larger request is almost certainly a mistake.
pub const MAX_THREADS: usize = 1024;

/// Returns the shared pool of exactly `n_threads` threads, building it on first use.
pub fn pool(n_threads: usize) -> KernelResult<Arc<ThreadPool>> {
    if n_threads == 0 || n_threads > MAX_THREADS {
        return Err(kerr!(
            "n_threads must be between 1 and {MAX_THREADS}, got {n_threads}"
        ));
    }
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = pools
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(p) = map.get(&n_threads) {
        return Ok(Arc::clone(p));
    }
    let built = ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .thread_name(|i| format!("geneattn-{i}"))
        .build()
        .map_err(|e| kerr!("could not start a pool of {n_threads} threads: {e}"))?;
    let built = Arc::new(built);
    map.insert(n_threads, Arc::clone(&built));
    Ok(built)
}

/// Runs `f` on the pool of `n_threads` threads.
pub fn install<R: Send>(n_threads: usize, f: impl FnOnce() -> R + Send) -> KernelResult<R> {
    Ok(pool(n_threads)?.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_has_requested_size() {
        let n = install(3, rayon::current_num_threads).unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(pool(0).is_err());
    }
}
