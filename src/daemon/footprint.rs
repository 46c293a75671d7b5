//! Keeps the idle daemon's anonymous memory small: at start, malloc's mmap
//! threshold is fixed at its default (128 KiB). glibc otherwise raises it
//! after the first large block is freed (backend selection frees four
//! 256 KiB netlink receive buffers), and from then on each large buffer
//! comes from a thread's arena, zeroed there and resident whole, instead of
//! fresh pages of which only what a datagram fills becomes resident
//! (measured: +0.65 MiB idle RSS without it; docs/benchmarks.md, Footprint).

/// glibc's default mmap threshold.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes malloc's mmap threshold at its default, turning off glibc's
/// dynamic raise of it (and of the trim threshold): allocations from
/// 128 KiB up are always their own mappings, returned to the kernel when
/// freed. Call before anything large is allocated.
pub fn fix_mmap_threshold() {
    // SAFETY: mallopt only changes malloc's parameters.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
}
