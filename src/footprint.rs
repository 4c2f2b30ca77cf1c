//! Test builds of the library only: a global allocator that counts, per thread, the
//! heap bytes live, so a unit test can weigh what one integration holds while idle
//! (`actors::integration`'s footprint tests). heaptrack is not on this machine, and
//! RSS at 100,000 integrations is a 10-minute benchmark; this answers in a second.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes this thread allocated minus those it freed.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is passed to `System` unchanged; only a thread-local count is
// kept beside it (a `const` thread-local: touching it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + layout.size() as isize));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + layout.size() as isize));
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + new_size as isize - layout.size() as isize));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Heap bytes this thread holds now (allocated here and not freed since).
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// What `f` leaves on this thread's heap (its result kept alive until measured),
/// and the result.
pub fn heap_of<T>(f: impl FnOnce() -> T) -> (isize, T) {
    let before = live();
    let t = f();
    (live() - before, t)
}
