//! Giving freed memory back to the system after idle connections park.
//!
//! glibc's allocator returns freed memory to the system only from the top of each arena. A burst
//! of connections leaves the buffers of every request it had in flight at once (hyper's, on the
//! client and the upstream side) free but resident, interleaved with what stays live, so after
//! the burst's connections park the process keeps the burst's peak. `malloc_trim(0)` walks every
//! arena and gives its free pages back (`madvise`).
//!
//! The trim runs on a blocking thread, at most once per [`CHECK_EVERY`], and only when at least
//! [`PARKS_PER_TRIM`] connections parked since the last one (each park frees about 24 KiB): a
//! data plane whose connections stay busy never trims. glibc takes each arena's lock while it
//! walks that arena, so a worker allocating in it waits that long (milliseconds on a heap of a
//! few hundred MB).
//!
//! Elsewhere than glibc (musl, macOS) there is no such call and nothing is done; those
//! allocators return memory by themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Connections parked since the last trim, in this process.
static PARKED: AtomicU64 = AtomicU64::new(0);
/// Trims done in this process.
static TRIMS: AtomicU64 = AtomicU64::new(0);

const CHECK_EVERY: Duration = Duration::from_secs(1);
const PARKS_PER_TRIM: u64 = 256;

/// A connection parked: its buffers were freed.
pub(crate) fn parked() {
    PARKED.fetch_add(1, Ordering::Relaxed);
}

/// Times the allocator was asked to give memory back (`airlock_proxy_memory_trims_total`).
pub(crate) fn trims() -> u64 {
    TRIMS.load(Ordering::Relaxed)
}

/// Trims after parks, until dropped (`server::serve` runs it while it serves).
pub(crate) async fn release_after_parks() {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if PARKED.load(Ordering::Relaxed) < PARKS_PER_TRIM {
            continue;
        }
        PARKED.store(0, Ordering::Relaxed);
        if tokio::task::spawn_blocking(trim).await.unwrap_or(false) {
            TRIMS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `malloc_trim(0)`; false where there is no such call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and has no preconditions; glibc serialises it with
    // every other allocator call through the arenas' locks.
    unsafe {
        libc::malloc_trim(0);
    }
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
