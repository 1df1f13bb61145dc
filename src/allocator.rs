//! The process allocator: mimalloc for blocks under 4 KiB, the C library's allocator for
//! larger ones, each entered through its plain `malloc`-style calls whenever the requested
//! alignment is one every block has anyway.
//!
//! Small blocks (strings, map nodes, headers, the request context) are where mimalloc pays: a
//! reload of 10,000 virtual models ran twice as fast as on glibc alone, and a proxied request
//! costs fewer instructions. Large blocks are buffers (Pingora's 64 KiB body buffers, the
//! client write buffer, header buffers) that an open stream holds for its whole life and
//! mostly never writes into. mimalloc keeps such blocks on memory that is already resident,
//! so each held buffer costs its full size: an open stream held about 130 KiB of RSS this way.
//! The C library hands out fresh pages that stay off RSS until written, so a held buffer costs
//! what was written into it (`bench/streams.py`; BENCHMARKS.md, "Open streams"). Whether a
//! block is large is decided by its layout's size, which Rust passes again to `dealloc` and
//! `realloc`, so every block goes back to the allocator it came from.
//!
//! The usual Rust binding sends every allocation through mimalloc's aligned entry points. Those
//! are only fast for blocks of up to 1 KiB that happen to sit on an aligned address; anything
//! larger takes a general path that sizes the block twice and may over-allocate and mark the
//! page as holding interior pointers, which then slows every `free` on that page. Almost every
//! Rust layout asks for an alignment of at most a machine word, which all mimalloc blocks
//! satisfy (block sizes are whole words and pages start aligned), so those go to `mi_malloc` /
//! `mi_zalloc` / `mi_realloc` directly, the same way the standard library's system allocator
//! skips `posix_memalign` for small alignments. Larger alignments keep the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const BLOCK_ALIGN: usize = std::mem::size_of::<usize>();

/// The alignment every block of the C library's `malloc` has (glibc: two words).
const LIBC_ALIGN: usize = 2 * std::mem::size_of::<usize>();

/// Blocks of this size and more come from the C library (see the module doc).
const LARGE: usize = 4096;

/// The global allocator the gateway binary installs (see the crate root).
pub struct Allocator;

/// A large block from the C library, aligned as `layout` asks; null when out of memory.
///
/// # Safety
/// `layout.size()` is not zero.
unsafe fn libc_alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    if layout.align() <= LIBC_ALIGN {
        return if zeroed {
            libc::calloc(1, layout.size()) as *mut u8
        } else {
            libc::malloc(layout.size()) as *mut u8
        };
    }
    let mut p: *mut c_void = std::ptr::null_mut();
    // `posix_memalign` wants a power of two that is a multiple of the word size, which every
    // alignment over LIBC_ALIGN is.
    if libc::posix_memalign(&mut p, layout.align(), layout.size()) != 0 {
        return std::ptr::null_mut();
    }
    if zeroed {
        std::ptr::write_bytes(p as *mut u8, 0, layout.size());
    }
    p as *mut u8
}

/// A small block from mimalloc.
///
/// # Safety
/// `layout.size()` is not zero.
unsafe fn mi_alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    match (layout.align() <= BLOCK_ALIGN, zeroed) {
        (true, false) => mi::mi_malloc(layout.size()) as *mut u8,
        (true, true) => mi::mi_zalloc(layout.size()) as *mut u8,
        (false, false) => mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8,
        (false, true) => mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8,
    }
}

