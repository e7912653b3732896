//! A software prefetch hint: start loading a cache line that will be read soon.
#![allow(unsafe_code)]

/// Ask the CPU to bring the cache line holding `addr` into its caches. A hint only: the address
/// is never dereferenced, and a prefetch of an unmapped address is ignored by the CPU, so any
/// value is sound.
#[inline(always)]
pub fn read(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 does not access memory architecturally and cannot fault; SSE is part
    // of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
