//! The process's memory allocator: the system's, with transparent huge pages for large blocks
//! and fixed thresholds for giving memory back.
//!
//! The price cache is one large hash table per DashMap shard; at a million listings a lookup
//! lands on a random 4 KiB page of ~100 MB, so most lookups miss the TLB as well as the data
//! cache (and a TLB miss costs twice over inside a VM). Asking the kernel to back large blocks
//! with 2 MiB pages (`MADV_HUGEPAGE`, honoured when transparent huge pages are set to `madvise`
//! or `always`) removes most of those misses. (mimalloc was tried too: it kept the tables a
//! growing cache had outgrown resident, 157 bytes per listing at 1M against 118.)
//!
//! Declare it in a binary with `#[global_allocator] static ALLOC: conscope::alloc::Allocator =
//! conscope::alloc::Allocator;`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

/// Blocks at least this large are advised onto huge pages.
const HUGE_ADVICE_MIN: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

/// Advise the 2 MiB-aligned interior of a fresh block, if it is large, onto huge pages. Advice
/// only: a kernel without transparent huge pages refuses it, and that is fine.
fn advise_huge(ptr: *mut u8, size: usize) -> *mut u8 {
    if size < HUGE_ADVICE_MIN || ptr.is_null() {
        return ptr;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + size) & !(HUGE_PAGE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside the block just allocated for the caller; madvise
        // with MADV_HUGEPAGE changes how the pages are backed, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    ptr
}

/// Blocks at least this large get a mapping of their own, unmapped when freed.
const MMAP_MIN: usize = 1 << 20;
/// Freed memory at the top of the heap kept for reuse, at most.
const KEEP_FREED: usize = 32 << 20;

/// Set once, before the first allocation is served.
static TUNED: AtomicBool = AtomicBool::new(false);

/// glibc's thresholds adapt to the sizes it has seen freed, which suits short programs; a
/// stream engine frees each batch just before the next one allocates as much again, and there
/// the adaptive thresholds gave memory back to the kernel only to fault it in again, page by
/// page (the detector benchmark, which frees a whole iteration's events at once, lost up to 20%
/// to those faults). Fixed thresholds keep up to [`KEEP_FREED`] of freed heap for reuse, and
/// give blocks from [`MMAP_MIN`] up — the cache's tables among them — their own mapping,
/// returned to the kernel the moment they are freed.
#[inline]
fn tune() {
    // A plain load on the hot path: a read-modify-write on every allocation would bounce the
    // flag's cache line between cores.
    if TUNED.load(Relaxed) || TUNED.swap(true, Relaxed) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; both values are in its range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_MIN as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED as libc::c_int);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the advice does not touch
// the memory, and the tuning only changes when glibc maps and unmaps.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        tune();
        // SAFETY: the caller upholds GlobalAlloc's contract, which System shares.
        advise_huge(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        tune();
        // SAFETY: as for `alloc`.
        advise_huge(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from System, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        advise_huge(unsafe { System.realloc(ptr, layout, new_size) }, new_size)
    }
}
