//! The process allocator: mimalloc, entered through its plain `malloc`-style calls whenever the
//! requested alignment is one every mimalloc block has anyway.
//!
//! The usual Rust binding sends every allocation through mimalloc's aligned entry points. Those
//! are only fast for blocks of up to 1 KiB that happen to sit on an aligned address; anything
//! larger (Pingora's read and write buffers, the request context, header blocks) takes a
//! general path that sizes the block twice and may over-allocate and mark the page as holding
//! interior pointers, which then slows every `free` on that page. Almost every Rust layout asks
//! for an alignment of at most a machine word, which all mimalloc blocks satisfy (block sizes are
//! whole words and pages start aligned), so those go to `mi_malloc` / `mi_zalloc` /
//! `mi_realloc` directly, the same way the standard library's system allocator skips
//! `posix_memalign` for small alignments. Larger alignments keep the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const BLOCK_ALIGN: usize = std::mem::size_of::<usize>();

/// The global allocator the gateway binary installs (see the crate root).
pub struct Allocator;

// SAFETY: every method forwards to mimalloc, which returns null or a block of at least the
// requested size aligned as the layout asks: plain calls only when `align <= BLOCK_ALIGN`, which
// every mimalloc block satisfies, the aligned calls otherwise. `dealloc` and `realloc` receive
// only pointers this allocator returned, and `mi_free` / `mi_realloc` accept blocks from either
// kind of call.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
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
}