// SAFETY: a block of `LARGE` bytes or more comes from the C library (`malloc`/`calloc` when its
// alignment suffices, `posix_memalign` otherwise) and goes back with `free`; a smaller one comes
// from mimalloc (plain calls only when `align <= BLOCK_ALIGN`, which every mimalloc block
// satisfies, the aligned calls otherwise) and goes back with `mi_free`. Which one is decided by
// the layout's size, which the caller passes unchanged to `dealloc` and `realloc`; a `realloc`
// across the boundary allocates from the other side, copies the smaller of the two sizes and
// frees the old block where it came from. Each returns null or a block of at least the
// requested size aligned as the layout asks.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            libc_alloc(layout, false)
        } else {
            mi_alloc(layout, false)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            libc_alloc(layout, true)
        } else {
            mi_alloc(layout, true)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= LARGE {
            libc::free(ptr as *mut c_void);
        } else {
            mi::mi_free(ptr as *mut c_void);
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (layout.size() >= LARGE, new_size >= LARGE) {
            (false, false) if layout.align() <= BLOCK_ALIGN => {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            }
            (false, false) => {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
            (true, true) if layout.align() <= LIBC_ALIGN => {
                libc::realloc(ptr as *mut c_void, new_size) as *mut u8
            }
            // Across the boundary, or a large block with a large alignment: a new block.
            (true, true) | (true, false) | (false, true) => {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

/// Hands memory freed in bulk back to the operating system: the C library's free pages
/// (`malloc_trim`; its heap keeps them otherwise, fragmented by the large vectors of a big
/// config) and the calling thread's empty mimalloc pages. Called once a replaced snapshot and
/// config have been freed (`retire`), never on the request path: after reloads of 100,000
/// virtual models the freed tables otherwise stayed resident (BENCHMARKS.md, "100,000 virtual
/// models").
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the C library's own free lists and releases whole free
    // pages; it is thread-safe and touches no block in use.
    unsafe {
        libc::malloc_trim(0);
    }
    // SAFETY: collects the calling thread's own heap; blocks in use are never touched.
    unsafe { mi_collect(true) };
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`): memory it touches
/// from here on comes in 4 KiB pages, whatever mimalloc asks for its arenas (it marks them
/// `MADV_HUGEPAGE`).
///
/// Why: a reload builds a whole new config and snapshot next to the live ones, and after a quiet
/// spell that memory comes fresh from the operating system. In huge pages each first touch
/// clears 2 MiB, and the pages that `give_back` returned are split and cleared again: a
/// 100,000-model reload after a pause took 403-731 ms with them and 398-484 ms without (paired
/// runs; BENCHMARKS.md, "Routing 100,000 virtual models, and huge pages off"). The gateway's
/// resident set is smaller too, idle and under load. The cost is paid by lookups in very large
/// tables (`plan/100000` 0.78 -> 0.84 us). Called first in `main`; an error (a kernel without
/// the call) leaves the default.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE sets one flag of the calling process; no memory is touched.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Whether `without_huge_pages` is in effect (`PR_GET_THP_DISABLE`).
pub fn huge_pages_off() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: reads one flag of the calling process.
    unsafe {
        libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1
    }
    #[cfg(not(target_os = "linux"))]
    false
}

// mimalloc's own entry point, in the library `libmimalloc-sys` links; that crate declares it
// only under a feature that brings another dependency.
extern "C" {
    fn mi_collect(force: bool);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes around mimalloc's bin edges and its 1 KiB small-block limit, up to several MiB.
    const SIZES: [usize; 16] = [
        1,
        7,
        8,
        9,
        24,
        40,
        100,
        1000,
        1024,
        1025,
        1500,
        4096,
        70_000,
        300_000,
        1 << 20,
        9 << 20,
    ];
    const ALIGNS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 4096];

    /// Every block is aligned as asked, writable over its whole size, zeroed when asked, keeps
    /// its bytes across growing and shrinking reallocations, and frees cleanly. Many blocks of
    /// each kind are held at once, so later ones land at varied addresses within a page.
    #[test]
    fn blocks_are_aligned_sized_zeroed_and_keep_their_bytes() {
        let a = Allocator;
        for &align in &ALIGNS {
            for &size in &SIZES {
                let layout = Layout::from_size_align(size, align).unwrap();
                let mut held = Vec::new();
                let rounds = if size > 64 * 1024 { 3 } else { 24 };
                for round in 0..rounds {
                    let zeroed = round % 2 == 0;
                    // SAFETY: the layout has a non-zero size; the block is checked for null and
                    // used only within its size, then freed with the same layout below.
                    let p = unsafe {
                        if zeroed {
                            a.alloc_zeroed(layout)
                        } else {
                            a.alloc(layout)
                        }
                    };
                    assert!(!p.is_null(), "size {size} align {align}");
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    // SAFETY: `p` points to `size` writable bytes that nothing else uses.
                    let bytes = unsafe { std::slice::from_raw_parts_mut(p, size) };
                    if zeroed {
                        assert!(bytes.iter().all(|b| *b == 0), "size {size} align {align}");
                    }
                    bytes.fill(round);
                    held.push((p, round));
                }
                for (p, round) in held {
                    let grown = size * 3 + 5;
                    // SAFETY: `p` came from this allocator with `layout`; the result is checked
                    // for null and read only within the smaller of the two sizes.
                    let q = unsafe { a.realloc(p, layout, grown) };
                    assert!(!q.is_null());
                    assert_eq!(
                        q as usize % align,
                        0,
                        "realloc of size {size} align {align}"
                    );
                    // SAFETY: `q` holds at least `size` bytes, the first `size` initialized.
                    let kept = unsafe { std::slice::from_raw_parts(q, size) };
                    assert!(
                        kept.iter().all(|b| *b == round),
                        "size {size} align {align}"
                    );
                    let grown_layout = Layout::from_size_align(grown, align).unwrap();
                    let shrunk = size.div_ceil(2);
                    // SAFETY: as above, with the layout the block now has.
                    let r = unsafe { a.realloc(q, grown_layout, shrunk) };
                    assert!(!r.is_null());
                    assert_eq!(r as usize % align, 0);
                    // SAFETY: `r` holds `shrunk` initialized bytes.
                    let kept = unsafe { std::slice::from_raw_parts(r, shrunk) };
                    assert!(
                        kept.iter().all(|b| *b == round),
                        "size {size} align {align}"
                    );
                    // SAFETY: `r` came from this allocator and is freed once.
                    unsafe { a.dealloc(r, Layout::from_size_align(shrunk, align).unwrap()) };
                }
            }
        }
    }

    /// This process's resident set in KiB (`VmRSS`).
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Large blocks freed between ones still held stay resident in the C library's heap (it
    /// only returns the top of its heap by itself) until `give_back`, which returns them.
    #[test]
    fn give_back_returns_freed_large_blocks_to_the_operating_system() {
        let a = Allocator;
        let layout = Layout::from_size_align(16 * 1024, 8).unwrap();
        // 96 MiB written, of which one block in sixteen stays held.
        let blocks: Vec<*mut u8> = (0..6144)
            .map(|_| {
                // SAFETY: a non-zero size; checked for null, written within its size, freed
                // below with the same layout.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                unsafe { std::ptr::write_bytes(p, 1, layout.size()) };
                p
            })
            .collect();
        let mut held = Vec::new();
        for (i, p) in blocks.into_iter().enumerate() {
            if i % 16 == 0 {
                held.push(p);
            } else {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { a.dealloc(p, layout) };
            }
        }
        let before = rss_kib();
        give_back();
        let after = rss_kib();
        for p in held {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { a.dealloc(p, layout) };
        }
        // About 90 MiB were freed between held blocks; at least half of it must leave.
        assert!(
            before.saturating_sub(after) >= 45 * 1024,
            "resident set {before} KiB before give_back, {after} KiB after"
        );
    }
}
