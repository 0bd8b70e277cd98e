//! The binary's global allocator: mimalloc, asked the way its fast paths expect.
//!
//! The `mimalloc` crate hands every request to `mi_malloc_aligned`. In mimalloc 3 that call
//! takes the plain small-block path only when a free block happens to be aligned, and for
//! blocks over 1 KiB whose size class is not a power of two it over-allocates (size plus
//! alignment) and marks the page as holding interior pointers, even for an alignment of 8:
//! 4.5 such blocks per proxied call, among them its boxed future. Here an
//! alignment a plain block already guarantees (at most 16 bytes, a divisor of the size)
//! goes to `mi_malloc`; any other keeps the aligned call. BENCHMARKS.md ("#24: what was
//! kept") has the instructions it saves per call.
//!
//! This module is the crate's one exception to `unsafe_code = "deny"`: a global allocator
//! cannot be written without it.
//!
//! ```
//! use std::alloc::{GlobalAlloc, Layout};
//!
//! let allocator = grpcproxy_cli::allocator::MiMalloc;
//! let layout = Layout::from_size_align(2_264, 8).unwrap();
//! #[allow(unsafe_code)]
//! unsafe {
//!     let block = allocator.alloc(layout);
//!     assert!(!block.is_null());
//!     allocator.dealloc(block, layout);
//! }
//! ```
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment every mimalloc block of a size that is a multiple of it has
/// (`MI_MAX_ALIGN_SIZE`: size classes are multiples of 16 above 16 bytes, multiples of 8
/// below, and a page's first block is 16-aligned).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator]`), see the module's page.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// Whether a plain block of `size` bytes is aligned to `align`.
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && size.is_multiple_of(align)
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes blocks from
// any of its allocation calls); each call is given the size, and the alignment when a
// plain block would not have it.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: mimalloc's allocation calls take any size and a power-of-two alignment.
        unsafe {
            if plain(align, size) {
                mi_malloc(size).cast()
            } else {
                mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(align, size) {
                mi_zalloc(size).cast()
            } else {
                mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from this allocator; the new block keeps the alignment.
        unsafe {
            if plain(align, new_size) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, align).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size from 1 byte to 8 KiB (and some large ones) at every alignment from 1 to
    /// 4 KiB comes back aligned, writable, and (zeroed) zero; a reallocation keeps the
    /// contents and the alignment.
    #[test]
    fn blocks_are_aligned_for_every_layout() {
        let sizes =
            (1..=512)
                .chain((520..=8_192).step_by(8))
                .chain([2_264, 10_000, 65_536, 1 << 20]);
        for size in sizes {
            for align in (0..=12).map(|shift| 1usize << shift) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed with its layout.
                unsafe {
                    let block = MiMalloc.alloc(layout);
                    assert!(!block.is_null(), "{size} bytes at {align}");
                    assert_eq!(block as usize % align, 0, "{size} bytes at {align}");
                    block.write_bytes(0xa5, size);
                    let grown = MiMalloc.realloc(block, layout, size * 2 + 24);
                    assert_eq!(grown as usize % align, 0, "grown {size} at {align}");
                    assert!(
                        (0..size).all(|i| *grown.add(i) == 0xa5),
                        "{size} at {align}"
                    );
                    MiMalloc.dealloc(
                        grown,
                        Layout::from_size_align(size * 2 + 24, align).unwrap(),
                    );
                    let zeroed = MiMalloc.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} at {align}");
                    assert!((0..size).all(|i| *zeroed.add(i) == 0), "{size} at {align}");
                    MiMalloc.dealloc(zeroed, layout);
                }
            }
        }
    }

    #[test]
    fn a_plain_block_is_asked_for_only_when_it_is_aligned_enough() {
        assert!(plain(8, 2_264));
        assert!(plain(16, 48));
        assert!(!plain(16, 24), "a 24-byte class is 8-aligned only");
        assert!(!plain(32, 64));
        assert!(
            !plain(128, 1_024),
            "tokio's task cells keep the aligned call"
        );
    }
}
